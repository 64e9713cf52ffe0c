"""Webhooks: subscriptions, the transactional outbox, signing and delivery.

How an event travels:
1. A state change records what happened: ``Task.transition`` notes its event row in the
   session, and ``emit`` notes the others (``schedule.fired``, ``agent.offline``).
2. Before the transaction commits, ``write_outbox`` turns them into one ``WebhookEvent``
   (the body, fixed and signed as is on every try) and one ``WebhookDelivery`` per
   subscribed webhook, in the same transaction: no state change without its event, and no
   event for a change that rolled back.
3. After the commit the delivery ids go on the RQ queue (``dispatch``). The job calls
   ``deliver``: a conditional UPDATE leases the delivery to one sender, the request goes out
   with no transaction open, and the outcome is recorded with the attempt.
4. Every maintenance tick, ``queue_due`` puts back on the queue whatever is due and not
   taken: retries whose backoff is over, and deliveries whose job was lost (Redis flushed,
   worker killed). Redis is only ever a doorbell.

Delivery is at least once: a sender that dies after the receiver answered but before the
outcome was written sends again when its lease runs out. Receivers de-duplicate with
``X-Webhook-Id``, the same on every try and redelivery of an event.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import secrets as pysecrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from app.extensions import db
from app.lib import safe_http
from app.lib.clock import as_utc, isoformat, utcnow
from app.lib.cursors import BadCursor, decode_cursor, encode_cursor
from app.lib.sealing import Sealer, Unsealable
from app.lib.tokens import new_id
from app.models import (
    TASK_EVENTS,
    Agent,
    Capability,
    DeliveryStatus,
    EventRow,
    Role,
    Task,
    TaskStatus,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
    WebhookEvents,
)
from app.services import audit, metrics
from app.services.errors import Conflict, NotFound, NotPermitted, invalid
from app.services.principal import Principal, require_agent

log = logging.getLogger(__name__)

# Session.info keys: events noted by emit(), and deliveries to queue after the commit.
EMITTED = "ains_webhook_emitted"
QUEUED = "ains_webhook_queued"

SECRET_PREFIX = "whsec_"
MIN_SECRET_LENGTH = 16
MAX_SECRET_LENGTH = 200
MAX_URL_LENGTH = 2000
EXCERPT_CHARS = 2000
DUE_BATCH = 500
PRUNE_BATCH = 1000


@dataclass
class WebhookSettings:
    """Delivery tunables, filled from the app config at start-up."""

    timeout_seconds: float = 10.0
    max_attempts: int = 3
    retry_base_seconds: float = 10.0
    retry_max_seconds: float = 3600.0
    disable_after_failures: int = 20
    allow_private: bool = False
    max_response_bytes: int = 64 * 1024
    retention_days: int = 30
    # A queued delivery no job has taken after this long is queued again.
    requeue_after_seconds: float = 5.0
    sealer: Sealer | None = None
    # Puts delivery ids on the job queue (set by create_app; None: the sweep alone sends).
    dispatcher: Callable[[list[str]], None] | None = None
    # The delivery ids whose job still waits in the queue (None: assume none does).
    jobs_waiting: Callable[[list[str]], set[str]] | None = None
    rng: random.Random = field(default_factory=random.Random)

    def configure(
        self,
        config: Mapping[str, Any],
        dispatcher: Callable[[list[str]], None] | None,
        jobs_waiting: Callable[[list[str]], set[str]] | None = None,
    ) -> None:
        self.jobs_waiting = jobs_waiting
        self.timeout_seconds = float(config["WEBHOOK_TIMEOUT_SECONDS"])
        self.max_attempts = config["WEBHOOK_MAX_ATTEMPTS"]
        self.retry_base_seconds = float(config["WEBHOOK_RETRY_BASE_SECONDS"])
        self.retry_max_seconds = float(config["WEBHOOK_RETRY_MAX_SECONDS"])
        self.disable_after_failures = config["WEBHOOK_DISABLE_AFTER_FAILURES"]
        self.allow_private = config["WEBHOOK_ALLOW_PRIVATE"]
        self.max_response_bytes = config["WEBHOOK_MAX_RESPONSE_BYTES"]
        self.retention_days = config["WEBHOOK_RETENTION_DAYS"]
        self.sealer = Sealer([config["SECRET_KEY"], *config.get("SECRET_KEY_FALLBACKS", [])])
        self.dispatcher = dispatcher

    @property
    def lease_seconds(self) -> float:
        """How long one sender holds a delivery: the request's deadline and a margin."""
        return self.timeout_seconds + 20.0

    def seal(self, secret: str) -> str:
        assert self.sealer is not None, "webhook settings not configured"
        return self.sealer.seal(secret)

    def open(self, sealed: str) -> str:
        assert self.sealer is not None, "webhook settings not configured"
        return self.sealer.open(sealed)


