"""Liveness (/health: the database and Redis) and readiness (/health/ready: also the
migrations at head, an RQ worker on each queue and the clock seen lately)."""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

import redis
from flask import current_app
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app import webhook_queue_name
from app.api import bp
from app.api.endpoint import endpoint
from app.api.schemas import HealthOut
from app.config import BASE_DIR
from app.extensions import db, redis_client
from app.lib.clock import utcnow
from app.models import ProcessBeat


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


@functools.cache
def head_revision(directory: str = str(BASE_DIR / "migrations")) -> str | None:
    """The newest migration script's revision (read once per process)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(directory).get_current_head()


def check_migrations() -> str:
    try:
        current = db.session.scalars(text("SELECT version_num FROM alembic_version")).all()
    except SQLAlchemyError as exc:  # no such table: never migrated
        db.session.rollback()
        return f"not migrated: alembic_version unreadable ({type(exc).__name__})"
    db.session.rollback()
    head = head_revision()
    if current == [head]:
        return "ok"
    return f"not at head: database at {', '.join(current) or 'nothing'}, code at {head}"


def check_clock(max_silence: timedelta) -> str:
    beat = db.session.get(ProcessBeat, "clock")
    db.session.rollback()
    if beat is None:
        return "never seen"
    silence = utcnow() - beat.last_seen
    if silence > max_silence:
        return f"last seen {int(silence.total_seconds())}s ago"
    return "ok"


def check_workers(max_silence: timedelta) -> str:
    """A worker listens on each queue and has refreshed its RQ registry entry lately."""
    from rq import Queue, Worker

    connection = redis_client(current_app.config["REDIS_URL"])
    cutoff = utcnow() - max_silence
    idle = []
    for name in (current_app.config["RQ_QUEUE"], webhook_queue_name(current_app.config)):
        workers = Worker.all(queue=Queue(name, connection=connection))
        if not any(w.last_heartbeat and w.last_heartbeat >= cutoff for w in workers):
            idle.append(name)
    if idle:
        return f"no worker seen on queue {', '.join(idle)}"
    return "ok"


def check_readiness() -> dict[str, str]:
    """Every check 'ok', or what is wrong with it; those that cannot run say why."""
    checks = check_dependencies()
    max_silence = timedelta(seconds=current_app.config["READY_MAX_SILENCE_SECONDS"])
    if checks["database"] == "ok":
        try:
            checks["migrations"] = check_migrations()
            checks["clock"] = check_clock(max_silence)
        except SQLAlchemyError as exc:  # the database went away between the checks
            db.session.rollback()
            checks.setdefault("migrations", f"unknown: {type(exc).__name__}")
            checks.setdefault("clock", f"unknown: {type(exc).__name__}")
    else:
        checks["migrations"] = checks["clock"] = "unknown: database down"
    if checks["redis"] == "ok":
        try:
            checks["worker"] = check_workers(max_silence)
        except redis.RedisError as exc:
            checks["worker"] = f"unknown: {type(exc).__name__}"
    else:
        checks["worker"] = "unknown: redis down"
    return checks


@endpoint(
    bp,
    "/health/ready",
    "GET",
    summary="Readiness: dependencies, migrations at head, a worker and the clock running",
    tag="Operations",
    responses={200: HealthOut, 503: HealthOut},
    auth=False,
)
def health_ready() -> tuple[dict[str, Any], int]:
    checks = check_readiness()
    ready = all(v == "ok" for v in checks.values())
    return {"status": "ok" if ready else "degraded", "checks": checks}, 200 if ready else 503
