"""Liveness: the database and Redis, checked on every call."""

from __future__ import annotations

from typing import Any

import redis
from flask import current_app
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.api import bp
from app.api.endpoint import endpoint
from app.api.schemas import HealthOut
from app.extensions import db, redis_client


def check_dependencies() -> dict[str, str]:
    """'ok' or the error for the database and for Redis."""
    checks: dict[str, str] = {}
    try:
        db.session.execute(text("SELECT 1"))
        db.session.rollback()
        checks["database"] = "ok"
    except SQLAlchemyError as exc:
        db.session.rollback()
        checks["database"] = f"down: {type(exc).__name__}"
    try:
        redis_client(current_app.config["REDIS_URL"]).ping()
        checks["redis"] = "ok"
    except redis.RedisError as exc:
        checks["redis"] = f"down: {type(exc).__name__}"
    return checks


@endpoint(
    bp,
    "/health",
    "GET",
    summary="Health of the web process and its dependencies",
    tag="Operations",
    responses={200: HealthOut, 503: HealthOut},
    auth=False,
)
def health() -> tuple[dict[str, Any], int]:
    checks = check_dependencies()
    healthy = all(v == "ok" for v in checks.values())
    return {"status": "ok" if healthy else "degraded", "checks": checks}, 200 if healthy else 503