webhook_settings = WebhookSettings()


# ---------------------------------------------------------------------------------------
# Signing
# ---------------------------------------------------------------------------------------


def sign(secret: str, body: bytes) -> str:
    """The X-Webhook-Signature value: ``sha256=<hex HMAC-SHA256 of the raw body>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def generate_secret() -> str:
    return SECRET_PREFIX + pysecrets.token_urlsafe(32)


# ---------------------------------------------------------------------------------------
# The outbox: what happened in a transaction becomes events and deliveries in it
# ---------------------------------------------------------------------------------------


@dataclass
class Occurrence:
    """Something a webhook may hear about, with who it concerns."""

    event: str
    at: datetime
    data: dict[str, Any]
    task_id: str | None = None
    agent_id: str | None = None
    schedule_id: str | None = None
    client_id: str | None = None
    capability: str | None = None


def emit(
    event: str,
    *,
    at: datetime,
    data: dict[str, Any],
    task_id: str | None = None,
    agent_id: str | None = None,
    schedule_id: str | None = None,
    client_id: str | None = None,
) -> None:
    """Note an event for the webhooks; written to the outbox when the transaction commits."""
    db.session.info.setdefault(EMITTED, []).append(
        Occurrence(
            event=event,
            at=at,
            data=data,
            task_id=task_id,
            agent_id=agent_id,
            schedule_id=schedule_id,
            client_id=client_id,
        )
    )


def task_occurrences(task: Task, event: EventRow) -> list[Occurrence]:
    """The webhook events one task transition means (most mean none)."""
    names: list[str] = []
    to_status = event.to_status
    outcome = (event.data or {}).get("outcome")
    if event.from_status is None:
        names.append(WebhookEvents.TASK_CREATED)
    elif to_status == TaskStatus.ASSIGNED:
        names.append(WebhookEvents.TASK_ASSIGNED)
    if outcome == "timed_out" and to_status in (TaskStatus.PENDING, TaskStatus.FAILED):
        names.append(WebhookEvents.TASK_TIMED_OUT)
    if event.from_status is not None or to_status in TaskStatus.TERMINAL:
        terminal = {
            TaskStatus.COMPLETED: WebhookEvents.TASK_COMPLETED,
            TaskStatus.FAILED: WebhookEvents.TASK_FAILED,
            TaskStatus.CANCELLED: WebhookEvents.TASK_CANCELLED,
            TaskStatus.EXPIRED: WebhookEvents.TASK_EXPIRED,
        }.get(to_status)
        if terminal:
            names.append(terminal)
    if not names:
        return []
    agent_id = (event.data or {}).get("agent_id") or task.assigned_agent_id
    data: dict[str, Any] = {
        "status": to_status,
        "from_status": event.from_status,
        "reason": event.reason,
        "actor": event.actor,
        "client_id": task.client_id,
        "task_type": task.task_type,
        "capability_required": task.capability_required,
        "priority": task.priority,
        "attempt": task.attempt,
        "retry_count": task.retry_count,
        "max_retries": task.max_retries,
    }
    if to_status == TaskStatus.COMPLETED:
        data["result_data"] = task.result_data
        data["completed_at"] = isoformat(task.completed_at)
    elif to_status in (TaskStatus.FAILED, TaskStatus.EXPIRED) or outcome == "timed_out":
        data["error_message"] = task.error_message
    if to_status == TaskStatus.CANCELLED:
        data["cancellation_reason"] = task.cancellation_reason
    if to_status == TaskStatus.PENDING and event.data and "retry_in_seconds" in event.data:
        data["retry_in_seconds"] = event.data["retry_in_seconds"]
    return [
        Occurrence(
            event=name,
            at=event.at,
            data=data,
            task_id=task.id,
            agent_id=agent_id,
            client_id=task.client_id,
            capability=task.capability_required,
        )
        for name in names
    ]


# One id, not whole rows: the look costs a fraction of the entity query (see write_outbox).
# ORM columns, so that running it autoflushes as that query would.
ANY_ACTIVE_WEBHOOK = select(Webhook.id).where(Webhook.active.is_(True)).limit(1)


def write_outbox(session: Session) -> None:
    """Before commit: write an event and its deliveries for every subscribed webhook."""
    noted: list[tuple[Task, EventRow]] = session.info.pop(TASK_EVENTS, None) or []
    occurrences: list[Occurrence] = session.info.pop(EMITTED, None) or []
    for task, event in noted:
        occurrences.extend(task_occurrences(task, event))
    if not occurrences:
        return
    # Most deployments have few webhooks or none: a cheap look first (in this
    # transaction, after an autoflush, as the full query below).
    if session.execute(ANY_ACTIVE_WEBHOOK).first() is None:
        return
    kinds = {o.event for o in occurrences}
    hooks = [
        h
        for h in session.scalars(
            select(Webhook).where(Webhook.active.is_(True), concerned(occurrences))
        )
        if kinds.intersection(h.events or ())
    ]
    if not hooks:
        return
    capabilities = agent_capabilities(session, hooks, kinds)
    now = utcnow()
    planned = [
        (new_event(o), audience)
        for o in occurrences
        if (audience := [h for h in hooks if hears(h, o, capabilities)])
    ]
    if not planned:
        return
    # Events first: no relationship tells the unit of work that deliveries point at them.
    session.add_all(event for event, _ in planned)
    session.flush()
    deliveries = [new_delivery(h.id, event, now) for event, audience in planned for h in audience]
    session.add_all(deliveries)
    session.info.setdefault(QUEUED, []).extend(d.id for d in deliveries)


def concerned(occurrences: list[Occurrence]) -> Any:
    """SQL narrowing the active webhooks to those whose owner these events may concern:
    global ones, the clients' and agents' involved, and (for new tasks) agents' ones."""
    clients = {o.client_id for o in occurrences if o.client_id}
    agents = {o.agent_id for o in occurrences if o.agent_id}
    conditions = [Webhook.agent_id.is_(None) & Webhook.client_id.is_(None)]
    if clients:
        conditions.append(Webhook.client_id.in_(clients))
    if any(o.event == WebhookEvents.TASK_CREATED for o in occurrences):
        conditions.append(Webhook.agent_id.is_not(None))  # by capability, checked after
    elif agents:
        conditions.append(Webhook.agent_id.in_(agents))
    return or_(*conditions)


