"""Bulk actions on tasks: on chosen ids or on everything a filter matches.

One engine for the dead-letter view (requeue, discard) and the tasks list (cancel, requeue,
priority). An action is a ``Rule``: a SQL condition saying which tasks it applies to, the
same test for one loaded task (with the reason it does not apply), and what it does to one
locked task. Chosen ids are read in chunks under a row lock; a filter is walked oldest
first by keyset, ``chunk`` tasks per transaction, never more than ``limit`` in one call,
so a large filter takes bounded time and memory and each chunk's changes (and task
events) are committed as they go. What was done, skipped (and why) and left is counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_

from app.extensions import db
from app.lib.clock import as_utc
from app.models import Role, Task
from app.services.errors import InvalidInput
from app.services.principal import Principal
from app.services.task_search import TaskFilters, filter_conditions

MAX_SELECTION = 500
CHUNK = 500
NOT_FOUND = "not found"

log = logging.getLogger(__name__)


@dataclass
class BulkResult:
    """What a bulk action did, and what it left."""

    action: str
    done: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    remaining: int = 0
    # Running tasks a cancel asked to stop (they end CANCELLED when their agent confirms).
    stopping: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "action": self.action,
            "count": len(self.done),
            "task_ids": self.done,
            "skipped": self.skipped,
            "remaining": self.remaining,
        }


class BulkInterrupted(Exception):
    """A chunk failed after earlier chunks were committed: ``result`` says what was done
    (the failed chunk was rolled back); the error that stopped the run is the cause."""

    def __init__(self, result: BulkResult) -> None:
        super().__init__(f"{result.action} stopped after {len(result.done)} tasks")
        self.result = result


@dataclass(frozen=True)
class Rule:
    """Which tasks an action applies to, and what it does to one of them.

    ``applies`` is the SQL form of ``why_not(task) is None``; ``why_not`` reads only
    ``status``, ``cancel_requested_at`` and ``priority``, so it also judges a ``Probe``.
    """

    action: str
    applies: Callable[[], list[ColumnElement[bool]]]
    why_not: Callable[[Any], str | None]
    act: Callable[[Task], None]


@dataclass(frozen=True)
class Probe:
    """The fields a rule reads, for a group of tasks counted in SQL."""

    status: str
    cancel_requested_at: Any
    priority: int


@dataclass
class Preview:
    """What an action would do: tasks it applies to, and those it skips, by reason."""

    matching: int
    eligible: int
    skipped: dict[str, int]
    missing: list[str] = field(default_factory=list)


def check_target(task_ids: Sequence[str] | None, filters: TaskFilters | None) -> None:
    if (task_ids is None) == (filters is None):
        raise InvalidInput(
            "give either task_ids or filter, not both and not neither",
            [{"field": "task_ids", "message": "task_ids or filter"}],
        )
    if task_ids is not None and len(dict.fromkeys(task_ids)) > MAX_SELECTION:
        count = len(dict.fromkeys(task_ids))
        raise InvalidInput(
            f"at most {MAX_SELECTION} task_ids per call, got {count}",
            [{"field": "task_ids", "message": f"at most {MAX_SELECTION}"}],
        )


def run(
    principal: Principal,
    rule: Rule,
    *,
    task_ids: Sequence[str] | None = None,
    filters: TaskFilters | None = None,
    limit: int,
    chunk: int | None = None,
    as_of: datetime | None = None,
) -> BulkResult:
    """Apply ``rule`` to the chosen ids, or to at most ``limit`` tasks the filter matches
    (only those created at or before ``as_of``, when given: the confirmation's time).

    A chunk that raises is rolled back; if earlier chunks were committed, BulkInterrupted
    carries what they did, else the error itself is raised."""
    principal.require_role(Role.CLIENT)
    check_target(task_ids, filters)
    result = BulkResult(action=rule.action)
    chunk = chunk or CHUNK  # read now, so a test may shrink CHUNK
    try:
        if task_ids is not None:
            run_on_selection(principal, rule, result, list(dict.fromkeys(task_ids)), chunk)
        else:
            assert filters is not None
            run_on_filter(principal, rule, result, filters, limit, chunk, as_of)
    except Exception as exc:
        db.session.rollback()
        if not result.done:
            raise
        log.exception("bulk %s stopped after %d tasks", rule.action, len(result.done))
        raise BulkInterrupted(result) from exc
    return result


def run_on_selection(
    principal: Principal, rule: Rule, result: BulkResult, task_ids: list[str], chunk: int
) -> None:
    """The chosen ids: those the rule applies to are acted on, others reported as skipped."""
    scope = filter_conditions(principal, TaskFilters())
    for start in range(0, len(task_ids), chunk):
        ids = task_ids[start : start + chunk]
        # Until this chunk commits, what it did is not done: a failure drops it.
        committed = (len(result.done), len(result.skipped))
        try:
            found = {
                t.id: t
                for t in db.session.scalars(
                    db.select(Task).where(Task.id.in_(ids), *scope).with_for_update()
                )
            }
            for task_id in ids:
                task = found.get(task_id)
                reason = NOT_FOUND if task is None else rule.why_not(task)
                if reason is not None:
                    result.skipped.append({"task_id": task_id, "reason": reason})
                    continue
                assert task is not None
                rule.act(task)
                result.done.append(task_id)
            db.session.commit()
        except Exception:
            del result.done[committed[0] :], result.skipped[committed[1] :]
            raise


def run_on_filter(
    principal: Principal,
    rule: Rule,
    result: BulkResult,
    filters: TaskFilters,
    limit: int,
    chunk: int,
    as_of: datetime | None = None,
) -> None:
    """Oldest first by keyset, one transaction per chunk; rows another transaction holds
    are skipped now and counted in ``remaining``. With ``as_of``, tasks created after it
    (after the operator confirmed) are neither acted on nor counted."""
    conditions = [*filter_conditions(principal, filters), *rule.applies()]
    if as_of is not None:
        conditions.append(Task.created_at <= as_utc(as_of))
    last: tuple[Any, str] | None = None
    while len(result.done) < limit:
        query = db.select(Task).where(*conditions)
        if last is not None:
            query = query.where(
                Task.created_at >= last[0],
                or_(Task.created_at > last[0], and_(Task.created_at == last[0], Task.id > last[1])),
            )
        batch = list(
            db.session.scalars(
                query.order_by(Task.created_at, Task.id)
                .limit(min(chunk, limit - len(result.done)))
                .with_for_update(skip_locked=True)
            )
        )
        if not batch:
            break
        last = (batch[-1].created_at, batch[-1].id)
        committed = len(result.done)
        try:
            for task in batch:
                rule.act(task)
                result.done.append(task.id)
            db.session.commit()
        except Exception:
            del result.done[committed:]
            raise
    result.remaining = count(conditions)
    db.session.rollback()


def count(conditions: list[ColumnElement[bool]]) -> int:
    return db.session.scalar(db.select(db.func.count()).select_from(Task).where(*conditions)) or 0


def preview(
    principal: Principal,
    rule: Rule,
    *,
    task_ids: Sequence[str] | None = None,
    filters: TaskFilters | None = None,
) -> Preview:
    """What ``run`` would do now, changing nothing: counts by reason, in one grouped read
    for a filter."""
    principal.require_role(Role.CLIENT)
    check_target(task_ids, filters)
    skipped: Counter[str] = Counter()
    if task_ids is not None:
        ids = list(dict.fromkeys(task_ids))
        scope = filter_conditions(principal, TaskFilters())
        found = {
            t.id: t for t in db.session.scalars(db.select(Task).where(Task.id.in_(ids), *scope))
        }
        missing = [i for i in ids if i not in found]
        for task in found.values():
            reason = rule.why_not(task)
            if reason is not None:
                skipped[reason] += 1
        eligible = len(found) - sum(skipped.values())
        if missing:
            skipped[NOT_FOUND] = len(missing)
        return Preview(len(ids), eligible, dict(skipped.most_common()), missing)
    assert filters is not None
    requested = Task.cancel_requested_at.is_not(None)
    groups = db.session.execute(
        db.select(Task.status, requested, Task.priority, db.func.count())
        .where(*filter_conditions(principal, filters))
        .group_by(Task.status, requested, Task.priority)
    ).all()
    matching = eligible = 0
    for status, was_requested, priority, n in groups:
        matching += n
        reason = rule.why_not(Probe(status, True if was_requested else None, priority))
        if reason is None:
            eligible += n
        else:
            skipped[reason] += n
    return Preview(matching, eligible, dict(skipped.most_common()))
