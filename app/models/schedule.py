"""Schedules (cron, interval or one-time) and the executions they fired."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.lib.clock import isoformat
from app.models.base import JSONType, UTCDateTime
from app.models.task import Task, TaskStatus


class ScheduleStatus:
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"  # a one-time schedule that fired
    FAILED = "FAILED"  # could not fire: a one-time run missed under `skip`, or a bad task
    DELETED = "DELETED"
    ALL = (ACTIVE, PAUSED, COMPLETED, FAILED, DELETED)
    VISIBLE = (ACTIVE, PAUSED, COMPLETED, FAILED)


class MisfirePolicy:
    """What a schedule does about due times missed while nothing fired (downtime)."""

    FIRE_ONCE = "fire_once"  # one catch-up run for all of them
    SKIP = "skip"  # none; carry on from the next due time
    FIRE_ALL = "fire_all"  # one run each, the latest 100 at most
    ALL = (FIRE_ONCE, SKIP, FIRE_ALL)


class OverlapPolicy:
    ALLOW = "allow"
    SKIP = "skip"  # no new run while the previous run's task is unfinished
    ALL = (ALLOW, SKIP)


class ExecutionStatus:
    """An execution's status follows its task; SKIPPED ones never made one."""

    PENDING = "PENDING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    ALL = (PENDING, COMPLETED, FAILED, SKIPPED)
    # Task statuses that count as a failed run.
    FAILED_TASK = (TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED)

    @classmethod
    def of(cls, task: Task | None) -> str:
        if task is None:
            return cls.SKIPPED
        if task.status == TaskStatus.COMPLETED:
            return cls.COMPLETED
        if task.status in cls.FAILED_TASK:
            return cls.FAILED
        return cls.PENDING


class ExecutionTrigger:
    SCHEDULE = "schedule"  # a due time, on time
    CATCH_UP = "catch_up"  # a due time missed during downtime, fired late
    RUN_NOW = "run_now"
    ALL = (SCHEDULE, CATCH_UP, RUN_NOW)


class Schedule(db.Model):
    __tablename__ = "schedules"
    __table_args__ = (
        # The firing query: ACTIVE schedules whose next run is due, earliest first.
        Index("ix_schedules_due", "status", "next_run_at"),
        Index("ix_schedules_client_created", "client_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    cron_expression: Mapped[str | None] = mapped_column(String(200))
    interval_seconds: Mapped[int | None] = mapped_column(Integer)
    run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # Interval schedules are due at anchor + k x interval.
    anchor_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    task_type: Mapped[str] = mapped_column(String(200))
    capability_required: Mapped[str] = mapped_column(String(200))
    input_data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=5)
    max_retries: Mapped[int] = mapped_column(Integer, default=3)
    retry_policy: Mapped[str] = mapped_column(String(20), default="exponential")
    timeout_seconds: Mapped[int] = mapped_column(Integer, default=300)
    retry_on_timeout: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_in_seconds: Mapped[int | None] = mapped_column(Integer)
    # Runs are made from this template (its defaults under the fields above), if set.
    template_id: Mapped[str | None] = mapped_column(String(40))
    misfire_policy: Mapped[str] = mapped_column(String(20), default=MisfirePolicy.FIRE_ONCE)
    overlap_policy: Mapped[str] = mapped_column(String(20), default=OverlapPolicy.ALLOW)
    status: Mapped[str] = mapped_column(String(16), default=ScheduleStatus.ACTIVE)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def kind(self) -> str:
        """cron, interval or once."""
        if self.cron_expression:
            return "cron"
        if self.interval_seconds:
            return "interval"
        return "once"

    def task_fields(self) -> dict[str, Any]:
        """The submit fields of the task each run creates."""
        return {
            "client_id": self.client_id,
            "task_type": self.task_type,
            "capability_required": self.capability_required,
            "input_data": self.input_data or {},
            "priority": self.priority,
            "max_retries": self.max_retries,
            "retry_policy": self.retry_policy,
            "timeout_seconds": self.timeout_seconds,
            "retry_on_timeout": self.retry_on_timeout,
            "expires_in_seconds": self.expires_in_seconds,
        }

    def to_dict(self, *, total_runs: int = 0, failed_runs: int = 0) -> dict[str, Any]:
        return {
            "schedule_id": self.id,
            "client_id": self.client_id,
            "description": self.description,
            "kind": self.kind,
            "cron_expression": self.cron_expression,
            "interval_seconds": self.interval_seconds,
            "run_at": isoformat(self.run_at),
            "timezone": self.timezone,
            "template_id": self.template_id,
            **{k: v for k, v in self.task_fields().items() if k != "client_id"},
            "misfire_policy": self.misfire_policy,
            "overlap_policy": self.overlap_policy,
            "status": self.status,
            "next_run_at": isoformat(self.next_run_at),
            "last_run_at": isoformat(self.last_run_at),
            "last_error": self.last_error,
            "total_runs": total_runs,
            "failed_runs": failed_runs,
            "created_by": self.created_by,
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
        }


class ScheduleExecution(db.Model):
    """One firing of a schedule: the unique (schedule, due time) makes it happen once."""

    __tablename__ = "schedule_executions"
    __table_args__ = (
        UniqueConstraint("schedule_id", "scheduled_for", name="uq_schedule_executions_due"),
        Index("ix_schedule_executions_schedule_fired", "schedule_id", "fired_at"),
        # The overlap check: a schedule's latest run that made a task, past any skipped ones.
        Index(
            "ix_schedule_executions_schedule_ran",
            "schedule_id",
            "fired_at",
            postgresql_where=text("task_id IS NOT NULL"),
            sqlite_where=text("task_id IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    schedule_id: Mapped[str] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime)
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    trigger: Mapped[str] = mapped_column(String(16), default=ExecutionTrigger.SCHEDULE)
    task_id: Mapped[str | None] = mapped_column(
        ForeignKey("tasks.id", ondelete="SET NULL"), index=True
    )
    note: Mapped[str | None] = mapped_column(Text)

    def to_dict(self, task: Task | None) -> dict[str, Any]:
        return {
            "execution_id": self.id,
            "schedule_id": self.schedule_id,
            "task_id": self.task_id,
            "scheduled_for": isoformat(self.scheduled_for),
            "executed_at": isoformat(self.fired_at),
            "lateness_ms": round((self.fired_at - self.scheduled_for).total_seconds() * 1000),
            "trigger": self.trigger,
            "status": ExecutionStatus.of(task),
            "task_status": task.status if task else None,
            "result_data": task.result_data if task else None,
            "error_message": task.error_message if task else self.note,
            "note": self.note,
        }
