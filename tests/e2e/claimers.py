"""Claim loops run in threads or separate processes by the exactly-once tests."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import func

from app.extensions import db
from app.models import Task, TaskStatus
from app.services import agents, dispatch, reports
from app.services.auth import create_api_key
from app.services.principal import Principal


def register(capability: str, slots: int) -> tuple[Principal, str]:
    """A fresh agent with its own bound key (inside an app context)."""
    key, _ = create_api_key(name="fleet", role="agent")
    fleet = Principal(role="agent", name="fleet", key_id=key.id)
    agent, _ = agents.register_agent(
        fleet,
        display_name="claimer",
        public_key=uuid.uuid4().hex,
        capabilities=[{"name": capability}],
        max_concurrent_tasks=slots,
    )
    return Principal(role="agent", name="claimer", key_id=None, agent_id=agent.id), agent.id


def open_tasks(capability: str) -> int:
    count = db.session.scalar(
        db.select(func.count())
        .select_from(Task)
        .where(Task.capability_required == capability, Task.status.not_in(TaskStatus.TERMINAL))
    )
    db.session.rollback()
    return int(count or 0)


def drain(capability: str, batch: int, deadline_seconds: float = 240.0) -> list[str]:
    """Claim and complete until no task of the capability is open; return every task id
    this loop claimed.

    Every loop keeps claiming until the whole queue is done, not just until it sees nothing
    for itself: routing may assign a task to any of the claimers at any time, and only
    that claimer can take it.
    """
    principal, agent_id = register(capability, batch)
    claimed: list[str] = []
    deadline = time.monotonic() + deadline_seconds
    while True:
        tasks = dispatch.claim_tasks(principal, agent_id, batch)
        if not tasks:
            if open_tasks(capability) == 0:
                break
            assert time.monotonic() < deadline, f"{open_tasks(capability)} tasks still open"
            time.sleep(0.01)
            continue
        ids = [t.id for t in tasks]
        claimed.extend(ids)
        for task_id in ids:
            reports.complete_task(principal, task_id, {"by": agent_id})
    db.session.remove()
    return claimed


def drain_in_process(database_url: str, redis_url: str, capability: str, batch: int) -> list[str]:
    """Entry point for a spawned process: its own app, engine and connections."""
    import os

    os.environ["TEST_DATABASE_URL"] = database_url
    os.environ["TEST_REDIS_URL"] = redis_url
    from app import create_app
    from app.config import TestConfig

    app = create_app(TestConfig)
    with app.app_context():
        return drain(capability, batch)