def agent_capabilities(
    session: Session, hooks: list[Webhook], kinds: set[str]
) -> dict[str, set[str]]:
    """Capabilities of agents whose webhooks listen for new tasks they could take."""
    agent_ids = {h.agent_id for h in hooks if h.agent_id and WebhookEvents.TASK_CREATED in h.events}
    if WebhookEvents.TASK_CREATED not in kinds or not agent_ids:
        return {}
    found: dict[str, set[str]] = {}
    for agent_id, name in session.execute(
        select(Capability.agent_id, Capability.name).where(Capability.agent_id.in_(agent_ids))
    ):
        found.setdefault(agent_id, set()).add(name)
    return found


def hears(hook: Webhook, occurrence: Occurrence, capabilities: dict[str, set[str]]) -> bool:
    """Does this webhook receive this event? Its subscription and its owner's scope say."""
    if occurrence.event not in (hook.events or ()):
        return False
    if hook.agent_id:
        if occurrence.event == WebhookEvents.TASK_CREATED:
            return occurrence.capability in capabilities.get(hook.agent_id, ())
        return occurrence.agent_id == hook.agent_id
    if hook.client_id:
        return occurrence.client_id == hook.client_id
    return True


def new_event(occurrence: Occurrence) -> WebhookEvent:
    event_id = new_id("evt")
    body = {
        "event": occurrence.event,
        "event_id": event_id,
        "task_id": occurrence.task_id,
        "agent_id": occurrence.agent_id,
        "timestamp": isoformat(occurrence.at),
        "data": occurrence.data,
    }
    if occurrence.schedule_id:
        body["schedule_id"] = occurrence.schedule_id
    return WebhookEvent(
        id=event_id,
        event=occurrence.event,
        task_id=occurrence.task_id,
        agent_id=occurrence.agent_id,
        schedule_id=occurrence.schedule_id,
        body=json.dumps(body, separators=(",", ":"), default=str),
        created_at=occurrence.at,
    )


def new_delivery(
    webhook_id: str, event: WebhookEvent, now: datetime, redelivery_of: str | None = None
) -> WebhookDelivery:
    return WebhookDelivery(
        id=new_id("whd"),
        webhook_id=webhook_id,
        event_id=event.id,
        event=event.event,
        status=DeliveryStatus.PENDING,
        attempts=0,
        max_attempts=webhook_settings.max_attempts,
        next_attempt_at=now,
        # The commit queues it; the sweep steps in only if that job goes missing.
        enqueued_at=now,
        redelivery_of=redelivery_of,
        created_at=now,
        updated_at=now,
    )


def queue_committed(session: Session) -> None:
    """After commit: put the new deliveries on the job queue."""
    ids = session.info.pop(QUEUED, None)
    if ids:
        dispatch(ids)


def forget(session: Session) -> None:
    """After rollback: what was noted never happened."""
    for key in (TASK_EVENTS, EMITTED, QUEUED):
        session.info.pop(key, None)


