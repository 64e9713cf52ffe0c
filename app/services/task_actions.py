"""The tasks list's bulk actions: cancel, requeue or reprioritise a selection or a filter.

Each action is a ``bulk.Rule`` over the same domain steps as the single-task actions
(cancellation.cancel_locked, dead_letter.requeue_task, dispatch.apply_priority), so every
change writes its task event. Tasks an action cannot apply to are skipped with a reason:
a finished task cannot be cancelled or reprioritised, a running one already asked to stop
is not asked again, only a FAILED task can be requeued, and a task already at the chosen
priority is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement

from app.lib.clock import utcnow
from app.models import Task, TaskStatus
from app.services import audit, bulk, dead_letter
from app.services.cancellation import cancel_locked
from app.services.dispatch import apply_priority
from app.services.errors import InvalidInput
from app.services.principal import Principal
from app.services.task_search import TaskFilters

ACTIONS = ("cancel", "requeue", "priority")
# A filter run acts on at most this many tasks (bulk.CHUNK per transaction); the result
# says how many are left for another run.
MAX_PER_RUN = 5000


def unfinished() -> list[ColumnElement[bool]]:
    return [Task.status.not_in(TaskStatus.TERMINAL)]


def not_cancellable(task: Any) -> str | None:
    if task.status in TaskStatus.TERMINAL:
        return f"is already {task.status}"
    if task.cancel_requested_at is not None:
        return "already asked to stop"
    return None


def rule(
    principal: Principal,
    action: str,
    *,
    priority: int | None = None,
    reason: str | None = None,
    now: datetime | None = None,
) -> bulk.Rule:
    """The rule of ``action`` ("cancel", "requeue" or "priority" with ``priority``)."""
    now = now or utcnow()
    if action == "cancel":

        def cancel_one(task: Task) -> None:
            audit.track(task, "task", fields=("status", "cancel_requested_at"))
            cancel_locked(principal, task, reason, now=now)

        return bulk.Rule(
            action="cancel",
            applies=lambda: [*unfinished(), Task.cancel_requested_at.is_(None)],
            why_not=not_cancellable,
            act=cancel_one,
        )
    if action == "requeue":
        return bulk.Rule(
            action="requeue",
            applies=dead_letter.failed_only,
            why_not=dead_letter.not_failed,
            act=lambda task: dead_letter.requeue_task(
                principal, task, now=now, reason="requeued from the tasks list"
            ),
        )
    if action == "priority":
        if priority is None or not 1 <= priority <= 10:
            raise InvalidInput(
                f"priority must be 1 to 10, got {priority!r}",
                [{"field": "priority", "message": "1 to 10"}],
            )
        new = priority

        def why_not(task: Any) -> str | None:
            if task.status in TaskStatus.TERMINAL:
                return f"is already {task.status}"
            if task.priority == new:
                return f"is already at priority {new}"
            return None

        def reprioritise(task: Task) -> None:
            audit.track(task, "task", fields=("priority",))
            apply_priority(principal, task, new, now=now)

        return bulk.Rule(
            action="priority",
            applies=lambda: [*unfinished(), Task.priority != new],
            why_not=why_not,
            act=reprioritise,
        )
    raise InvalidInput(
        f"action must be one of {', '.join(ACTIONS)}, got {action!r}",
        [{"field": "action", "message": " or ".join(ACTIONS)}],
    )


def preview(
    principal: Principal,
    action: str,
    *,
    task_ids: Sequence[str] | None = None,
    filters: TaskFilters | None = None,
    priority: int | None = None,
) -> bulk.Preview:
    """How many tasks ``action`` would change now, and how many it would skip, why."""
    chosen = rule(principal, action, priority=priority)
    return bulk.preview(principal, chosen, task_ids=task_ids, filters=filters)


def apply(
    principal: Principal,
    action: str,
    *,
    task_ids: Sequence[str] | None = None,
    filters: TaskFilters | None = None,
    priority: int | None = None,
    reason: str | None = None,
    limit: int = MAX_PER_RUN,
    now: datetime | None = None,
    as_of: datetime | None = None,
) -> bulk.BulkResult:
    """Run ``action`` on the chosen ids, or on at most ``limit`` tasks the filter matches
    (never more than MAX_PER_RUN; with ``as_of``, only those created by then), committing
    every bulk.CHUNK tasks."""
    now = now or utcnow()
    chosen = rule(principal, action, priority=priority, reason=reason, now=now)
    stopping: list[str] = []
    if action == "cancel":
        cancel = chosen.act

        def cancel_and_note(task: Task) -> None:
            cancel(task)
            if task.status == TaskStatus.ACTIVE:
                stopping.append(task.id)

        chosen = replace(chosen, act=cancel_and_note)
    try:
        result = bulk.run(
            principal,
            chosen,
            task_ids=task_ids,
            filters=filters,
            limit=max(0, min(limit, MAX_PER_RUN)),
            as_of=as_of,
        )
    except bulk.BulkInterrupted as exc:
        done = set(exc.result.done)
        exc.result.stopping = [t for t in stopping if t in done]
        raise
    result.stopping = stopping
    return result
