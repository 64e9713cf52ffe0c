"""Reading tasks: filtered keyset pages, one task with its history, queue figures.

Text search (``TaskFilters.text``) looks for a substring of a task's input, result and
error. It examines a bounded window, the newest ``SEARCH_WINDOW`` tasks that match the
other filters, so it costs the same on a thousand tasks or ten million, needs no database
extension and works alike on SQLite and PostgreSQL; a page says when older tasks were left
out, and narrowing the other filters (a created range, a status) moves the window.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Text, and_, cast, func, or_
from sqlalchemy.orm import aliased

from app.extensions import db
from app.lib.clock import as_utc, utcnow
from app.lib.cursors import BadCursor, decode_cursor, decode_keyset, encode_cursor, encode_keyset
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
    task_type: str | None = None
    template_id: str | None = None
    chain_id: str | None = None
    # A substring of the input, result or error (case-insensitive), searched in the window.
    text: str | None = None


# Tasks a text search examines: the newest ones matching the other filters.
SEARCH_WINDOW = 20_000


@dataclass(frozen=True)
class Sort:
    """A keyset order: its columns (all one direction) and how a cursor stores them."""

    label: str
    columns: tuple[Any, ...]
    descending: bool
    kinds: tuple[type, ...]


# Each order matches an index (ix_tasks_created, ix_tasks_priority_created, ix_tasks_queue).
SORTS = {
    "newest": Sort("Newest first", (Task.created_at, Task.id), True, (datetime, str)),
    "oldest": Sort("Oldest first", (Task.created_at, Task.id), False, (datetime, str)),
    "priority": Sort(
        "Highest priority first",
        (Task.priority, Task.created_at, Task.id),
        True,
        (int, datetime, str),
    ),
    "queue": Sort("Queue order (next claimed first)", (Task.queue_key, Task.id), False, (int, str)),
}
DEFAULT_SORT = "newest"


@dataclass
class TaskPage:
    tasks: list[Task]
    next_cursor: str | None
    # Set for a text search: how many of the newest tasks it examined at most, and whether
    # older ones matching the other filters were left out.
    window: int | None = None
    window_full: bool = False


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
    principal: Principal,
    filters: TaskFilters,
    *,
    limit: int = 50,
    cursor: str | None = None,
    sort: str = DEFAULT_SORT,
) -> TaskPage:
    """``limit`` tasks in ``sort`` order (newest first by default), continuing after
    ``cursor``, which must have been made for the same order."""
    order = SORTS.get(sort)
    if order is None:
        raise InvalidInput(
            f"sort must be one of {', '.join(SORTS)}, got {sort!r}",
            [{"field": "sort", "message": f"one of {', '.join(SORTS)}"}],
        )
    if filters.text:
        # The window is a subquery in FROM, so the database reads it first (newest-first
        # on ix_tasks_created, SEARCH_WINDOW rows at most) and only then matches text.
        window = searched_window(principal, filters)
        entity: Any = aliased(Task, window, name="search_window")
        conditions = [text_condition(entity, filters.text)]
    else:
        entity = Task
        conditions = filter_conditions(principal, filters)
    columns = [getattr(entity, c.key) for c in order.columns]
    if cursor:
        conditions.append(keyset_after(order, columns, read_cursor(sort, order, cursor)))
    directed = [c.desc() if order.descending else c.asc() for c in columns]
    query = db.select(entity).where(*conditions).order_by(*directed).limit(limit + 1)
    rows = list(db.session.scalars(query))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = make_cursor(sort, rows[-1])
    page = TaskPage(tasks=rows, next_cursor=next_cursor)
    if filters.text:
        page.window = SEARCH_WINDOW
        page.window_full = search_window_full(principal, filters)
    return page


def make_cursor(sort: str, task: Task) -> str:
    """The cursor after ``task``; newest-first keeps the API's original cursor format."""
    if sort == DEFAULT_SORT:
        return encode_cursor(task.created_at, task.id)
    return encode_keyset(sort, [getattr(task, c.key) for c in SORTS[sort].columns])


def read_cursor(sort: str, order: Sort, cursor: str) -> list[Any]:
    try:
        if sort == DEFAULT_SORT:
            values: list[Any] = list(decode_cursor(cursor))
        else:
            values = decode_keyset(cursor, sort, order.kinds)
    except BadCursor as exc:
        raise InvalidInput(
            str(exc), [{"field": "cursor", "message": "not a valid cursor"}]
        ) from None
    return [as_utc(v) if isinstance(v, datetime) else v for v in values]


def keyset_after(order: Sort, columns: list[Any], values: list[Any]) -> ColumnElement[bool]:
    """Rows after ``values`` in ``order`` (on ``columns``, the order's own or a window's):
    a row comparison spelled out, with the first column's bound on its own so both
    databases start the index scan there."""

    def beyond(column: Any, value: Any) -> ColumnElement[bool]:
        return column < value if order.descending else column > value

    alternatives = [
        and_(*(columns[j] == values[j] for j in range(i)), beyond(columns[i], values[i]))
        for i in range(len(columns))
    ]
    bound = columns[0] <= values[0] if order.descending else columns[0] >= values[0]
    return and_(bound, or_(*alternatives))


def filter_conditions(principal: Principal, filters: TaskFilters) -> list[ColumnElement[bool]]:
    """The principal's scope narrowed by the filters (a text search to its window)."""
    if not filters.text:
        return plain_conditions(principal, filters)
    window = searched_window(principal, filters)
    found = db.select(window.c.id).where(text_condition(window.c, filters.text))
    return [Task.id.in_(found)]


def searched_window(principal: Principal, filters: TaskFilters) -> Any:
    """The newest SEARCH_WINDOW tasks matching every filter but the text, as a subquery."""
    return (
        db.select(Task)
        .where(*plain_conditions(principal, filters))
        .order_by(Task.created_at.desc(), Task.id.desc())
        .limit(SEARCH_WINDOW)
        .subquery("search_window")
    )


def plain_conditions(principal: Principal, filters: TaskFilters) -> list[ColumnElement[bool]]:
    """The scope and every filter but the text search."""
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
    if filters.task_type:
        conditions.append(Task.task_type == filters.task_type)
    if filters.template_id:
        conditions.append(Task.template_id == filters.template_id)
    if filters.chain_id:
        conditions.append(Task.chain_id == filters.chain_id)
    return conditions


def text_condition(source: Any, text: str) -> ColumnElement[bool]:
    """``text`` in the input, result or error of ``source`` (the tasks table, a window of
    it, or its columns), ignoring case (ASCII). JSON stores some characters escaped (quotes;
    anything beyond ASCII on SQLite), so the JSON columns are also searched for the escaped
    spelling."""
    escaped = json.dumps(text)[1:-1]
    spellings = [text] if escaped == text else [text, escaped]
    json_columns = [cast(source.input_data, Text), cast(source.result_data, Text)]
    matches = [c.icontains(s, autoescape=True) for c in json_columns for s in spellings]
    matches.append(source.error_message.icontains(text, autoescape=True))
    return or_(*matches)


def search_window_full(principal: Principal, filters: TaskFilters) -> bool:
    """Whether tasks older than the search window match the other filters."""
    beyond = db.session.scalar(
        db.select(Task.id)
        .where(*plain_conditions(principal, filters))
        .order_by(Task.created_at.desc(), Task.id.desc())
        .offset(SEARCH_WINDOW)
        .limit(1)
    )
    return beyond is not None


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