def dispatch(ids: list[str]) -> None:
    """Queue delivery jobs; a failure only delays them (the sweep queues them again)."""
    if not ids or webhook_settings.dispatcher is None:
        return
    try:
        webhook_settings.dispatcher(ids)
    except Exception as exc:  # Redis down: the outbox rows are safe in the database
        log.warning("could not queue %d webhook deliveries (%s); the sweep will", len(ids), exc)


# ---------------------------------------------------------------------------------------
# Sending
# ---------------------------------------------------------------------------------------


@dataclass
class Outgoing:
    """A leased delivery, ready to send with no transaction open."""

    delivery_id: str
    webhook_id: str
    attempt: int
    max_attempts: int
    url: str
    body: bytes
    headers: dict[str, str]
    problem: str | None = None  # set when it cannot be sent at all (secret unreadable)


@dataclass
class Result:
    status_code: int | None
    duration_ms: int
    outcome: str  # delivered | retry | permanent | disabled
    error: str | None = None
    response_headers: dict[str, str] | None = None
    excerpt: str | None = None
    retry_after: float | None = None


def sendable(now: datetime) -> list[Any]:
    """Conditions of a delivery that may be sent now: pending, due, held by no sender, and
    its webhook active."""
    return [
        WebhookDelivery.status == DeliveryStatus.PENDING,
        WebhookDelivery.next_attempt_at <= now,
        or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < now),
        WebhookDelivery.webhook_id.in_(select(Webhook.id).where(Webhook.active.is_(True))),
    ]


def lease(delivery_id: str, now: datetime) -> Outgoing | None:
    """Take a due delivery for one send; None if it is not due, taken or done."""
    taken = db.session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, *sendable(now))
        .values(
            locked_until=now + timedelta(seconds=webhook_settings.lease_seconds),
            attempts=WebhookDelivery.attempts + 1,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    if taken != 1:
        db.session.rollback()
        return None
    delivery, hook, event = db.session.execute(
        select(WebhookDelivery, Webhook, WebhookEvent)
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.id == delivery_id)
        .execution_options(populate_existing=True)
    ).one()
    body = event.body.encode()
    outgoing = Outgoing(
        delivery_id=delivery.id,
        webhook_id=hook.id,
        attempt=delivery.attempts,
        max_attempts=delivery.max_attempts,
        url=hook.url,
        body=body,
        headers={
            "Content-Type": "application/json",
            "X-Webhook-Id": event.id,
            "X-Webhook-Event": event.event,
            "X-Webhook-Delivery": delivery.id,
            "X-Webhook-Attempt": str(delivery.attempts),
        },
    )
    try:
        outgoing.headers["X-Webhook-Signature"] = sign(
            webhook_settings.open(hook.secret_sealed), body
        )
    except Unsealable as exc:
        outgoing.problem = str(exc)
    db.session.commit()
    return outgoing


def send(outgoing: Outgoing) -> Result:
    """Make the HTTP request and classify the answer."""
    started = time.monotonic()

    def elapsed() -> int:
        return round((time.monotonic() - started) * 1000)

    if outgoing.problem:
        return Result(None, 0, "permanent", outgoing.problem)
    try:
        response = safe_http.post(
            outgoing.url,
            outgoing.body,
            outgoing.headers,
            timeout=webhook_settings.timeout_seconds,
            allow_private=webhook_settings.allow_private,
            max_response_bytes=webhook_settings.max_response_bytes,
        )
    except safe_http.UnsafeURL as exc:
        return Result(None, elapsed(), "permanent", str(exc))
    except safe_http.RequestFailed as exc:
        return Result(None, elapsed(), "retry", str(exc))
    status = response.status
    result = Result(
        status,
        elapsed(),
        "delivered",
        response_headers=dict(list(response.headers.items())[:30]),
        excerpt=response.body.decode("utf-8", "replace")[:EXCERPT_CHARS],
    )
    if 200 <= status < 300:
        return result
    if status == 410:
        result.outcome, result.error = "disabled", "the receiver answered 410 Gone"
    elif status in (408, 429) or status >= 500:
        result.outcome, result.error = "retry", f"HTTP {status}"
        result.retry_after = retry_after_seconds(response.headers.get("retry-after"))
    elif 300 <= status < 400:
        where = response.headers.get("location", "?")
        result.outcome = "permanent"
        result.error = f"HTTP {status}: redirect to {where[:200]} not followed"
    else:
        result.outcome, result.error = "permanent", f"HTTP {status}"
    return result


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds from now."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - utcnow()).total_seconds()) if when.tzinfo else None


