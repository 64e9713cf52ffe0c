"""Trust: every change of an agent's trust score, and routing settings per capability."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.lib.clock import isoformat, utcnow
from app.models.base import BigIntPK, UTCDateTime


class TrustEvent:
    """Why a trust score changed."""

    TASK_COMPLETED = "task_completed"
    TASK_FAILED = "task_failed"
    TASK_TIMED_OUT = "task_timed_out"
    AGENT_LOST = "agent_lost"
    POISON_REFUND = "poison_refund"
    MANUAL_ADJUSTMENT = "manual_adjustment"
    ALL = (
        TASK_COMPLETED,
        TASK_FAILED,
        TASK_TIMED_OUT,
        AGENT_LOST,
        POISON_REFUND,
        MANUAL_ADJUSTMENT,
    )


class TrustRecord(db.Model):
    """One change of one agent's trust score: before, after, why, and who."""

    __tablename__ = "trust_records"
    __table_args__ = (
        Index("ix_trust_records_agent_created", "agent_id", "created_at", "id"),
        Index("ix_trust_records_task", "task_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(32))
    task_id: Mapped[str | None] = mapped_column(String(40))
    trust_delta: Mapped[float] = mapped_column(Float)
    trust_score_before: Mapped[float] = mapped_column(Float)
    trust_score_after: Mapped[float] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def to_dict(self) -> dict[str, Any]:
        return {
            "record_id": self.id,
            "agent_id": self.agent_id,
            "event_type": self.event_type,
            "task_id": self.task_id,
            "trust_delta": self.trust_delta,
            "trust_score_before": self.trust_score_before,
            "trust_score_after": self.trust_score_after,
            "reason": self.reason,
            "actor": self.actor,
            "created_at": isoformat(self.created_at),
        }


class CapabilityRouting(db.Model):
    """Routing settings of one capability. Its row is also the lock that serialises the
    routing of that capability's tasks, so two routers never hand out the same slot."""

    __tablename__ = "capability_routing"

    capability: Mapped[str] = mapped_column(String(200), primary_key=True)
    # None: the server-wide default (ROUTING_DEFAULT_STRATEGY).
    default_strategy: Mapped[str | None] = mapped_column(String(40))
    # Round robin: candidates are a ring ordered by agent id; the next task goes to the
    # first candidate after this one.
    round_robin_after: Mapped[str | None] = mapped_column(String(40))
    updated_by: Mapped[str | None] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def to_dict(self) -> dict[str, Any]:
        return {
            "capability": self.capability,
            "default_strategy": self.default_strategy,
            "updated_by": self.updated_by,
            "updated_at": isoformat(self.updated_at),
        }
