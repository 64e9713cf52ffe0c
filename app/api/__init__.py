"""JSON API for agents and clients: token auth, one error shape, pydantic models."""

from flask import Blueprint

bp = Blueprint("api", __name__)

from app.api import agents, chains, docs, health, routing, schedules, tasks, templates, webhooks  # noqa: E402,F401  (routes register on bp)