def backoff_seconds(attempt: int) -> float:
    """Delay after failed attempt ``attempt`` (1-based): exponential, "equal" jitter."""
    ceiling = min(
        webhook_settings.retry_max_seconds, webhook_settings.retry_base_seconds * 2 ** (attempt - 1)
    )
    return ceiling * webhook_settings.rng.uniform(0.5, 1.0)


def record(outgoing: Outgoing, result: Result, started_at: datetime, now: datetime) -> str:
    """Write the attempt and move the delivery on; returns the attempt's outcome."""
    # The webhook row, then the delivery: the order deleting a webhook takes them in. NO KEY:
    # outbox writers inserting deliveries for this webhook (a key-share lock) do not wait.
    hook = db.session.scalars(
        select(Webhook).where(Webhook.id == outgoing.webhook_id).with_for_update(key_share=True)
    ).first()
    delivery = db.session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.id == outgoing.delivery_id).with_for_update()
    ).first()
    if hook is None or delivery is None:  # the webhook was deleted meanwhile
        db.session.rollback()
        return "gone"
    outcome = result.outcome
    if delivery.attempts != outgoing.attempt or delivery.status != DeliveryStatus.PENDING:
        # Our lease ran out and another sender took the delivery over (or finished it):
        # keep the attempt for the record, leave the delivery and the webhook to it.
        outcome = "superseded"
    elif outcome == "retry" and outgoing.attempt >= outgoing.max_attempts:
        outcome = "gave_up"
    db.session.add(
        WebhookAttempt(
            delivery_id=delivery.id,
            number=outgoing.attempt,
            started_at=started_at,
            duration_ms=result.duration_ms,
            status_code=result.status_code,
            outcome=outcome,
            error=result.error,
            request_headers={
                k: v for k, v in outgoing.headers.items() if k != "X-Webhook-Signature"
            }
            | {"X-Webhook-Signature": "sha256=…"},
            response_headers=result.response_headers,
            response_excerpt=result.excerpt,
        )
    )
    if outcome == "superseded":
        db.session.commit()
        return outcome
    delivery.last_status_code = result.status_code
    delivery.last_duration_ms = result.duration_ms
    delivery.last_error = result.error
    delivery.locked_until = None
    delivery.updated_at = now
    if outcome == "delivered":
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = now
        hook.consecutive_failures = 0
        hook.last_success_at = now
    elif outcome == "retry":
        delay = backoff_seconds(outgoing.attempt)
        if result.retry_after is not None:
            delay = max(delay, min(result.retry_after, webhook_settings.retry_max_seconds))
        delivery.next_attempt_at = now + timedelta(seconds=delay)
        delivery.enqueued_at = None  # nobody queued it: the sweep will, when it is due
    else:
        delivery.status = DeliveryStatus.FAILED
        hook.consecutive_failures = (hook.consecutive_failures or 0) + 1
        hook.last_failure_at = now
        if outcome == "disabled":
            disable(hook, f"{result.error}: the receiver asked to stop", now)
        elif hook.consecutive_failures >= webhook_settings.disable_after_failures:
            disable(
                hook,
                f"{hook.consecutive_failures} deliveries in a row failed; the last: {result.error}",
                now,
            )
    metrics.webhook_delivery(outcome)
    db.session.commit()
    return outcome


def disable(hook: Webhook, reason: str, now: datetime) -> None:
    hook.active = False
    hook.disabled_reason = reason
    hook.disabled_at = now
    hook.updated_at = now
    log.warning("webhook %s disabled: %s", hook.id, reason)


def deliver(delivery_id: str) -> str | None:
    """Send one delivery if it is due and free; returns the outcome (None: not sent)."""
    outgoing = lease(delivery_id, utcnow())
    if outgoing is None:
        return None
    started_at = utcnow()
    result = send(outgoing)
    return record(outgoing, result, started_at, utcnow())


def queue_due(now: datetime | None = None) -> int:
    """Queue the deliveries that are due and that no job holds or was just given."""
    now = now or utcnow()
    requeue_before = now - timedelta(seconds=webhook_settings.requeue_after_seconds)
    ids = list(
        db.session.scalars(
            select(WebhookDelivery.id)
            .where(
                *sendable(now),
                or_(
                    WebhookDelivery.enqueued_at.is_(None),
                    WebhookDelivery.enqueued_at < requeue_before,
                ),
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(DUE_BATCH)
        )
    )
    if not ids:
        db.session.rollback()
        return 0
    # A job still waiting behind a backlog is not lost: queueing it again would only add
    # a duplicate job per tick. Marked as just queued either way, so the next tick looks
    # at other rows.
    waiting: set[str] = set()
    if webhook_settings.jobs_waiting is not None:
        try:
            waiting = webhook_settings.jobs_waiting(ids)
        except Exception as exc:  # Redis down: dispatch() will fail and say so
            log.warning("cannot check queued webhook jobs (%s)", exc)
    db.session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(ids))
        .values(enqueued_at=now)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    lost = [i for i in ids if i not in waiting]
    dispatch(lost)
    return len(lost)


