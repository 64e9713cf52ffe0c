"""Webhooks: subscriptions, the outbox of events, and every delivery attempt.

An event is written once (``WebhookEvent``, its signed body fixed at that moment) in the
transaction that caused it, with one ``WebhookDelivery`` per subscribed webhook; the
delivery rows are the outbox the RQ job and the sweep work from, so a flushed Redis or a
crashed worker delays a delivery but never loses it. ``WebhookAttempt`` keeps each HTTP
try with what was sent and what came back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db
from app.lib.clock import isoformat, utcnow
from app.models.base import BigIntPK, JSONType, UTCDateTime


class WebhookEvents:
    """What a webhook may subscribe to."""

    TASK_CREATED = "task.created"
    TASK_ASSIGNED = "task.assigned"
    TASK_COMPLETED = "task.completed"
    TASK_FAILED = "task.failed"
    TASK_CANCELLED = "task.cancelled"
    TASK_TIMED_OUT = "task.timed_out"
    TASK_EXPIRED = "task.expired"
    SCHEDULE_FIRED = "schedule.fired"
    AGENT_OFFLINE = "agent.offline"
    ALL = (
        TASK_CREATED,
        TASK_ASSIGNED,
        TASK_COMPLETED,
        TASK_FAILED,
        TASK_CANCELLED,
        TASK_TIMED_OUT,
        TASK_EXPIRED,
        SCHEDULE_FIRED,
        AGENT_OFFLINE,
    )
    # Sent by "test ping" only; nobody subscribes to it.
    PING = "webhook.ping"


class DeliveryStatus:
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    ALL = (PENDING, DELIVERED, FAILED)


class Webhook(db.Model):
    """A URL that receives the events it subscribes to, for its owner.

    The owner is an agent (events of the tasks it runs, new tasks it could take, its going
    offline), a client (its tasks and schedules) or nobody (an admin's: everything).
    """

    __tablename__ = "webhooks"
    __table_args__ = (
        Index("ix_webhooks_agent", "agent_id"),
        Index("ix_webhooks_client", "client_id"),
        Index("ix_webhooks_active", "active"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    agent_id: Mapped[str | None] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    client_id: Mapped[str | None] = mapped_column(String(200))
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSONType)
    description: Mapped[str | None] = mapped_column(String(200))
    # Fernet token of the signing secret (services/webhooks seals it with SECRET_KEY).
    secret_sealed: Mapped[str] = mapped_column(Text)
    # The secret's last four characters, so an operator can tell which one is in use.
    secret_hint: Mapped[str] = mapped_column(String(8))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def owner(self) -> str:
        if self.agent_id:
            return f"agent:{self.agent_id}"
        if self.client_id:
            return f"client:{self.client_id}"
        return "global"

    def to_dict(self) -> dict[str, Any]:
        return {
            "webhook_id": self.id,
            "agent_id": self.agent_id,
            "client_id": self.client_id,
            "owner": self.owner,
            "url": self.url,
            "events": list(self.events or []),
            "description": self.description,
            "secret_hint": f"…{self.secret_hint}",
            "active": self.active,
            "disabled_reason": self.disabled_reason,
            "disabled_at": isoformat(self.disabled_at),
            "consecutive_failures": self.consecutive_failures,
            "last_success_at": isoformat(self.last_success_at),
            "last_failure_at": isoformat(self.last_failure_at),
            "created_by": self.created_by,
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
        }


class WebhookEvent(db.Model):
    """One event, with the exact body every delivery of it sends (and signs)."""

    __tablename__ = "webhook_events"
    __table_args__ = (Index("ix_webhook_events_created", "created_at"),)

    # Sent as X-Webhook-Id: the same for every delivery and retry of this event.
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event: Mapped[str] = mapped_column(String(40))
    task_id: Mapped[str | None] = mapped_column(String(40))
    agent_id: Mapped[str | None] = mapped_column(String(40))
    schedule_id: Mapped[str | None] = mapped_column(String(40))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(db.Model):
    """One event on its way to one webhook: the outbox row."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # The sweep: pending deliveries that are due.
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        # A webhook's deliveries, newest first.
        Index("ix_webhook_deliveries_webhook", "webhook_id", "created_at", "id"),
        Index("ix_webhook_deliveries_event", "event_id"),
        # Deliveries by status per webhook (the webhooks list), from the index alone.
        Index("ix_webhook_deliveries_webhook_status", "webhook_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Held while one sender works on it; a crashed sender's lease simply runs out.
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When a job for it was last put on the queue; the sweep queues it again if nothing
    # took it (Redis flushed, worker gone).
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_duration_ms: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    # A manual re-send is a new delivery of the same event.
    redelivery_of: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def to_dict(self, attempts: list[WebhookAttempt] | None = None) -> dict[str, Any]:
        data = {
            "delivery_id": self.id,
            "webhook_id": self.webhook_id,
            "event_id": self.event_id,
            "event": self.event,
            "status": self.status,
            "attempt": self.attempts,
            "max_attempts": self.max_attempts,
            "status_code": self.last_status_code,
            "duration_ms": self.last_duration_ms,
            "error": self.last_error,
            "next_attempt_at": isoformat(self.next_attempt_at)
            if self.status == DeliveryStatus.PENDING
            else None,
            "redelivery_of": self.redelivery_of,
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
            "delivered_at": isoformat(self.delivered_at),
        }
        if attempts is not None:
            data["attempts"] = [a.to_dict() for a in attempts]
        return data


class WebhookAttempt(db.Model):
    """One HTTP request of a delivery and its outcome."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "number"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    # delivered | retry | gave_up | permanent | disabled
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    request_headers: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    response_headers: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    response_excerpt: Mapped[str | None] = mapped_column(Text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempt": self.number,
            "started_at": isoformat(self.started_at),
            "duration_ms": self.duration_ms,
            "status_code": self.status_code,
            "outcome": self.outcome,
            "error": self.error,
            "request_headers": self.request_headers,
            "response_headers": self.response_headers,
            "response_excerpt": self.response_excerpt,
        }
