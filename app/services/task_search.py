"""Reading tasks: filtered keyset pages, one task with its history, queue figures."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_

from app.extensions import db
from app.lib.clock import as_utc, utcnow
from app.lib.cursors import BadCursor, decode_cursor, encode_cursor
from app.models import Agent, Role, Task, TaskAttempt, TaskEvent, TaskStatus
from app.services.dispatch import visible_task
from app.services.errors import InvalidInput
from app.services.principal import Principal


@dataclass
class TaskFilters:
    """What a task list may be narrowed by."""

    status: str | None = None
    client_id: str | None = None
    capability: str | None = None
    agent_id: str | None = None
    priority: int | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass
class TaskPage:
    tasks: list[Task]
    next_cursor: str | None


def scope_for(principal: Principal) -> list[ColumnElement[bool]]:
    """The rows a principal may list."""
    if principal.is_admin:
        return []
    if principal.role == Role.CLIENT:
        return [Task.client_id == principal.client_id]
    if principal.agent_id is not None:
        return [Task.assigned_agent_id == principal.agent_id]
    owned = db.select(Agent.id).where(Agent.registered_by_key_id == principal.key_id)
    return [Task.assigned_agent_id.in_(owned)]


def list_tasks(
    principal: Principal, filters: TaskFilters, *, limit: int = 50, cursor: str | None = None
) -> TaskPage:
    """Newest first, ``limit`` at a time, continuing after ``cursor``."""
    conditions = filter_conditions(principal, filters)
    if cursor:
        try:
            created_at, task_id = decode_cursor(cursor)
        except BadCursor as exc:
            raise InvalidInput(
                str(exc), [{"field": "cursor", "message": "not a valid cursor"}]
            ) from None
        created_at = as_utc(created_at)
        conditions.append(
            or_(
                Task.created_at < created_at, and_(Task.created_at == created_at, Task.id < task_id)
            )
        )
    query = (
        db.select(Task)
        .where(*conditions)
        .order_by(Task.created_at.desc(), Task.id.desc())
        .limit(limit + 1)
    )
    rows = list(db.session.scalars(query))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id)
    return TaskPage(tasks=rows, next_cursor=next_cursor)


def filter_conditions(principal: Principal, filters: TaskFilters) -> list[ColumnElement[bool]]:
    """The principal's scope narrowed by the filters."""
    conditions = scope_for(principal)
    if filters.status:
        conditions.append(Task.status == filters.status)
    if filters.client_id:
        conditions.append(Task.client_id == filters.client_id)
    if filters.capability:
        conditions.append(Task.capability_required == filters.capability)
    if filters.agent_id:
        conditions.append(Task.assigned_agent_id == filters.agent_id)
    if filters.priority is not None:
        conditions.append(Task.priority == filters.priority)
    if filters.created_after:
        conditions.append(Task.created_at >= as_utc(filters.created_after))
    if filters.created_before:
        conditions.append(Task.created_at < as_utc(filters.created_before))
    return conditions


def task_with_events(principal: Principal, task_id: str) -> tuple[Task, list[TaskEvent]]:
    """One task and its full history, oldest event first."""
    task = visible_task(principal, task_id)
    events = list(
        db.session.scalars(
            db.select(TaskEvent).where(TaskEvent.task_id == task.id).order_by(TaskEvent.id)
        )
    )
    return task, events


def task_attempts(task_id: str) -> list[TaskAttempt]:
    """Every attempt of a task, first first."""
    return list(
        db.session.scalars(
            db.select(TaskAttempt)
            .where(TaskAttempt.task_id == task_id)
            .order_by(TaskAttempt.number)
        )
    )


def epoch_seconds(column: Any) -> Any:
    """Seconds since the epoch of a timestamp column, in the database's dialect."""
    if db.session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", column)
    return (func.julianday(column) - 2440587.5) * 86400.0


def queue_metrics(principal: Principal, now: datetime | None = None) -> dict[str, Any]:
    """Seed 004's queue figures, keyed by priority, plus counts by status."""
    now = now or utcnow()
    scope = scope_for(principal)
    open_statuses = (TaskStatus.PENDING, TaskStatus.ASSIGNED, TaskStatus.ACTIVE, TaskStatus.BLOCKED)
    by_priority = db.session.execute(
        db.select(Task.priority, func.count())
        .where(*scope, Task.status.in_(open_statuses))
        .group_by(Task.priority)
    ).all()
    waiting = db.session.execute(
        db.select(Task.priority, func.count(), func.avg(epoch_seconds(Task.enqueued_at)))
        .where(*scope, Task.status == TaskStatus.PENDING)
        .group_by(Task.priority)
    ).all()
    by_status = db.session.execute(
        db.select(Task.status, func.count()).where(*scope).group_by(Task.status)
    ).all()
    now_epoch = now.timestamp()
    return {
        "tasks_by_priority": {str(p): n for p, n in sorted(by_priority, reverse=True)},
        "queue_depth_by_priority": {str(p): n for p, n, _ in sorted(waiting, reverse=True)},
        "avg_wait_time_by_priority": {
            str(p): round(max(0.0, now_epoch - float(avg)), 3)
            for p, _, avg in sorted(waiting, reverse=True)
            if avg is not None
        },
        "tasks_by_status": {status: n for status, n in sorted(by_status)},
        "generated_at": now.isoformat(),
    }
