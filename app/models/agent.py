"""Agents and their capabilities."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    inspect,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db
from app.lib.clock import isoformat, utcnow
from app.models.base import JSONType, UTCDateTime


class AgentStatus:
    AVAILABLE = "AVAILABLE"
    BUSY = "BUSY"
    INACTIVE = "INACTIVE"
    ALL = (AVAILABLE, BUSY, INACTIVE)


# Seed 002: what an agent reports about its health, and the status it maps to.
HEALTH_TO_STATUS = {
    "ACTIVE": AgentStatus.AVAILABLE,
    "DEGRADED": AgentStatus.BUSY,
    "OFFLINE": AgentStatus.INACTIVE,
}


class Agent(db.Model):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    public_key: Mapped[str] = mapped_column(Text, unique=True)
    status: Mapped[str] = mapped_column(String(16), default=AgentStatus.AVAILABLE, index=True)
    health_status: Mapped[str | None] = mapped_column(String(16))
    last_heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime)
    uptime_ms: Mapped[int | None] = mapped_column(db.BigInteger)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    max_concurrent_tasks: Mapped[int] = mapped_column(Integer, default=1)
    # Tasks ACTIVE for this agent; kept in step by dispatch under the agent row lock.
    active_tasks: Mapped[int] = mapped_column(Integer, default=0)
    trust_score: Mapped[float] = mapped_column(Float, default=0.5)
    total_tasks_completed: Mapped[int] = mapped_column(Integer, default=0)
    total_tasks_failed: Mapped[int] = mapped_column(Integer, default=0)
    avg_completion_time_seconds: Mapped[float | None] = mapped_column(Float)
    last_task_completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    registered_by_key_id: Mapped[str | None] = mapped_column(String(40), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    capabilities: Mapped[list[Capability]] = relationship(
        back_populates="agent", cascade="all, delete-orphan", order_by="Capability.name"
    )

    @property
    def capability_names(self) -> list[str]:
        """The names, sorted: from the capabilities if loaded, else read alone (a claim or a
        heartbeat needs only these, not the schemas and prices of whole rows)."""
        if "capabilities" not in inspect(self).unloaded:
            return [c.name for c in self.capabilities]
        return list(
            db.session.scalars(
                select(Capability.name)
                .where(Capability.agent_id == self.id)
                .order_by(Capability.name)
            )
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent_id": self.id,
            "display_name": self.display_name,
            "public_key": self.public_key,
            "status": self.status,
            "health_status": self.health_status,
            "last_heartbeat": isoformat(self.last_heartbeat),
            "uptime_ms": self.uptime_ms,
            "max_concurrent_tasks": self.max_concurrent_tasks,
            "active_tasks": self.active_tasks,
            "trust_score": self.trust_score,
            "total_tasks_completed": self.total_tasks_completed,
            "total_tasks_failed": self.total_tasks_failed,
            "avg_completion_time_seconds": self.avg_completion_time_seconds,
            "last_task_completed_at": isoformat(self.last_task_completed_at),
            "capabilities": [c.to_dict() for c in self.capabilities],
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
        }


class Capability(db.Model):
    __tablename__ = "capabilities"
    __table_args__ = (
        UniqueConstraint("agent_id", "name", name="uq_capabilities_agent_name"),
        Index("ix_capabilities_name_agent", "name", "agent_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str | None] = mapped_column(String(50))
    description: Mapped[str | None] = mapped_column(Text)
    input_schema: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    output_schema: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    pricing_model: Mapped[str | None] = mapped_column(String(50))
    price: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    agent: Mapped[Agent] = relationship(back_populates="capabilities")

    def to_dict(self) -> dict[str, Any]:
        return {
            "capability_id": self.id,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "input_schema": self.input_schema,
            "output_schema": self.output_schema,
            "pricing_model": self.pricing_model,
            "price": self.price,
            "created_at": isoformat(self.created_at),
        }
