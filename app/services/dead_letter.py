"""The dead-letter view: FAILED tasks, requeued or discarded in bulk.

A task lands here when it ends FAILED (retries exhausted, not retryable, or timed out).
Operators and clients pick tasks by id or by filter and either requeue them (a fresh set
of retries, at the back of their priority) or discard them (they end CANCELLED).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from app.extensions import db
from app.lib.clock import utcnow
from app.models import Role, Task, TaskStatus
from app.services import audit
from app.services.attempts import record_cancellation
from app.services.dispatch import queue_key
from app.services.errors import InvalidInput
from app.services.principal import Principal
from app.services.settings import settings
from app.services.task_search import TaskFilters, filter_conditions

MAX_SELECTION = 500
MAX_PER_CALL = 1000
CHUNK = 200


@dataclass
class BulkResult:
    """What a bulk action did, and what it left."""

    action: str
    done: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    remaining: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "action": self.action,
            "count": len(self.done),
            "task_ids": self.done,
            "skipped": self.skipped,
            "remaining": self.remaining,
        }


def dead_filters(filters: TaskFilters | None) -> TaskFilters:
    """The filters narrowed to the dead-letter view."""
    return replace(filters or TaskFilters(), status=TaskStatus.FAILED)


def requeue(
    principal: Principal,
    *,
    task_ids: Sequence[str] | None = None,
    filters: TaskFilters | None = None,
    limit: int = MAX_PER_CALL,
    now: datetime | None = None,
) -> BulkResult:
    """Send FAILED tasks back to the queue with their retries reset."""
    now = now or utcnow()
    result = BulkResult(action="requeue")

    def requeue_one(task: Task) -> None:
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
            reason="requeued from the dead-letter view",
            data={"last_error": task.error_message},
        )

    apply(principal, result, requeue_one, task_ids=task_ids, filters=filters, limit=limit)
    return result


def discard(
    principal: Principal,
    *,
    task_ids: Sequence[str] | None = None,
    filters: TaskFilters | None = None,
    reason: str | None = None,
    limit: int = MAX_PER_CALL,
    now: datetime | None = None,
) -> BulkResult:
    """Give up on FAILED tasks: they end CANCELLED and leave the dead-letter view."""
    now = now or utcnow()
    result = BulkResult(action="cancel")

    def discard_one(task: Task) -> None:
        task.cancelled_by = principal.actor
        task.cancellation_reason = reason or "discarded from the dead-letter view"
        record_cancellation(task, actor=principal.actor, now=now, reason=task.cancellation_reason)

    apply(principal, result, discard_one, task_ids=task_ids, filters=filters, limit=limit)
    return result


def apply(
    principal: Principal,
    result: BulkResult,
    action: Callable[[Task], None],
    *,
    task_ids: Sequence[str] | None,
    filters: TaskFilters | None,
    limit: int,
) -> None:
    """Run ``action`` on each chosen FAILED task, committing in chunks."""
    principal.require_role(Role.CLIENT)
    if (task_ids is None) == (filters is None):
        raise InvalidInput(
            "give either task_ids or filter, not both and not neither",
            [{"field": "task_ids", "message": "task_ids or filter"}],
        )
    if task_ids is not None:
        apply_to_selection(principal, result, action, list(dict.fromkeys(task_ids)))
        return
    conditions = filter_conditions(principal, dead_filters(filters))
    while len(result.done) < limit:
        batch = list(
            db.session.scalars(
                db.select(Task)
                .where(*conditions)
                .order_by(Task.created_at, Task.id)
                .limit(min(CHUNK, limit - len(result.done)))
                .with_for_update(skip_locked=True)
            )
        )
        if not batch:
            break
        for task in batch:
            action(task)
            result.done.append(task.id)
        db.session.commit()
    result.remaining = db.session.scalar(
        db.select(db.func.count()).select_from(Task).where(*conditions)
    )
    db.session.rollback()


def apply_to_selection(
    principal: Principal, result: BulkResult, action: Callable[[Task], None], task_ids: list[str]
) -> None:
    """The chosen ids: FAILED ones are acted on, others reported as skipped."""
    if len(task_ids) > MAX_SELECTION:
        raise InvalidInput(
            f"at most {MAX_SELECTION} task_ids per call, got {len(task_ids)}",
            [{"field": "task_ids", "message": f"at most {MAX_SELECTION}"}],
        )
    scope = filter_conditions(principal, TaskFilters())
    for start in range(0, len(task_ids), CHUNK):
        chunk = task_ids[start : start + CHUNK]
        found = {
            t.id: t
            for t in db.session.scalars(
                db.select(Task).where(Task.id.in_(chunk), *scope).with_for_update()
            )
        }
        for task_id in chunk:
            task = found.get(task_id)
            if task is None:
                result.skipped.append({"task_id": task_id, "reason": "not found"})
            elif task.status != TaskStatus.FAILED:
                result.skipped.append(
                    {"task_id": task_id, "reason": f"is {task.status}, not FAILED"}
                )
            else:
                action(task)
                result.done.append(task_id)
        db.session.commit()
