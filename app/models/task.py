"""Tasks and their event history."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.orm import Mapped, Session, SessionTransaction, UOWTransaction, mapped_column

from app.extensions import db
from app.lib.clock import isoformat, utcnow
from app.models.base import BigIntPK, JSONType, UTCDateTime, not_null_index, plain_insert

log = logging.getLogger(__name__)


class TaskStatus:
    PENDING = "PENDING"
    ASSIGNED = "ASSIGNED"
    ACTIVE = "ACTIVE"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    BLOCKED = "BLOCKED"
    EXPIRED = "EXPIRED"
    ALL = (PENDING, ASSIGNED, ACTIVE, COMPLETED, FAILED, CANCELLED, BLOCKED, EXPIRED)
    TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED, EXPIRED})
    WAITING = frozenset({PENDING, ASSIGNED, BLOCKED})


class AttemptOutcome:
    """How one attempt (one claim of a task) ended."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    AGENT_LOST = "agent_lost"
    CANCELLED = "cancelled"
    ALL = (RUNNING, COMPLETED, FAILED, TIMED_OUT, AGENT_LOST, CANCELLED)
    # Outcomes that count against the agent: a retry prefers another agent.
    AGENT_FAULT = (FAILED, TIMED_OUT, AGENT_LOST)
    # Ended by the server while the agent may still be working: it must stop.
    SERVER_ENDED = (TIMED_OUT, AGENT_LOST, CANCELLED)


RETRY_POLICIES = ("exponential", "linear", "fixed")
# Session.info key: tasks that reached a terminal status in the open transaction.
FINISHED_TASKS = "ains_finished_tasks"
# Session.info key: (task, time) pairs that went PENDING in the open transaction; routing
# assigns them before it commits (services/routing).
ROUTABLE_TASKS = "ains_routable_tasks"
# Session.info key: (task, event) of every transition in the open transaction; the webhook
# outbox is written from them before it commits (services/webhooks).
TASK_EVENTS = "ains_task_events"
# Session.info key: the EventRows of the open transaction not yet inserted (each flush
# inserts them after its own writes, see write_events).
UNWRITTEN_EVENTS = "ains_unwritten_events"


@dataclass(slots=True)
class EventRow:
    """A transition's event as it is written: a plain record, inserted in bulk after the
    flush that writes its task. (As an ORM object, each event cost a sixth of a drained
    task's Python work: instrumented attributes, then the unit of work.) Reads load
    ``TaskEvent``."""

    task_id: str
    at: datetime
    from_status: str | None
    to_status: str
    actor: str
    reason: str | None
    data: dict[str, Any] | None

    def row(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "at": self.at,
            "from_status": self.from_status,
            "to_status": self.to_status,
            "actor": self.actor,
            "reason": self.reason,
            "data": self.data,
        }


# Tasks a schedule made carry created_by "schedule:<id>" (services/principal.schedule_runner).
SCHEDULE_RUN = "created_by LIKE 'schedule:%'"


