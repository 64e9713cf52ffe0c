"""Cancel a task in any state.

A waiting task (PENDING, ASSIGNED, BLOCKED, or PENDING for a retry) ends CANCELLED at
once. A running one is marked cancel-requested: its agent learns it from the next
heartbeat, claim or progress response, stops, and confirms with a fail report; without
that word the clock's sweep ends it CANCELLED after the grace period, and any later
report from that attempt is refused.
"""

from __future__ import annotations

from datetime import datetime

from app.extensions import db
from app.lib.clock import utcnow
from app.models import Role, Task, TaskStatus
from app.services import audit
from app.services.attempts import record_cancellation
from app.services.dispatch import visible_task
from app.services.errors import Conflict
from app.services.principal import Principal


def cancel_task(
    principal: Principal, task_id: str, reason: str | None, *, now: datetime | None = None
) -> Task:
    """Cancel the task now, or ask its agent to stop; repeating a request changes nothing."""
    now = now or utcnow()
    principal.require_role(Role.CLIENT)
    task = visible_task(principal, task_id, lock=True)
    audit.track(task, "task", fields=("status", "cancel_requested_at", "cancellation_reason"))
    if task.is_terminal:
        status = task.status
        db.session.rollback()
        raise Conflict(f"task {task_id!r} is already {status}")
    if task.cancel_requested_at is not None:
        db.session.rollback()
        return task
    cancel_locked(principal, task, reason, now=now)
    db.session.commit()
    return task


def cancel_locked(principal: Principal, task: Task, reason: str | None, *, now: datetime) -> None:
    """Cancel one locked, unfinished task not yet asked to stop, without committing: a
    waiting one ends CANCELLED, a running one is asked to stop."""
    task.cancelled_by = principal.actor
    task.cancellation_reason = reason
    if task.status == TaskStatus.ACTIVE:
        task.cancel_requested_at = now
        task.transition(
            TaskStatus.ACTIVE,
            actor=principal.actor,
            now=now,
            reason=f"cancel requested: {reason}" if reason else "cancel requested",
            data={"attempt": task.attempt, "agent_id": task.assigned_agent_id},
        )
    else:
        record_cancellation(task, actor=principal.actor, now=now, reason=reason or "cancelled")


def is_cancel_pending(task: Task) -> bool:
    """Asked to stop, waiting for the agent (or the grace period)."""
    return task.status == TaskStatus.ACTIVE and task.cancel_requested_at is not None
