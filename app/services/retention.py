"""Task retention: finished tasks past their retention period are deleted, a batch per
maintenance pass, so the tables of a server that runs for months stay bounded.

What goes, with each task:
- its task events, attempts and dependency edges (both directions);
- its trust records (the agent's score itself is on the agent row and stays as it is;
  manual adjustments, which name no task, stay);
- the schedule executions that made it (a schedule's run history keeps the same period;
  with the task gone, the row would otherwise read as a SKIPPED run).

What stays:
- open tasks, and finished ones not yet past the period (``completed_at``: every terminal
  status stamps it);
- a finished task that an open task depends on: the open task still reads its status when
  counting what blocks it, and its ``result_data`` for ``$from`` references when released;
- every task of a chain still PENDING or RUNNING (its steps and their order stay visible);
- a task whose Idempotency-Key is still live (younger than IDEMPOTENCY_TTL_SECONDS), so a
  retried submit replays it instead of creating a second task even with a short retention;
- webhook events and deliveries (their own WEBHOOK_RETENTION_DAYS; they carry their body)
  and audit rows (AUDIT_RETENTION_DAYS: the audit trail outlives what it describes).

FAILED tasks (the dead letter) have their own period, FAILED_TASK_RETENTION_DAYS, which
defaults to TASK_RETENTION_DAYS: an operator who wants failures kept longer says so
without keeping every completed task as long. 0 keeps that kind forever.

Each pass deletes at most ``PRUNE_BATCH`` tasks, the oldest-created first, found through
``ix_tasks_status_created`` (a task ends after it was created, so ``created_at < cutoff``
bounds the scan; ``completed_at`` is checked on the rows found). No new index is needed,
and none is added to the busiest table's write path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, or_, select
from sqlalchemy.orm import aliased

from app.extensions import db
from app.lib.clock import utcnow
from app.models import (
    ChainStatus,
    ScheduleExecution,
    Task,
    TaskAttempt,
    TaskChain,
    TaskDependency,
    TaskEvent,
    TaskStatus,
    TrustRecord,
)
from app.services.settings import settings

# Tasks deleted per pass at most. With ~3 events, an attempt and a trust record each, a
# batch is ~6,000 rows: 0.6-1.4 s on PostgreSQL on a busy 2-core machine (README "Task
# retention"), so the sweep (every second) catches up at ~1,000 tasks/s.
PRUNE_BATCH = 1000
# Once a pass finds less than a batch, the sweep looks again only after this long: tasks
# come of age continuously, so this delays a deletion by at most a minute, and spares the
# sweep (every second) the scans of an empty pass.
REST_AFTER_CAUGHT_UP = timedelta(seconds=60)
# Finished statuses other than FAILED, which follows FAILED_TASK_RETENTION_DAYS.
ENDED = (TaskStatus.COMPLETED, TaskStatus.CANCELLED, TaskStatus.EXPIRED)


@dataclass
class RetentionSettings:
    """Filled from the app config at start-up; days may be fractions, 0 keeps forever."""

    task_days: float = 30
    failed_task_days: float = 30

    def configure(self, config: Mapping[str, Any]) -> None:
        self.task_days = float(config["TASK_RETENTION_DAYS"])
        self.failed_task_days = float(config["FAILED_TASK_RETENTION_DAYS"])


retention_settings = RetentionSettings()


@dataclass
class Rest:
    """This process's pause after a pass that found less than a batch (caught up)."""

    until: datetime | None = None

    def resting(self, now: datetime) -> bool:
        # A clock set back (a test's pinned time) ends the rest rather than prolong it.
        return self.until is not None and self.until - REST_AFTER_CAUGHT_UP <= now < self.until


rest = Rest()


def cutoffs(now: datetime) -> list[tuple[str, datetime]]:
    """(status, end before which its tasks go) for each finished status pruned at all."""
    days = {s: retention_settings.task_days for s in ENDED}
    days[TaskStatus.FAILED] = retention_settings.failed_task_days
    return [(status, now - timedelta(days=d)) for status, d in days.items() if d > 0]


