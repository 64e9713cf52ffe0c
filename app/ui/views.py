"""Operator pages (placeholder until the console lands)."""

from __future__ import annotations

from app.extensions import db, login_manager
from app.models import User
from app.ui import bp


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id)) if user_id.isdigit() else None


@bp.get("/")
def index() -> str:
    return "AINS"
