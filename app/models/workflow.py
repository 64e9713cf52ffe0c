"""Task templates and task chains."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.lib.clock import isoformat
from app.models.base import JSONType, UTCDateTime


class TaskTemplate(db.Model):
    """Defaults for a kind of task; each edit bumps ``version``, tasks record theirs."""

    __tablename__ = "task_templates"
    __table_args__ = (
        UniqueConstraint("client_id", "name", name="uq_task_templates_client_name"),
        Index("ix_task_templates_client_created", "client_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    task_type: Mapped[str] = mapped_column(String(200))
    capability_required: Mapped[str] = mapped_column(String(200))
    default_input_data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    default_priority: Mapped[int] = mapped_column(Integer, default=5)
    default_max_retries: Mapped[int] = mapped_column(Integer, default=3)
    default_retry_policy: Mapped[str] = mapped_column(String(16), default="exponential")
    default_timeout_seconds: Mapped[int] = mapped_column(Integer, default=300)
    # Plain JSON, not JSONB, on PostgreSQL too: JSONB reorders object keys, and the order of
    # a schema's properties is the order of the form generated from it.
    input_schema: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer, default=1)
    times_used: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    def to_dict(self) -> dict[str, Any]:
        return {
            "template_id": self.id,
            "client_id": self.client_id,
            "name": self.name,
            "description": self.description,
            "task_type": self.task_type,
            "capability_required": self.capability_required,
            "default_input_data": self.default_input_data or {},
            "default_priority": self.default_priority,
            "default_max_retries": self.default_max_retries,
            "default_retry_policy": self.default_retry_policy,
            "default_timeout_seconds": self.default_timeout_seconds,
            "input_schema": self.input_schema,
            "version": self.version,
            "times_used": self.times_used,
            "created_by": self.created_by,
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
        }


class ChainStatus:
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    ALL = (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED)
    TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})


class TaskChain(db.Model):
    """Steps run one after another; each step's task gets the previous step's result."""

    __tablename__ = "task_chains"
    __table_args__ = (
        Index("ix_task_chains_client_created", "client_id", "created_at", "id"),
        Index("ix_task_chains_status_created", "status", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=ChainStatus.PENDING)
    # The step whose task is running or next (0-based); len(steps) once completed.
    current_step: Mapped[int] = mapped_column(Integer, default=0)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    # One entry per finished step: {"step", "task_id", "status", "result_data"}.
    step_results: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancellation_reason: Mapped[str | None] = mapped_column(Text)
