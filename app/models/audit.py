"""The audit log: who did what to which thing, from where, and how it ended.

One row per state-changing request (API and console, refused ones included) and per
sign-in or sign-out. Rows are only ever added; the app deletes them only when they age
past the retention period (services/audit.prune).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.lib.clock import isoformat, utcnow
from app.models.base import BigIntPK, JSONType, UTCDateTime


class AuditOutcome:
    """How the action ended: done, refused (4xx: auth, access, input, conflict), failed (5xx)."""

    OK = "ok"
    REFUSED = "refused"
    FAILED = "failed"
    ALL = (OK, REFUSED, FAILED)


class AuditEvent(db.Model):
    """One audited action. ``summary`` holds a small before/after, never secrets or bodies."""

    __tablename__ = "audit_events"
    # Every filter of the audit page is an index prefix followed by the newest-first order,
    # so a filtered page is an index range scan however large the table grows.
    __table_args__ = (
        Index("ix_audit_events_created", "created_at", "id"),
        Index("ix_audit_events_actor", "actor", "created_at", "id"),
        Index("ix_audit_events_action", "action", "created_at", "id"),
        Index("ix_audit_events_target", "target_type", "target_id", "created_at", "id"),
        Index("ix_audit_events_outcome", "outcome", "created_at", "id"),
        Index("ix_audit_events_address", "address", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # operator:<email>, client:<id>, agent:<id>, admin:<key name>, or anonymous.
    actor: Mapped[str] = mapped_column(String(400))
    actor_role: Mapped[str | None] = mapped_column(String(16))
    key_id: Mapped[str | None] = mapped_column(String(40))
    # No foreign keys: the trail outlives the users and keys it names.
    user_id: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(100))
    target_type: Mapped[str | None] = mapped_column(String(40))
    target_id: Mapped[str | None] = mapped_column(String(200))
    status_code: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    address: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str | None] = mapped_column(String(10))
    path: Mapped[str | None] = mapped_column(String(500))
    request_id: Mapped[str | None] = mapped_column(String(100))

    @property
    def target(self) -> str | None:
        if not self.target_type:
            return None
        return f"{self.target_type}:{self.target_id}" if self.target_id else self.target_type

    def to_dict(self) -> dict[str, Any]:
        return {
            "audit_id": self.id,
            "created_at": isoformat(self.created_at),
            "actor": self.actor,
            "actor_role": self.actor_role,
            "key_id": self.key_id,
            "user_id": self.user_id,
            "action": self.action,
            "target_type": self.target_type,
            "target_id": self.target_id,
            "status_code": self.status_code,
            "outcome": self.outcome,
            "summary": self.summary,
            "address": self.address,
            "method": self.method,
            "path": self.path,
            "request_id": self.request_id,
        }