class Task(db.Model):
    __tablename__ = "tasks"
    __table_args__ = (
        # The claim query: PENDING tasks of a capability in queue order.
        Index("ix_tasks_claim", "status", "capability_required", "queue_key"),
        Index("ix_tasks_agent_status", "assigned_agent_id", "status"),
        Index("ix_tasks_created", "created_at", "id"),
        Index("ix_tasks_status_created", "status", "created_at", "id"),
        Index("ix_tasks_client_created", "client_id", "created_at", "id"),
        # The sweeps' deadlines, and the rarer links and keys: each index holds only the
        # rows that have the value, since a query comparing it (deadline < now, key = x)
        # implies NOT NULL. A task's row is written four times (submitted, routed, claimed,
        # finished) and an update that changes an indexed column adds an entry to every
        # index; most rows have none of these values, so they skip these indexes.
        *(
            not_null_index(name, *columns)
            for name, *columns in (
                ("ix_tasks_status_lease", "status", "lease_expires_at"),
                ("ix_tasks_next_retry", "next_retry_at"),
                ("ix_tasks_status_timeout", "status", "timeout_at"),
                ("ix_tasks_status_expires", "status", "expires_at"),
                ("ix_tasks_cancel_requested", "status", "cancel_requested_at"),
                ("ix_tasks_template_id", "template_id"),
                ("ix_tasks_chain_id", "chain_id"),
            )
        ),
        Index("ix_tasks_status_assigned", "status", "assigned_at"),
        # Console lists at scale (bench/console.py): newest first for one agent, one
        # capability or one task type, and the dead-letter view's FAILED tasks with the
        # columns its filters test, so its page and its count read the index alone.
        Index("ix_tasks_agent_created", "assigned_agent_id", "created_at", "id"),
        Index("ix_tasks_capability_created", "capability_required", "created_at", "id"),
        Index("ix_tasks_type_created", "task_type", "created_at", "id"),
        Index(
            "ix_tasks_failed",
            "created_at",
            "id",
            postgresql_include=[
                "client_id",
                "capability_required",
                "assigned_agent_id",
                "priority",
            ],
            postgresql_where=text("status = 'FAILED'"),
            sqlite_where=text("status = 'FAILED'"),
        ),
        # The tasks list's other keyset orders: highest priority first, and claim order.
        Index("ix_tasks_priority_created", "priority", "created_at", "id"),
        Index("ix_tasks_queue", "queue_key", "id"),
        # A schedule's run counts (the schedules list): its tasks by status, from an index
        # that holds only tasks made by schedules (queries repeat SCHEDULE_RUN verbatim).
        Index(
            "ix_tasks_schedule_runs",
            "created_by",
            "status",
            postgresql_where=text(SCHEDULE_RUN),
            sqlite_where=text(SCHEDULE_RUN),
        ),
        # Unique among keyed tasks (NULLs never clash): keyless submits skip the index.
        not_null_index("uq_tasks_client_idempotency", "client_id", "idempotency_key", unique=True),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(200))
    task_type: Mapped[str] = mapped_column(String(200))
    capability_required: Mapped[str] = mapped_column(String(200))
    input_data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=5)
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.PENDING)
    # Claim order: enqueue time (µs) minus priority x aging period, so a task gains one
    # priority level per aging period waited while the column stays static and indexable.
    queue_key: Mapped[int] = mapped_column(BigInteger)
    enqueued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    max_retries: Mapped[int] = mapped_column(Integer, default=3)
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    retry_policy: Mapped[str] = mapped_column(String(16), default="exponential")
    next_retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    timeout_seconds: Mapped[int] = mapped_column(Integer, default=300)
    retry_on_timeout: Mapped[bool] = mapped_column(Boolean, default=False)
    # Execution deadline of the current attempt: claimed_at + timeout_seconds.
    timeout_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A task still waiting at this time ends EXPIRED (expires_in_seconds at submit).
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set when a running task is asked to stop; it ends CANCELLED on the agent's
    # confirmation or after the grace period.
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    routing_strategy: Mapped[str | None] = mapped_column(String(40))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    assigned_agent_id: Mapped[str | None] = mapped_column(ForeignKey("agents.id"))
    # When routing assigned the task to assigned_agent_id (ASSIGNED): unclaimed for too
    # long, it is routed again.
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Failed on too many different agents: the task is at fault, not them.
    poison: Mapped[bool] = mapped_column(Boolean, default=False)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    progress: Mapped[int | None] = mapped_column(Integer)
    progress_message: Mapped[str | None] = mapped_column(Text)
    result_data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_by: Mapped[str | None] = mapped_column(String(100))
    cancellation_reason: Mapped[str | None] = mapped_column(Text)
    # Workflows: dependencies not yet COMPLETED (the task is BLOCKED while above zero),
    # what happens when one fails, and where the task came from.
    pending_dependencies: Mapped[int] = mapped_column(Integer, default=0)
    on_dependency_failure: Mapped[str] = mapped_column(String(8), default="cancel")
    template_id: Mapped[str | None] = mapped_column(String(40))
    template_version: Mapped[int | None] = mapped_column(Integer)
    chain_id: Mapped[str | None] = mapped_column(String(40))
    chain_step: Mapped[int | None] = mapped_column(Integer)

    @property
    def is_terminal(self) -> bool:
        return self.status in TaskStatus.TERMINAL

    def transition(
        self,
        to_status: str,
        *,
        actor: str,
        now: datetime,
        reason: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> EventRow:
        """Move to ``to_status`` and write the event row that records it (inserted with the
        next flush, which writes this task: its status has changed)."""
        row = EventRow(
            task_id=self.id,
            at=now,
            from_status=self.status,
            to_status=to_status,
            actor=actor,
            reason=reason,
            data=data,
        )
        self.status = to_status
        self.updated_at = now
        info = db.session.info
        info.setdefault(UNWRITTEN_EVENTS, []).append(row)
        info.setdefault(TASK_EVENTS, []).append((self, row))
        if to_status in TaskStatus.TERMINAL:
            # Dependents and chains react before this transaction commits (services/workflows).
            info.setdefault(FINISHED_TASKS, []).append(self)
        elif to_status == TaskStatus.PENDING:
            info.setdefault(ROUTABLE_TASKS, []).append((self, now))
        return row

    def to_dict(
        self,
        *,
        events: list[TaskEvent] | None = None,
        attempts: list[TaskAttempt] | None = None,
    ) -> dict[str, Any]:
        data = {
            "task_id": self.id,
            "client_id": self.client_id,
            "task_type": self.task_type,
            "capability_required": self.capability_required,
            "input_data": self.input_data,
            "priority": self.priority,
            "status": self.status,
            "assigned_agent_id": self.assigned_agent_id,
            "assigned_at": isoformat(self.assigned_at),
            "poison": bool(self.poison),
            "attempt": self.attempt,
            "lease_expires_at": isoformat(self.lease_expires_at),
            "progress": self.progress,
            "progress_message": self.progress_message,
            "result_data": self.result_data,
            "error_message": self.error_message,
            "last_error": self.error_message,
            "max_retries": self.max_retries,
            "retry_count": self.retry_count,
            "retry_policy": self.retry_policy,
            "next_retry_at": isoformat(self.next_retry_at),
            "timeout_seconds": self.timeout_seconds,
            "retry_on_timeout": self.retry_on_timeout,
            "timeout_at": isoformat(self.timeout_at),
            "expires_at": isoformat(self.expires_at),
            "routing_strategy": self.routing_strategy,
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
            "claimed_at": isoformat(self.claimed_at),
            "completed_at": isoformat(self.completed_at),
            "cancel_requested_at": isoformat(self.cancel_requested_at),
            "cancelled_at": isoformat(self.cancelled_at),
            "cancelled_by": self.cancelled_by,
            "cancellation_reason": self.cancellation_reason,
            "pending_dependencies": self.pending_dependencies or 0,
            "on_dependency_failure": self.on_dependency_failure or "cancel",
            "template_id": self.template_id,
            "template_version": self.template_version,
            "chain_id": self.chain_id,
            "chain_step": self.chain_step,
        }
        if events is not None:
            data["events"] = [e.to_dict() for e in events]
        if attempts is not None:
            data["attempts"] = [a.to_dict() for a in attempts]
        return data


class TaskEvent(db.Model):
    """One row per transition: who, when, why. Metrics, webhooks and the UI read these."""

    __tablename__ = "task_events"
    __table_args__ = (
        Index("ix_task_events_task", "task_id", "id"),
        # Ends per slice of time (the dashboard), from the index alone.
        Index("ix_task_events_status_at", "to_status", "at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.id,
            "at": isoformat(self.at),
            "from_status": self.from_status,
            "to_status": self.to_status,
            "actor": self.actor,
            "reason": self.reason,
            "data": self.data,
        }


class TaskAttempt(db.Model):
    """One claim of a task by an agent: who ran it, when, and how it ended."""

    __tablename__ = "task_attempts"
    __table_args__ = (
        UniqueConstraint("task_id", "number", name="uq_task_attempts_task_number"),
        # Which tasks an agent must stop: its attempts the server ended lately.
        Index("ix_task_attempts_agent_ended", "agent_id", "ended_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    agent_id: Mapped[str] = mapped_column(String(40))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(16), default=AttemptOutcome.RUNNING)
    error: Mapped[str | None] = mapped_column(Text)
    ended_by: Mapped[str | None] = mapped_column(String(100))

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempt": self.number,
            "agent_id": self.agent_id,
            "started_at": isoformat(self.started_at),
            "ended_at": isoformat(self.ended_at),
            "outcome": self.outcome,
            "error": self.error,
            "ended_by": self.ended_by,
        }


class TaskDependency(db.Model):
    """An edge of the task graph: ``task_id`` waits for ``depends_on_id`` to complete."""

    __tablename__ = "task_dependencies"
    __table_args__ = (
        # Dependents of a task that just finished: the event-driven unblock and cascade.
        Index("ix_task_dependencies_depends_on", "depends_on_id", "task_id"),
    )

    task_id: Mapped[str] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    depends_on_id: Mapped[str] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    # Counted: the dependency's end has been applied to the task's pending count (or it had
    # ended before the task was submitted). A later end of the same dependency is not.
    resolved: Mapped[bool] = mapped_column(Boolean, default=False)


INSERT_EVENTS = plain_insert(TaskEvent)


@event.listens_for(Session, "after_flush")
def write_events(session: Session, _flush: UOWTransaction) -> None:
    """After each flush: insert the events of the transitions it wrote, in one statement
    (after it, so a new task's row is there for its events' foreign key)."""
    rows = session.info.pop(UNWRITTEN_EVENTS, None)
    if rows:
        session.connection().execute(INSERT_EVENTS, [r.row() for r in rows])


@event.listens_for(Session, "after_soft_rollback")
def drop_events(session: Session, _previous: SessionTransaction) -> None:
    """A rolled-back transaction, or savepoint, writes none of its events. (A savepoint
    starts with a flush, so what is unwritten when it rolls back was made inside it.)"""
    session.info.pop(UNWRITTEN_EVENTS, None)


@event.listens_for(Session, "after_transaction_end")
def forget_events(session: Session, transaction: SessionTransaction) -> None:
    """A transaction that ends with events unwritten (its task's change was expired or
    expunged before any flush) must not hand them to the next one."""
    if transaction.parent is None and session.info.get(UNWRITTEN_EVENTS):
        rows = session.info.pop(UNWRITTEN_EVENTS)
        log.warning(
            "%d task events dropped: their transaction ended without writing their tasks "
            "(first: task %s to %s)",
            len(rows),
            rows[0].task_id,
            rows[0].to_status,
        )