def unneeded() -> ColumnElement[bool]:
    """No open task depends on the task, and no open chain holds it."""
    dependent = aliased(Task)
    needed_by_open_task = exists().where(
        TaskDependency.depends_on_id == Task.id,
        dependent.id == TaskDependency.task_id,
        dependent.status.not_in(TaskStatus.TERMINAL),
    )
    in_open_chain = exists().where(
        TaskChain.id == Task.chain_id, TaskChain.status.not_in(ChainStatus.TERMINAL)
    )
    return and_(~needed_by_open_task, or_(Task.chain_id.is_(None), ~in_open_chain))


def prunable(status: str, cutoff: datetime, now: datetime) -> ColumnElement[bool]:
    """The condition a task of ``status`` must meet to be deleted now."""
    idempotency_live = now - timedelta(seconds=settings.idempotency_ttl_seconds)
    return and_(
        # One status and a created_at range: a range of ix_tasks_status_created, read in
        # order. A task ends after it is created, so this bounds the scan; the rows in it
        # that ended later (or are kept below) are all it reads in vain.
        Task.status == status,
        Task.created_at < cutoff,
        # Every path to a finished status stamps completed_at; updated_at covers any row
        # written before that was so.
        or_(
            Task.completed_at < cutoff, and_(Task.completed_at.is_(None), Task.updated_at < cutoff)
        ),
        unneeded(),
        or_(Task.idempotency_key.is_(None), Task.created_at < idempotency_live),
    )


def prune(now: datetime | None = None, *, limit: int = PRUNE_BATCH) -> int:
    """Delete up to ``limit`` finished tasks past their retention, with their rows.

    One batch per call keeps each sweep short. The tasks are locked FOR UPDATE, SKIP
    LOCKED: one that a dead-letter requeue or a submit naming it in ``depends_on`` (which
    locks its dependencies FOR SHARE) holds is left to a later pass, which sees the
    outcome; such a writer that comes second waits, then finds no task ("not found").
    """
    now = now or utcnow()
    ids: list[str] = []
    for status, cutoff in cutoffs(now):
        if len(ids) >= limit:
            break
        ids += db.session.scalars(
            select(Task.id)
            .where(prunable(status, cutoff, now))
            .order_by(Task.created_at)
            .limit(limit - len(ids))
            .with_for_update(of=Task, skip_locked=True)
        )
    if ids:
        # Again, in a statement of its own (a fresh snapshot on PostgreSQL): a submit that
        # named one of them in depends_on may have committed while the search ran, after
        # its FOR SHARE lock was gone. Now that they are locked, no new one can.
        ids = list(db.session.scalars(select(Task.id).where(Task.id.in_(ids), unneeded())))
    if not ids:
        db.session.rollback()
        return 0
    # Children first: SQLite enforces the cascades only with foreign keys on, and trust
    # records name their task without a foreign key.
    db.session.execute(delete(TaskEvent).where(TaskEvent.task_id.in_(ids)))
    db.session.execute(delete(TaskAttempt).where(TaskAttempt.task_id.in_(ids)))
    db.session.execute(
        delete(TaskDependency).where(
            or_(TaskDependency.task_id.in_(ids), TaskDependency.depends_on_id.in_(ids))
        )
    )
    db.session.execute(delete(TrustRecord).where(TrustRecord.task_id.in_(ids)))
    db.session.execute(delete(ScheduleExecution).where(ScheduleExecution.task_id.in_(ids)))
    db.session.execute(delete(Task).where(Task.id.in_(ids)))
    db.session.commit()
    return len(ids)


def sweep_step(now: datetime) -> int:
    """The maintenance sweep's step: a batch, or nothing while resting after catching up."""
    if rest.resting(now):
        return 0
    pruned = prune(now, limit=PRUNE_BATCH)
    rest.until = now + REST_AFTER_CAUGHT_UP if pruned < PRUNE_BATCH else None
    return pruned
