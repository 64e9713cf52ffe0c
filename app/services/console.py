"""What the operator console reads and does beyond the plain services.

A task's whole story in one read (events, attempts, where a cancel stands), the
dead-letter list with the number of tasks its filter matches, and the bulk actions of that
view behind one name, so the UI's handlers stay one call each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.extensions import db
from app.lib.clock import as_utc
from app.models import Task, TaskAttempt, TaskEvent
from app.services import dead_letter, task_search
from app.services.cancellation import is_cancel_pending
from app.services.errors import InvalidInput
from app.services.principal import Principal
from app.services.settings import settings
from app.services.task_search import TaskFilters

BULK_ACTIONS = ("requeue", "cancel")


@dataclass(frozen=True)
class TaskStory:
    """One task with its history, its attempts and the state of a cancel request."""

    task: Task
    events: list[TaskEvent]
    attempts: list[TaskAttempt]

    @property
    def cancel_pending(self) -> bool:
        """Asked to stop; the agent has not confirmed yet."""
        return is_cancel_pending(self.task)

    @property
    def cancel_forced_at(self) -> datetime | None:
        """When the sweep ends a pending cancel without the agent's word."""
        if not self.cancel_pending or self.task.cancel_requested_at is None:
            return None
        requested = as_utc(self.task.cancel_requested_at)
        assert requested is not None
        return requested + timedelta(seconds=settings.cancel_grace_seconds)


@dataclass(frozen=True)
class DeadLetterPage:
    """A keyset page of FAILED tasks and how many FAILED tasks the filter matches."""

    tasks: list[Task]
    next_cursor: str | None
    matching: int


def task_story(principal: Principal, task_id: str) -> TaskStory:
    """The task (404 for one the principal may not see), its events and attempts."""
    task, events = task_search.task_with_events(principal, task_id)
    return TaskStory(task=task, events=events, attempts=task_search.task_attempts(task.id))


def count_dead_letters(principal: Principal, filters: TaskFilters | None = None) -> int:
    """FAILED tasks the principal may see that match ``filters``."""
    conditions = task_search.filter_conditions(principal, dead_letter.dead_filters(filters))
    return db.session.scalar(db.select(db.func.count()).select_from(Task).where(*conditions)) or 0


def dead_letter_page(
    principal: Principal, filters: TaskFilters, *, limit: int, cursor: str | None = None
) -> DeadLetterPage:
    """Newest FAILED tasks first, ``limit`` at a time, with the filter's total."""
    narrowed = dead_letter.dead_filters(filters)
    page = task_search.list_tasks(principal, narrowed, limit=limit, cursor=cursor)
    return DeadLetterPage(
        tasks=page.tasks,
        next_cursor=page.next_cursor,
        matching=count_dead_letters(principal, filters),
    )


def dead_letter_action(
    principal: Principal,
    action: str,
    *,
    task_ids: Sequence[str] | None = None,
    filters: TaskFilters | None = None,
    limit: int = dead_letter.MAX_PER_CALL,
    reason: str | None = None,
    as_of: datetime | None = None,
) -> dead_letter.BulkResult:
    """Requeue or cancel (discard) FAILED tasks, chosen by id or by filter (by filter: only
    those created at or before ``as_of``, when given)."""
    if action == "requeue":
        return dead_letter.requeue(
            principal, task_ids=task_ids, filters=filters, limit=limit, as_of=as_of
        )
    if action == "cancel":
        return dead_letter.discard(
            principal, task_ids=task_ids, filters=filters, limit=limit, reason=reason, as_of=as_of
        )
    raise InvalidInput(
        f"action must be one of {', '.join(BULK_ACTIONS)}, got {action!r}",
        [{"field": "action", "message": "requeue or cancel"}],
    )