def prune(now: datetime | None = None) -> int:
    """Delete events past the retention whose deliveries are all finished."""
    now = now or utcnow()
    cutoff = now - timedelta(days=webhook_settings.retention_days)
    open_events = select(WebhookDelivery.event_id).where(
        WebhookDelivery.status == DeliveryStatus.PENDING
    )
    old = list(
        db.session.scalars(
            select(WebhookEvent.id)
            .where(WebhookEvent.created_at < cutoff, WebhookEvent.id.not_in(open_events))
            .limit(PRUNE_BATCH)
        )
    )
    if not old:
        db.session.rollback()
        return 0
    # Children first: SQLite enforces the cascade only with foreign keys on.
    delivery_ids = select(WebhookDelivery.id).where(WebhookDelivery.event_id.in_(old))
    db.session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(delivery_ids)))
    db.session.execute(delete(WebhookDelivery).where(WebhookDelivery.event_id.in_(old)))
    db.session.execute(delete(WebhookEvent).where(WebhookEvent.id.in_(old)))
    db.session.commit()
    return len(old)


# ---------------------------------------------------------------------------------------
# Managing webhooks
# ---------------------------------------------------------------------------------------


def validate_url(url: str) -> str:
    """A URL we will call; resolvable names are checked now, and again on every send."""
    url = (url or "").strip()
    if not url:
        raise invalid("url", "is required")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise invalid("url", "must not contain spaces or control characters")
    if len(url) > MAX_URL_LENGTH:
        raise invalid("url", f"is longer than {MAX_URL_LENGTH} characters")
    try:
        _, host, port = safe_http.check_url(url)
        if not webhook_settings.allow_private:
            safe_http.resolve(host, port, allow_private=False)
    except safe_http.UnsafeURL as exc:
        raise invalid("url", str(exc)) from None
    except safe_http.RequestFailed:
        pass  # the name does not resolve now; each send checks again
    return url


def validate_events(events: Iterable[str] | None) -> list[str]:
    if events is None:
        return list(WebhookEvents.ALL)
    chosen = list(dict.fromkeys(events))
    if not chosen:
        raise invalid("events", "must name at least one event")
    unknown = [e for e in chosen if e not in WebhookEvents.ALL]
    if unknown:
        raise invalid(
            "events", f"unknown event {unknown[0]!r}; known: {', '.join(WebhookEvents.ALL)}"
        )
    return chosen


def validate_secret(secret: str | None) -> str:
    if secret is None:
        return generate_secret()
    if not (MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH):
        raise invalid("secret", f"must be {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} characters")
    return secret


def create_webhook(
    principal: Principal,
    *,
    url: str,
    events: list[str] | None = None,
    secret: str | None = None,
    description: str | None = None,
    agent_id: str | None = None,
    client_id: str | None = None,
    now: datetime | None = None,
) -> tuple[Webhook, str]:
    """Subscribe a URL; returns the webhook and its secret (shown this once)."""
    now = now or utcnow()
    if agent_id is not None:
        agent = owned_agent(principal, agent_id)
        agent_id, client_id = agent.id, None
    elif principal.role == Role.CLIENT:
        if client_id not in (None, principal.client_id):
            raise NotPermitted("a client key may only create webhooks for its own client")
        client_id = principal.client_id
    elif not principal.is_admin:
        raise NotPermitted("an agent key creates webhooks under /ains/agents/{agent_id}/webhooks")
    secret = validate_secret(secret)
    hook = Webhook(
        id=new_id("wh"),
        agent_id=agent_id,
        client_id=client_id,
        url=validate_url(url),
        events=validate_events(events),
        description=(description or "").strip()[:200] or None,
        secret_sealed=webhook_settings.seal(secret),
        secret_hint=secret[-4:],
        active=True,
        consecutive_failures=0,
        created_by=principal.actor,
        created_at=now,
        updated_at=now,
    )
    audit.track(hook, "webhook")  # the secret shows only as set, never its value
    db.session.add(hook)
    db.session.commit()
    return hook, secret


def owned_agent(principal: Principal, agent_id: str) -> Agent:
    """The agent whose webhooks the principal manages: its own (agent key) or any (admin)."""
    if principal.is_admin:
        agent = db.session.get(Agent, agent_id)
        if agent is None:
            raise NotFound(f"agent {agent_id!r} not found")
        return agent
    return require_agent(principal, agent_id)


