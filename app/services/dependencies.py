"""Task dependencies: tasks wait for other tasks, forming a DAG.

A task submitted with ``depends_on`` is BLOCKED while ``pending_dependencies`` > 0 and is
never claimed. ``settle_dependents`` is a workflows reaction, so it runs in the very
transaction that finished a dependency: a COMPLETED one decrements its dependents' counts
with one UPDATE per round, and each dependent that reaches zero gets its ``$from``
references resolved and enters the queue in that commit (claimers are woken after it). A
dependency that ends FAILED, CANCELLED or EXPIRED cancels its BLOCKED dependents, or with
``on_dependency_failure: "run"`` counts as done; cancelled dependents come back to this
reaction in the next round, so a cascade through many levels is a few statements a level.

Only a dependency's first terminal status counts: a FAILED task requeued from the
dead-letter view and COMPLETED later, or discarded (FAILED → CANCELLED), has already
been counted by its dependents and is not counted twice.

Locks: submits lock the named dependencies FOR SHARE and the reaction locks BLOCKED
dependents FOR UPDATE, both in creation order (a dependency is always older than its
dependents); so a dependency cannot finish unseen between a submit's read of its status
and the commit of the new edge.
"""

from __future__ import annotations

import heapq
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from app.extensions import db
from app.lib.clock import as_utc
from app.models import Task, TaskDependency, TaskStatus
from app.services import workflows
from app.services.attempts import record_cancellation
from app.services.dispatch import queue_key, visible_task
from app.services.errors import InvalidInput
from app.services.principal import Principal
from app.services.settings import settings

MAX_DEPENDENCIES = 100
# GET /ains/tasks/{id}/dependents pages through at most this many at a time.
MAX_DEPENDENTS_PAGE = 1000
ACTOR = "system"
REFERENCE = "$from"


class UnresolvedReference(Exception):
    """A ``$from`` reference whose path is not in the dependency's result."""


# ---------------------------------------------------------------------------------------
# $from references in input_data
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    where: str  # its place in input_data, for messages: "" is input_data itself
    ref: str  # a task id, or "@index" in a batch before it is rewritten
    path: str | None


def batch_index(name: str) -> int | None:
    """The index of a batch reference ``"@3"``, or None if ``name`` is not one."""
    digits = name[1:]
    if name.startswith("@") and digits.isascii() and digits.isdigit() and len(digits) <= 4:
        return int(digits)
    return None


def parse_reference(where: str, value: dict[str, Any], prefix: str) -> Reference:
    """A ``{"$from": ref, "path": "a.b"}`` object, checked."""
    field_name = f"{prefix}input_data" + (f".{where}" if where else "")
    ref, path = value.get(REFERENCE), value.get("path")
    problem = None
    if set(value) - {REFERENCE, "path"}:
        problem = "a $from reference takes only 'path' besides '$from'"
    elif not isinstance(ref, str) or not ref:
        problem = "$from must name a task id (or @index in a batch)"
    elif path is not None and not isinstance(path, str):
        problem = 'path must be a dotted string such as "a.b.0"'
    if problem:
        raise InvalidInput(f"{field_name}: {problem}", [{"field": field_name, "message": problem}])
    return Reference(where=where, ref=ref, path=path or None)


