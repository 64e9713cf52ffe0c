"""Background upkeep of the task lifecycle: timeouts, silent agents, due retries."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update

from app.extensions import db
from app.lib.clock import utcnow
from app.models import Agent, AgentStatus, ProcessBeat, Task, TaskStatus
from app.services.dispatch import record_failure
from app.services.settings import settings
from app.services.wakeups import wakeups

SWEEP_BATCH = 500


def sweep(now: datetime | None = None) -> dict[str, int]:
    """One maintenance pass; safe to run concurrently and repeatedly."""
    now = now or utcnow()
    return {
        "timed_out": time_out_tasks(now),
        "agents_lost": retire_silent_agents(now),
        "retries_due": wake_due_retries(now),
    }


def time_out_tasks(now: datetime) -> int:
    """ACTIVE tasks past their deadline end FAILED, not retried (seed 004, sprint 4.6)."""
    # SKIP LOCKED: a task being reported on right now is left to that report.
    tasks = list(
        db.session.scalars(
            db.select(Task)
            .where(Task.status == TaskStatus.ACTIVE, Task.lease_expires_at < now)
            .limit(SWEEP_BATCH)
            .with_for_update(skip_locked=True)
        )
    )
    for task in tasks:
        record_failure(
            task,
            f"Task timed out after {task.timeout_seconds} seconds",
            retryable=False,
            actor="system:timeout",
            now=now,
        )
    db.session.commit()
    return len(tasks)


def retire_silent_agents(now: datetime) -> int:
    """Agents that missed their heartbeats go INACTIVE; their running tasks fail an attempt."""
    silence = timedelta(
        seconds=settings.heartbeat_interval_seconds * settings.heartbeat_misses_allowed
    )
    # An agent that said OFFLINE is INACTIVE already, but its running tasks must come back too.
    running = (
        db.select(Task.id)
        .where(Task.assigned_agent_id == Agent.id, Task.status == TaskStatus.ACTIVE)
        .exists()
    )
    stale = (Agent.last_heartbeat < now - silence) & (
        (Agent.status != AgentStatus.INACTIVE) | running
    )
    stale_ids = list(db.session.scalars(db.select(Agent.id).where(stale)))
    retired = 0
    for agent_id in stale_ids:
        # Conditional update: a heartbeat that lands meanwhile keeps the agent alive.
        changed = db.session.execute(
            update(Agent)
            .where(Agent.id == agent_id, stale)
            .values(status=AgentStatus.INACTIVE, updated_at=now)
        ).rowcount
        if changed != 1:
            db.session.rollback()
            continue
        tasks = db.session.scalars(
            db.select(Task)
            .where(Task.assigned_agent_id == agent_id, Task.status == TaskStatus.ACTIVE)
            .with_for_update()
        )
        for task in tasks:
            record_failure(
                task, "agent lost: no heartbeat", retryable=True, actor="system:heartbeat", now=now
            )
        db.session.commit()
        retired += 1
    return retired


def wake_due_retries(now: datetime, window_seconds: float = 2.0) -> int:
    """Nudge long-polling agents when a retry delay has just ended."""
    capabilities = set(
        db.session.scalars(
            db.select(Task.capability_required)
            .where(
                Task.next_retry_at > now - timedelta(seconds=window_seconds),
                Task.next_retry_at <= now,
                Task.status == TaskStatus.PENDING,
            )
            .distinct()
        )
    )
    db.session.rollback()
    wakeups.notify(capabilities)
    return len(capabilities)


def record_process_beat(name: str, info: dict[str, Any], now: datetime | None = None) -> None:
    """Note that a background process is alive (read by /health/ready and the UI)."""
    now = now or utcnow()
    beat = db.session.get(ProcessBeat, name)
    if beat is None:
        db.session.add(ProcessBeat(name=name, last_seen=now, info=info))
    else:
        beat.last_seen = now
        beat.info = info
    db.session.commit()