def may_manage(principal: Principal, hook: Webhook) -> bool:
    if principal.is_admin:
        return True
    if hook.agent_id:
        if principal.role != Role.AGENT:
            return False
        agent = db.session.get(Agent, hook.agent_id)
        return agent is not None and principal.acts_for(agent)
    return principal.role == Role.CLIENT and hook.client_id == principal.client_id


def get_webhook(
    principal: Principal, webhook_id: str, *, lock: bool = False, for_delete: bool = False
) -> Webhook:
    """A webhook the principal manages; others are 404 so ids do not leak.

    ``lock`` takes the row FOR NO KEY UPDATE (outbox inserts of its deliveries go on);
    ``for_delete`` FOR UPDATE.
    """
    query = select(Webhook).where(Webhook.id == webhook_id)
    if lock or for_delete:
        query = query.with_for_update(key_share=not for_delete)
    hook = db.session.scalars(query).first()
    if hook is None or not may_manage(principal, hook):
        raise NotFound(f"webhook {webhook_id!r} not found")
    return hook


def list_webhooks(principal: Principal, *, agent_id: str | None = None) -> list[Webhook]:
    """The webhooks the principal manages (an agent's only, when ``agent_id`` is given)."""
    query = select(Webhook).order_by(Webhook.created_at.desc(), Webhook.id.desc())
    if agent_id is not None:
        owned_agent(principal, agent_id)
        query = query.where(Webhook.agent_id == agent_id)
    elif principal.role == Role.CLIENT:
        query = query.where(Webhook.client_id == principal.client_id, Webhook.agent_id.is_(None))
    elif principal.role == Role.AGENT:
        query = query.join(Agent, Agent.id == Webhook.agent_id)
        if principal.agent_id is not None:
            query = query.where(Agent.id == principal.agent_id)
        else:
            query = query.where(Agent.registered_by_key_id == principal.key_id)
    return list(db.session.scalars(query))


def update_webhook(
    principal: Principal,
    webhook_id: str,
    changes: Mapping[str, Any],
    now: datetime | None = None,
) -> Webhook:
    """Change url, events, description or active; re-enabling clears the failure streak."""
    now = now or utcnow()
    hook = get_webhook(principal, webhook_id, lock=True)
    audit.track(hook, "webhook")
    for name in ("url", "events", "active"):
        if name in changes and changes[name] is None:
            raise invalid(name, "may be changed but not set to null")
    if "url" in changes:
        hook.url = validate_url(changes["url"])
    if "events" in changes:
        hook.events = validate_events(changes["events"])
    if "description" in changes:
        hook.description = (changes["description"] or "").strip()[:200] or None
    resumed: list[str] = []
    if "active" in changes:
        active = bool(changes["active"])
        if active and not hook.active:
            hook.disabled_reason = None
            hook.disabled_at = None
            hook.consecutive_failures = 0
            resumed = waiting_deliveries(hook.id)
        elif not active and hook.active:
            hook.disabled_reason = f"paused by {principal.actor}"
            hook.disabled_at = now
        hook.active = active
    hook.updated_at = now
    db.session.commit()
    dispatch(resumed)
    return hook


def waiting_deliveries(webhook_id: str) -> list[str]:
    return list(
        db.session.scalars(
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.webhook_id == webhook_id,
                WebhookDelivery.status == DeliveryStatus.PENDING,
            )
            .limit(DUE_BATCH)
        )
    )


def rotate_secret(
    principal: Principal, webhook_id: str, secret: str | None = None, now: datetime | None = None
) -> tuple[Webhook, str]:
    """A new signing secret (given or generated), shown this once; used from the next send."""
    now = now or utcnow()
    hook = get_webhook(principal, webhook_id, lock=True)
    audit.track(hook, "webhook")
    secret = validate_secret(secret)
    hook.secret_sealed = webhook_settings.seal(secret)
    hook.secret_hint = secret[-4:]
    hook.updated_at = now
    db.session.commit()
    return hook, secret


def delete_webhook(principal: Principal, webhook_id: str) -> None:
    """Remove a webhook with its delivery history."""
    hook = get_webhook(principal, webhook_id, for_delete=True)
    ids = select(WebhookDelivery.id).where(WebhookDelivery.webhook_id == hook.id)
    db.session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(ids)))
    db.session.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id))
    db.session.delete(hook)
    db.session.commit()


@dataclass
class DeliveryPage:
    deliveries: list[WebhookDelivery]
    attempts: dict[str, list[WebhookAttempt]]
    next_cursor: str | None