def find_references(data: Any, prefix: str = "") -> list[Reference]:
    """Every ``$from`` reference in ``data`` (iteratively: input may nest deeply)."""
    found: list[Reference] = []
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            if REFERENCE in value:
                found.append(parse_reference(where, value, prefix))
                continue
            stack.extend((f"{where}.{key}" if where else key, item) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend(
                (f"{where}.{i}" if where else str(i), item) for i, item in enumerate(value)
            )
    return sorted(found, key=lambda r: r.where)


def replace_references(data: dict[str, Any], value_of: Callable[[dict[str, Any]], Any]) -> Any:
    """A copy of ``data`` with each reference object replaced by ``value_of(it)``."""
    copy = json.loads(json.dumps(data))
    if REFERENCE in copy:
        return value_of(copy)
    stack: list[Any] = [copy]
    while stack:
        container = stack.pop()
        keys: Iterable[Any] = (
            list(container) if isinstance(container, dict) else range(len(container))
        )
        for key in keys:
            item = container[key]
            if isinstance(item, dict) and REFERENCE in item:
                container[key] = value_of(item)
            elif isinstance(item, (dict, list)):
                stack.append(item)
    return copy


def extract(result: Any, ref: str, path: str | None) -> Any:
    """The value at a dotted ``path`` of a dependency's result (list items by number)."""
    value = result
    for part in path.split(".") if path else []:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif (
            isinstance(value, list) and part.isascii() and part.isdigit() and int(part) < len(value)
        ):
            value = value[int(part)]
        else:
            raise UnresolvedReference(
                f"input_data references path {path!r} of task {ref}'s result, which has none"
            )
    return value


def resolve_input(
    input_data: dict[str, Any], results: dict[str, tuple[str, Any]]
) -> dict[str, Any]:
    """``input_data`` with its references replaced by the dependencies' results.

    ``results`` maps a dependency id to its (status, result_data); a dependency that did
    not complete (``on_dependency_failure: "run"``) gives null.
    """

    def value_of(reference: dict[str, Any]) -> Any:
        status, result = results.get(reference[REFERENCE], (None, None))
        if status != TaskStatus.COMPLETED:
            return None
        return extract(result or {}, reference[REFERENCE], reference.get("path"))

    resolved = replace_references(input_data, value_of)
    if resolved is None:
        return {}
    if not isinstance(resolved, dict):
        raise UnresolvedReference(
            f"input_data resolves to a {type(resolved).__name__}, not an object"
        )
    return resolved


def dependency_results(ids: Iterable[str]) -> dict[str, tuple[str, Any]]:
    """(status, result_data) of these tasks, in one query."""
    wanted = set(ids)
    if not wanted:
        return {}
    rows = db.session.execute(
        select(Task.id, Task.status, Task.result_data).where(Task.id.in_(wanted))
    )
    return {row.id: (row.status, row.result_data) for row in rows}


# ---------------------------------------------------------------------------------------
# Submit
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownTask:
    id: str
    client_id: str
    status: str


def lock_known(ids: Iterable[str]) -> dict[str, KnownTask]:
    """The existing tasks among ``ids``, locked FOR SHARE until the submit commits.

    A dependency finishing meanwhile either commits first (we read its final status) or
    waits for us (its reaction then sees the new edge): it cannot be missed.
    """
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = db.session.execute(
        select(Task.id, Task.client_id, Task.status)
        .where(Task.id.in_(wanted))
        .order_by(Task.created_at, Task.id)
        .with_for_update(read=True)
    )
    return {row.id: KnownTask(row.id, row.client_id, row.status) for row in rows}


@dataclass
class BatchScope:
    """What the items of one batch may depend on: tasks that exist, and earlier items."""

    known: dict[str, KnownTask]
    built: dict[int, Task] = field(default_factory=dict)


def batch_scope(items: Sequence[Any]) -> BatchScope:
    """Lock and load every existing task a batch names, in one query."""
    names = [
        name
        for item in items
        if isinstance(item, dict)
        for name in item.get("depends_on") or []
        if not name.startswith("@")
    ]
    return BatchScope(known=lock_known(names))


def batch_order(items: Sequence[Any]) -> tuple[list[int], dict[int, InvalidInput]]:
    """The order to build a batch in (each item after the items it names) and the items
    whose ``@index`` dependencies are invalid or form a cycle.

    Items stuck behind a cycle come last; they fail when built, as their dependency does.
    """
    n = len(items)
    errors: dict[int, InvalidInput] = {}
    needs: dict[int, set[int]] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        mates, bad = set(), []
        for name in item.get("depends_on") or []:
            if not name.startswith("@"):
                continue
            j = batch_index(name)
            if j is None or j >= n or j == i:
                bad.append(name)
            else:
                mates.add(j)
        if bad:
            problem = f"{', '.join(bad)}: not another item of this batch (@0..@{n - 1})"
            errors[i] = invalid(f"depends_on {problem}", f"tasks[{i}].depends_on", problem)
        elif mates:
            needs[i] = mates
    waiting = {i: len(needs.get(i, ())) for i in range(n)}
    dependents: dict[int, list[int]] = defaultdict(list)
    for i, mates in needs.items():
        for j in mates:
            dependents[j].append(i)
    ready = [i for i in range(n) if not waiting[i]]
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for k in dependents[i]:
            waiting[k] -= 1
            if not waiting[k]:
                heapq.heappush(ready, k)
    stuck = [i for i in range(n) if waiting[i]]
    reach = {i: reachable(i, needs) for i in stuck}
    for i in stuck:
        if i in reach[i]:
            cycle = sorted(j for j in reach[i] if i in reach[j])
            problem = "forms a cycle through items " + ", ".join(f"@{j}" for j in cycle)
            errors[i] = invalid(f"depends_on {problem}", f"tasks[{i}].depends_on", problem)
    return order + stuck, errors


def reachable(start: int, needs: dict[int, set[int]]) -> set[int]:
    """The items ``start`` depends on, directly or not."""
    seen: set[int] = set()
    stack = list(needs.get(start, ()))
    while stack:
        j = stack.pop()
        if j not in seen:
            seen.add(j)
            stack.extend(needs.get(j, ()))
    return seen


def invalid(message: str, field_name: str, problem: str) -> InvalidInput:
    return InvalidInput(message, [{"field": field_name, "message": problem}])


@dataclass
class Plan:
    """A new task's dependencies, checked, and how it starts."""

    ids: list[str]
    input_data: dict[str, Any]
    waiting: int  # dependencies to wait for
    failed: str | None  # a dependency that already ended without completing ("cancel")
    references: list[Reference]
    # Dependencies that had already ended at submit: their edges are counted already.
    settled: set[str] = field(default_factory=set)


def plan_dependencies(
    client_id: str, fields: dict[str, Any], *, batch: BatchScope | None = None, index: int = 0
) -> Plan | None:
    """Check a submit's ``depends_on`` and ``$from`` references (None: it has neither).

    Every dependency must be a task of the same client (others read as not found, so ids
    do not leak); in a batch ``@index`` names an item built before this one. Fields the
    system builds (chain steps, schedule runs) have no ``depends_on`` key: their input is
    data, ``$from`` objects included (a chain step carries an agent's result).
    """
    if "depends_on" not in fields:
        return None
    prefix = f"tasks[{index}]." if batch is not None else ""
    input_data = fields.get("input_data") or {}
    names = list(dict.fromkeys(fields.get("depends_on") or []))
    references = find_references(input_data, prefix)
    if not names and not references:
        return None
    where = f"{prefix}depends_on"
    if len(names) > MAX_DEPENDENCIES:
        problem = f"at most {MAX_DEPENDENCIES} dependencies, got {len(names)}"
        raise invalid(f"depends_on: {problem}", where, problem)
    known = batch.known if batch is not None else lock_known(n for n in names if n[:1] != "@")
    ids: dict[str, str] = {}
    bad: list[str] = []
    for name in names:
        if name.startswith("@"):
            mate_index = batch_index(name)
            if batch is None or mate_index is None:
                problem = f"{name}: @index names an item of the same batch (POST /ains/tasks/batch)"
                raise invalid(f"depends_on {problem}", where, problem)
            mate = batch.built.get(mate_index)
            if mate is None:
                raise invalid(f"depends on failed item {name}", where, f"item {name} failed")
            if mate.client_id != client_id:
                bad.append(name)
            ids[name] = mate.id
        else:
            row = known.get(name)
            if row is None or row.client_id != client_id:
                bad.append(name)
            ids[name] = name
    if bad:
        raise InvalidInput(
            f"depends_on names tasks that do not exist or belong to another client: "
            f"{', '.join(bad)}",
            [{"field": where, "message": f"task {name!r} not found"} for name in bad],
        )
    for reference in references:
        if reference.ref not in ids:
            field_name = f"{prefix}input_data" + (f".{reference.where}" if reference.where else "")
            problem = f"$from {reference.ref!r} is not one of the task's depends_on"
            raise invalid(f"{field_name}: {problem}", field_name, problem)
    if any(r.ref.startswith("@") for r in references):
        input_data = replace_references(input_data, lambda r: {**r, REFERENCE: ids[r[REFERENCE]]})
        references = find_references(input_data)
    run_anyway = fields.get("on_dependency_failure") == "run"
    waiting, failed = 0, None
    settled: set[str] = set()
    unique = list(dict.fromkeys(ids.values()))
    for real in unique:
        # A new batch item is waited for even if it starts CANCELLED or FAILED: its end
        # reaches settle_dependents before this batch commits, like any other.
        status = known[real].status if real in known else TaskStatus.BLOCKED
        if status in TaskStatus.TERMINAL:
            settled.add(real)
        if status == TaskStatus.COMPLETED or (run_anyway and status in TaskStatus.TERMINAL):
            continue
        if status in TaskStatus.TERMINAL:
            failed = failed or real
        else:
            waiting += 1
    return Plan(unique, input_data, waiting, failed, references, settled)


def attach(task: Task, plan: Plan, *, actor: str, now: datetime) -> None:
    """Record a new task's dependencies and its first status (after the session add)."""
    db.session.add_all(
        TaskDependency(task_id=task.id, depends_on_id=d, resolved=d in plan.settled)
        for d in plan.ids
    )
    data = {"depends_on": plan.ids}
    if plan.failed or plan.waiting:
        task.pending_dependencies = plan.waiting
        task.transition(
            TaskStatus.BLOCKED,
            actor=actor,
            now=now,
            reason=f"submitted: waiting for {plan.waiting} "
            + ("dependency" if plan.waiting == 1 else "dependencies"),
            data=data,
        )
        if plan.failed:
            cancel_for(task, plan.failed, now)
        return
    results = dependency_results(r.ref for r in plan.references) if plan.references else None
    enter_queue(task, results, now, actor=actor, reason="submitted", data=data)


def cancel_for(task: Task, dependency_id: str, now: datetime) -> None:
    """A dependency ended without completing: the task ends CANCELLED, as a cancel would."""
    reason = f"dependency {dependency_id} failed"
    task.cancelled_by = ACTOR
    task.cancellation_reason = reason
    record_cancellation(task, actor=ACTOR, now=now, reason=reason)


def enter_queue(
    task: Task,
    results: dict[str, tuple[str, Any]] | None,
    now: datetime,
    *,
    enqueued_at: datetime | None = None,
    actor: str = ACTOR,
    reason: str = "dependencies completed",
    data: dict[str, Any] | None = None,
) -> bool:
    """Resolve the task's references (given ``results``) and make it PENDING.

    A reference to a path the result does not have fails the task, without retries: the
    dependency's result will not change.
    """
    if results is not None:
        try:
            task.input_data = resolve_input(task.input_data or {}, results)
        except UnresolvedReference as exc:
            task.error_message = str(exc)
            task.completed_at = now
            task.transition(
                TaskStatus.FAILED, actor=actor, now=now, reason=f"{exc} (not retried)", data=data
            )
            return False
    task.pending_dependencies = 0
    task.enqueued_at = enqueued_at or now
    task.queue_key = queue_key(task.priority, task.enqueued_at, settings.aging_seconds_per_level)
    task.transition(TaskStatus.PENDING, actor=actor, now=now, reason=reason, data=data)
    return True


# ---------------------------------------------------------------------------------------
# The reaction: dependencies that finished
# ---------------------------------------------------------------------------------------


@workflows.reaction
def settle_dependents(finished: list[Task]) -> None:
    """Unblock or cancel the BLOCKED dependents of tasks that just ended."""
    ended = {t.id: t for t in finished if t.status in TaskStatus.TERMINAL}
    if not ended:
        return
    # Locked in creation order, as submits lock dependencies: no deadlock between them.
    # Only edges not counted yet: a dependency requeued from the dead letter ends a second
    # time, and must count for a task that started waiting for it since, not again for one
    # that counted its first end.
    edges = db.session.execute(
        select(TaskDependency.depends_on_id, Task.id, Task.on_dependency_failure)
        .join(Task, Task.id == TaskDependency.task_id)
        .where(
            TaskDependency.depends_on_id.in_(list(ended)),
            TaskDependency.resolved.is_(False),
            Task.status == TaskStatus.BLOCKED,
        )
        .order_by(Task.created_at, Task.id)
        .with_for_update(of=Task)
    ).all()
    if not edges:
        return
    db.session.execute(
        update(TaskDependency)
        .where(
            TaskDependency.depends_on_id.in_(list(ended)),
            TaskDependency.task_id.in_({task_id for _, task_id, _ in edges}),
        )
        .values(resolved=True)
        .execution_options(synchronize_session=False)
    )
    now = max(t.updated_at for t in ended.values())
    cancel: dict[str, str] = {}
    satisfied: Counter[str] = Counter()
    for dep, task_id, on_failure in edges:
        if ended[dep].status == TaskStatus.COMPLETED or on_failure == "run":
            satisfied[task_id] += 1
        else:
            cancel.setdefault(task_id, dep)
    if cancel:
        for task in locked_tasks(cancel):
            cancel_for(task, cancel[task.id], now)
            satisfied.pop(task.id, None)
    ready = count_down(satisfied)
    if ready:
        release(locked_tasks(ready), now)


def count_down(satisfied: Counter[str]) -> list[str]:
    """Decrement the dependents' pending counts; return those that reached zero.

    One UPDATE per distinct decrement (almost always one): never a statement per task.
    """
    by_amount: dict[int, list[str]] = defaultdict(list)
    for task_id, n in satisfied.items():
        by_amount[n].append(task_id)
    ready: list[str] = []
    for n, ids in by_amount.items():
        rows = db.session.execute(
            update(Task)
            .where(Task.id.in_(ids), Task.status == TaskStatus.BLOCKED)
            .values(pending_dependencies=Task.pending_dependencies - n)
            .returning(Task.id, Task.pending_dependencies)
            .execution_options(synchronize_session=False)
        ).all()
        ready += [row.id for row in rows if row.pending_dependencies <= 0]
    return ready


def locked_tasks(ids: Iterable[str]) -> list[Task]:
    """These tasks (locked already by this transaction), fresh from the database."""
    return list(
        db.session.scalars(
            select(Task)
            .where(Task.id.in_(list(ids)))
            .order_by(Task.queue_key, Task.id)
            .execution_options(populate_existing=True)
        )
    )


def release(tasks: list[Task], now: datetime) -> None:
    """Dependencies done: resolve the tasks' references and queue them, in submit order."""
    references = {t.id: find_references(t.input_data or {}) for t in tasks}
    results = dependency_results(r.ref for refs in references.values() for r in refs)
    finished_at = last_dependency_finished([t.id for t in tasks])
    for i, task in enumerate(tasks):
        # Two dependencies finishing at once: the report stamped first may commit last
        # (it waited for this row's lock), so never date a release before a dependency.
        at = max(now, finished_at.get(task.id, now))
        # One microsecond apart, so tasks released together keep their order in the queue.
        enqueued_at = at + timedelta(microseconds=i)
        enter_queue(task, results if references[task.id] else None, at, enqueued_at=enqueued_at)


def last_dependency_finished(task_ids: list[str]) -> dict[str, datetime]:
    """When the last dependency of each of these tasks changed (ended), one query for all."""
    rows = db.session.execute(
        select(TaskDependency.task_id, func.max(Task.updated_at))
        .join(Task, Task.id == TaskDependency.depends_on_id)
        .where(TaskDependency.task_id.in_(task_ids))
        .group_by(TaskDependency.task_id)
    ).all()
    return {task_id: as_utc(at) for task_id, at in rows if at is not None}  # type: ignore[misc]


# ---------------------------------------------------------------------------------------
# Reading the graph
# ---------------------------------------------------------------------------------------


def satisfies(status: str, on_failure: str) -> bool:
    """Does a dependency in ``status`` no longer hold back a task with this policy?"""
    return status == TaskStatus.COMPLETED or (on_failure == "run" and status in TaskStatus.TERMINAL)


def dependency_ids(task_id: str) -> list[str]:
    """The tasks this one depends on, oldest first."""
    return list(
        db.session.scalars(
            select(TaskDependency.depends_on_id)
            .join(Task, Task.id == TaskDependency.depends_on_id)
            .where(TaskDependency.task_id == task_id)
            .order_by(Task.created_at, Task.id)
        )
    )


def list_dependencies(principal: Principal, task_id: str) -> dict[str, Any]:
    """A task's dependencies, each with its status and whether it still blocks the task."""
    task = visible_task(principal, task_id)
    rows = db.session.execute(
        select(Task.id, Task.status)
        .join(TaskDependency, TaskDependency.depends_on_id == Task.id)
        .where(TaskDependency.task_id == task.id)
        .order_by(Task.created_at, Task.id)
    ).all()
    blocked = task.status == TaskStatus.BLOCKED
    on_failure = task.on_dependency_failure or "cancel"
    return {
        "task_id": task.id,
        "pending_dependencies": task.pending_dependencies or 0,
        "dependencies": [
            {
                "task_id": row.id,
                "status": row.status,
                "blocking": blocked and not satisfies(row.status, on_failure),
            }
            for row in rows
        ],
    }


def list_dependents(
    principal: Principal, task_id: str, *, limit: int = MAX_DEPENDENTS_PAGE, offset: int = 0
) -> dict[str, Any]:
    """The tasks waiting for this one, oldest first, a page at a time."""
    task = visible_task(principal, task_id)
    edge = TaskDependency.depends_on_id == task.id
    total = db.session.scalar(select(func.count()).select_from(TaskDependency).where(edge))
    rows = db.session.execute(
        select(Task.id, Task.status, Task.on_dependency_failure)
        .join(TaskDependency, TaskDependency.task_id == Task.id)
        .where(edge)
        .order_by(Task.created_at, Task.id)
        .limit(min(limit, MAX_DEPENDENTS_PAGE))
        .offset(offset)
    ).all()
    return {
        "task_id": task.id,
        "dependents": [
            {
                "task_id": row.id,
                "status": row.status,
                "blocking": row.status == TaskStatus.BLOCKED
                and not satisfies(task.status, row.on_dependency_failure),
            }
            for row in rows
        ],
        "total": total or 0,
        "limit": limit,
        "offset": offset,
    }
