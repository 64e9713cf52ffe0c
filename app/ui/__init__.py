"""Operator console: Flask-Login, CSRF, HTMX."""

from flask import Blueprint

bp = Blueprint("ui", __name__)

from app.ui import views  # noqa: E402,F401  (routes register on bp)
