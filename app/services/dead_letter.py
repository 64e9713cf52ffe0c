"""The dead-letter view: FAILED tasks, requeued or discarded in bulk.

A task lands here when it ends FAILED (retries exhausted, not retryable, or timed out).
Operators and clients pick tasks by id or by filter and either requeue them (a fresh set
of retries, at the back of their priority) or discard them (they end CANCELLED).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement

from app.lib.clock import utcnow
from app.models import Task, TaskStatus
from app.services import audit, bulk
from app.services.attempts import record_cancellation
from app.services.bulk import BulkResult as BulkResult
from app.services.dispatch import queue_key
from app.services.principal import Principal
from app.services.settings import settings
from app.services.task_search import TaskFilters

__all__ = ["BulkResult", "dead_filters", "discard", "not_failed", "requeue", "requeue_task"]

MAX_SELECTION = bulk.MAX_SELECTION
MAX_PER_CALL = 1000
CHUNK = 200


def dead_filters(filters: TaskFilters | None) -> TaskFilters:
    """The filters narrowed to the dead-letter view."""
    return replace(filters or TaskFilters(), status=TaskStatus.FAILED)


def not_failed(task: Any) -> str | None:
    """Why a task cannot be requeued (only FAILED ones can), or None."""
    status = task.status
    return None if status == TaskStatus.FAILED else f"is {status}, not FAILED"


def requeue_task(
    principal: Principal,
    task: Task,
    *,
    now: datetime,
    reason: str = "requeued from the dead-letter view",
) -> None:
    """Send one locked FAILED task back to the queue with its retries reset (no commit)."""
    audit.note(
        target_type="task",
        target_id=task.id,
        before={"status": task.status, "retry_count": task.retry_count},
        after={"status": TaskStatus.PENDING, "retry_count": 0},
    )
    task.retry_count = 0
    task.next_retry_at = None
    task.completed_at = None
    task.assigned_agent_id = None
    task.enqueued_at = now
    task.queue_key = queue_key(task.priority, now, settings.aging_seconds_per_level)
    if task.expires_at is not None and task.expires_at <= now:
        # An expiry that passed while the task sat here would end it EXPIRED at once
        # and make the requeue a silent no-op: the operator's decision overrides it.
        task.expires_at = None
    task.transition(
        TaskStatus.PENDING,
        actor=principal.actor,
        now=now,
        reason=reason,
        data={"last_error": task.error_message},
    )


def failed_only() -> list[ColumnElement[bool]]:
    return [Task.status == TaskStatus.FAILED]


def requeue(
    principal: Principal,
    *,
    task_ids: Sequence[str] | None = None,
    filters: TaskFilters | None = None,
    limit: int = MAX_PER_CALL,
    now: datetime | None = None,
    as_of: datetime | None = None,
) -> BulkResult:
    """Send FAILED tasks back to the queue with their retries reset (by filter: only those
    created at or before ``as_of``, when given)."""
    now = now or utcnow()
    rule = bulk.Rule(
        action="requeue",
        applies=failed_only,
        why_not=not_failed,
        act=lambda task: requeue_task(principal, task, now=now),
    )
    return bulk.run(
        principal,
        rule,
        task_ids=task_ids,
        filters=None if filters is None else dead_filters(filters),
        limit=limit,
        chunk=CHUNK,
        as_of=as_of,
    )


def discard(
    principal: Principal,
    *,
    task_ids: Sequence[str] | None = None,
    filters: TaskFilters | None = None,
    reason: str | None = None,
    limit: int = MAX_PER_CALL,
    now: datetime | None = None,
    as_of: datetime | None = None,
) -> BulkResult:
    """Give up on FAILED tasks: they end CANCELLED and leave the dead-letter view."""
    now = now or utcnow()

    def discard_one(task: Task) -> None:
        task.cancelled_by = principal.actor
        task.cancellation_reason = reason or "discarded from the dead-letter view"
        record_cancellation(task, actor=principal.actor, now=now, reason=task.cancellation_reason)

    rule = bulk.Rule(action="cancel", applies=failed_only, why_not=not_failed, act=discard_one)
    return bulk.run(
        principal,
        rule,
        task_ids=task_ids,
        filters=None if filters is None else dead_filters(filters),
        limit=limit,
        chunk=CHUNK,
        as_of=as_of,
    )