def list_deliveries(
    principal: Principal,
    webhook_id: str,
    *,
    status: str | None = None,
    event: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> DeliveryPage:
    """A webhook's deliveries, newest first, with their attempts; keyset-paged."""
    hook = get_webhook(principal, webhook_id)
    query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id)
    if status is not None:
        if status not in DeliveryStatus.ALL:
            raise invalid("status", f"must be one of {', '.join(DeliveryStatus.ALL)}")
        query = query.where(WebhookDelivery.status == status)
    if event is not None:
        if event not in (*WebhookEvents.ALL, WebhookEvents.PING):
            raise invalid("event", f"unknown event {event!r}")
        query = query.where(WebhookDelivery.event == event)
    if cursor:
        try:
            created, row_id = decode_cursor(cursor)
        except BadCursor as exc:
            raise invalid("cursor", str(exc)) from None
        created = as_utc(created)
        query = query.where(
            or_(
                WebhookDelivery.created_at < created,
                (WebhookDelivery.created_at == created) & (WebhookDelivery.id < row_id),
            )
        )
    rows = list(
        db.session.scalars(
            query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()).limit(
                limit + 1
            )
        )
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return DeliveryPage(
        deliveries=rows,
        attempts=attempts_of([d.id for d in rows]),
        next_cursor=encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None,
    )


def attempts_of(delivery_ids: list[str]) -> dict[str, list[WebhookAttempt]]:
    found: dict[str, list[WebhookAttempt]] = {i: [] for i in delivery_ids}
    if not delivery_ids:
        return found
    for attempt in db.session.scalars(
        select(WebhookAttempt)
        .where(WebhookAttempt.delivery_id.in_(delivery_ids))
        .order_by(WebhookAttempt.delivery_id, WebhookAttempt.number)
    ):
        found[attempt.delivery_id].append(attempt)
    return found


def get_delivery(principal: Principal, delivery_id: str) -> WebhookDelivery:
    delivery = db.session.get(WebhookDelivery, delivery_id)
    if delivery is None:
        raise NotFound(f"delivery {delivery_id!r} not found")
    get_webhook(principal, delivery.webhook_id)  # 404 unless the principal manages it
    return delivery


def event_bodies(event_ids: Iterable[str]) -> dict[str, str]:
    """The bodies sent for these events (one query)."""
    ids = list(set(event_ids))
    if not ids:
        return {}
    rows = db.session.execute(
        select(WebhookEvent.id, WebhookEvent.body).where(WebhookEvent.id.in_(ids))
    )
    return {event_id: body for event_id, body in rows}


def event_body(event_id: str) -> str | None:
    return event_bodies([event_id]).get(event_id)


def require_active(hook: Webhook) -> None:
    """Sending to a disabled webhook waits until it is enabled again: refuse to queue it."""
    if not hook.active:
        raise Conflict(
            f"webhook {hook.id} is disabled ({hook.disabled_reason or 'paused'}); enable it first"
        )


def redeliver(
    principal: Principal, delivery_id: str, now: datetime | None = None
) -> WebhookDelivery:
    """Send an event again, as a new delivery with the same X-Webhook-Id."""
    now = now or utcnow()
    original = get_delivery(principal, delivery_id)
    hook = db.session.get(Webhook, original.webhook_id)  # get_delivery checked the owner
    assert hook is not None
    require_active(hook)
    event = db.session.get(WebhookEvent, original.event_id)
    assert event is not None  # deliveries cascade with their event
    delivery = new_delivery(hook.id, event, now, redelivery_of=original.id)
    db.session.add(delivery)
    db.session.commit()
    dispatch([delivery.id])
    return delivery


def ping(principal: Principal, webhook_id: str, now: datetime | None = None) -> WebhookDelivery:
    """Send a ``webhook.ping`` event to this webhook only, to check the receiver."""
    now = now or utcnow()
    hook = get_webhook(principal, webhook_id)
    require_active(hook)
    event = new_event(
        Occurrence(
            event=WebhookEvents.PING,
            at=now,
            data={"webhook_id": hook.id, "message": "ping from AINS", "sent_by": principal.actor},
            agent_id=hook.agent_id,
        )
    )
    db.session.add(event)
    db.session.flush()
    delivery = new_delivery(hook.id, event, now)
    db.session.add(delivery)
    db.session.commit()
    dispatch([delivery.id])
    return delivery


def webhook_counts(webhook_ids: list[str]) -> dict[str, dict[str, int]]:
    """Deliveries by status per webhook (for lists)."""
    counts: dict[str, dict[str, int]] = {
        i: dict.fromkeys(DeliveryStatus.ALL, 0) for i in webhook_ids
    }
    if not webhook_ids:
        return counts
    for webhook_id, status, n in db.session.execute(
        select(WebhookDelivery.webhook_id, WebhookDelivery.status, func.count())
        .where(WebhookDelivery.webhook_id.in_(webhook_ids))
        .group_by(WebhookDelivery.webhook_id, WebhookDelivery.status)
    ):
        counts[webhook_id][status] = n
    return counts
