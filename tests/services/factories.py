"""Rows made through the services, at an explicit time."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from app.api.schemas import TaskSubmit
from app.extensions import db
from app.models import Agent, Task
from app.services import agents as agent_service
from app.services import dispatch
from app.services.principal import Principal


def task_fields(**overrides: Any) -> dict[str, Any]:
    """A full submit body, defaults filled in as the API would."""
    body = {"task_type": "report", "capability_required": "report-v1", **overrides}
    return TaskSubmit.model_validate(body).model_dump()


def make_task(client: Principal, now: datetime, **overrides: Any) -> Task:
    task, created = dispatch.submit_task(client, task_fields(**overrides), now=now)
    assert created
    return task


def make_agent(
    fleet: Principal,
    now: datetime,
    *,
    capabilities: tuple[str, ...] = ("report-v1",),
    slots: int = 1,
    trust: float | None = None,
) -> Agent:
    """An agent registered (so heartbeating) at ``now``; ``trust`` sets its trust score
    (new agents start at 0.5, and one failure puts them on probation: one task at a time)."""
    agent, _ = agent_service.register_agent(
        fleet,
        display_name="agent",
        public_key=uuid.uuid4().hex,
        capabilities=[{"name": name} for name in capabilities],
        max_concurrent_tasks=slots,
        now=now,
    )
    if trust is not None:
        agent.trust_score = trust
        db.session.commit()
    return agent
