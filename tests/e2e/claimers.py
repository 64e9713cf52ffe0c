"""Claim loops run in threads or separate processes by the exactly-once tests.

Each loop behaves as a real agent: it registers, heartbeats when the server says the next
one is due, claims and completes. The heartbeats matter: routing only hands tasks to agents
heard from within the lease, so a loop that outlives the lease without them (a slow
machine) would leave the rest of the queue unassigned for good.
"""

from __future__ import annotations

import time
import uuid

from sqlalchemy import func

from app.extensions import db
from app.lib.clock import utcnow
from app.models import Agent, Capability, Task, TaskStatus
from app.services import agents, dispatch, reports
from app.services.auth import create_api_key
from app.services.principal import Principal
from app.services.settings import settings


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


def heartbeat(principal: Principal, agent_id: str, started: float) -> float:
    """Report the agent healthy; return the monotonic time the next heartbeat is due."""
    reply = agents.record_heartbeat(
        principal,
        agent_id,
        health_status="ACTIVE",
        uptime_ms=int((time.monotonic() - started) * 1000),
        metrics={},
        interval_seconds=settings.heartbeat_interval_seconds,
    )
    return time.monotonic() + reply["next_heartbeat_in"]


def open_tasks(capability: str) -> int:
    count = db.session.scalar(
        db.select(func.count())
        .select_from(Task)
        .where(Task.capability_required == capability, Task.status.not_in(TaskStatus.TERMINAL))
    )
    db.session.rollback()
    return int(count or 0)


def open_spread(capability: str) -> str:
    """Why tasks are still open: how they spread over statuses and agents, and the state of
    the agents routing could give them to (status, heartbeat age, slot counter)."""
    now = utcnow()
    rows = db.session.execute(
        db.select(Task.status, Task.assigned_agent_id, func.count())
        .where(Task.capability_required == capability, Task.status.not_in(TaskStatus.TERMINAL))
        .group_by(Task.status, Task.assigned_agent_id)
    ).all()
    fleet = db.session.execute(
        db.select(Agent.id, Agent.status, Agent.active_tasks, Agent.last_heartbeat)
        .join(Capability, Capability.agent_id == Agent.id)
        .where(Capability.name == capability)
    ).all()
    db.session.rollback()
    statuses: dict[str, list[int]] = {}  # status -> [tasks, unassigned, agents holding some]
    running: dict[str, int] = {}
    for status, agent_id, n in rows:
        counts = statuses.setdefault(status, [0, 0, 0])
        counts[0] += n
        if agent_id is None:
            counts[1] += n
            continue
        counts[2] += 1
        if status == TaskStatus.ACTIVE:
            running[agent_id] = n
    tasks = ", ".join(
        f"{status} {n} ({unassigned} unassigned, {holders} agents)"
        for status, (n, unassigned, holders) in sorted(statuses.items())
    )
    by_status: dict[str, int] = {}
    for agent in fleet:
        by_status[agent.status] = by_status.get(agent.status, 0) + 1
    ages = [(now - a.last_heartbeat).total_seconds() for a in fleet if a.last_heartbeat]
    drifted = [
        f"{a.id} counts {a.active_tasks}, runs {running.get(a.id, 0)}"
        for a in fleet
        if a.active_tasks != running.get(a.id, 0)
    ]
    return (
        f"open: {tasks or 'none'}; agents: {by_status}, last heartbeat "
        f"{min(ages, default=0):.0f}-{max(ages, default=0):.0f}s ago "
        f"(lease {settings.lease_seconds}s); active_tasks counters off: {drifted or 'none'}"
    )


def drain(capability: str, batch: int, deadline_seconds: float = 240.0) -> list[str]:
    """Claim and complete until no task of the capability is open; return every task id
    this loop claimed.

    Every loop keeps claiming until the whole queue is done, not just until it sees nothing
    for itself: routing may assign a task to any of the claimers at any time, and only
    that claimer can take it.
    """
    started = time.monotonic()
    principal, agent_id = register(capability, batch)
    next_heartbeat = heartbeat(principal, agent_id, started)
    claimed: list[str] = []
    deadline = started + deadline_seconds
    while True:
        if time.monotonic() >= next_heartbeat:
            next_heartbeat = heartbeat(principal, agent_id, started)
        tasks = dispatch.claim_tasks(principal, agent_id, batch)
        if not tasks:
            if open_tasks(capability) == 0:
                break
            assert time.monotonic() < deadline, (
                f"{open_tasks(capability)} tasks still open after {deadline_seconds:.0f}s; "
                + open_spread(capability)
            )
            time.sleep(0.01)
            continue
        ids = [t.id for t in tasks]
        claimed.extend(ids)
        for task_id in ids:
            reports.complete_task(principal, task_id, {"by": agent_id})
    db.session.remove()
    return claimed


def drain_in_process(
    database_url: str, redis_url: str, capability: str, batch: int, heartbeat_seconds: int
) -> list[str]:
    """Entry point for a spawned process: its own app, engine and connections, and the
    parent's heartbeat interval."""
    import os

    os.environ["TEST_DATABASE_URL"] = database_url
    os.environ["TEST_REDIS_URL"] = redis_url
    from app import create_app
    from app.config import TestConfig

    app = create_app(TestConfig)
    settings.heartbeat_interval_seconds = heartbeat_seconds
    with app.app_context():
        return drain(capability, batch)
