"""JSON API for agents and clients: token auth, one error shape, pydantic models."""

from flask import Blueprint

bp = Blueprint("api", __name__)

# Routes register on bp when their modules load.
from app.api import (  # noqa: E402,F401
    agents,
    api_keys,
    audit,
    chains,
    docs,
    health,
    routing,
    schedules,
    tasks,
    templates,
    webhooks,
)
