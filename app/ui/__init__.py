"""Operator console: Flask-Login, CSRF, HTMX."""

from flask import Blueprint

bp = Blueprint("ui", __name__)

# Routes, error pages and template filters register on bp when their modules load.
from app.ui import (  # noqa: E402,F401
    agents,
    api_keys,
    audit,
    auth,
    chains,
    dashboard,
    dead_letter,
    errors,
    formatting,
    routing,
    schedules,
    task_bulk,
    task_templates,
    tasks,
    users,
    webhooks,
)
from app.ui.access import check_access, may, refuse_nul  # noqa: E402

bp.before_request(refuse_nul)  # first: before anything queries with the input
bp.before_request(check_access)
bp.add_app_template_global(may, "may")
