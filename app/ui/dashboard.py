"""The dashboard: a summary region that refreshes itself."""

from __future__ import annotations

from flask import Response
from flask_login import login_required

from app.lib.clock import utcnow
from app.services import dashboard as figures
from app.ui import bp
from app.ui.htmx import render_region

REFRESH_SECONDS = 5


@bp.get("/")
@login_required
def dashboard() -> Response:
    summary = figures.summarise(utcnow())
    return render_region(
        "ui/dashboard/index.html",
        "ui/dashboard/_summary.html",
        summary=summary,
        refresh_seconds=REFRESH_SECONDS,
    )
