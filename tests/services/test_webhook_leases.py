"""A sender that outlives its lease must not overwrite the delivery of the sender after it.

``lease`` lets a second sender take a delivery once the first one's lease (timeout + 20 s)
has run out: the first is presumed dead. It may only be slow (a DNS lookup outside the
request deadline, a stalled process, a lock wait while recording). ``record`` then writes
its outcome without checking that it still holds the lease, and so can undo what the
current holder wrote. So ``record`` applies an outcome only while
``delivery.attempts == outgoing.attempt`` and the delivery is still pending; otherwise it
keeps the attempt row (outcome ``superseded``) and changes nothing else.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.extensions import db
from app.lib.clock import utcnow
from app.models import DeliveryStatus, Webhook, WebhookDelivery
from app.services import webhooks
from app.services.webhooks import Result, webhook_settings
from tests.services.conftest import Actors
from tests.services.factories import make_task

URL = "http://127.0.0.1:9/hook"  # never called: the tests record outcomes directly


def one_delivery(actors: Actors) -> tuple[Webhook, WebhookDelivery]:
    hook, _ = webhooks.create_webhook(actors.client, url=URL, events=["task.created"])
    make_task(actors.client, utcnow())
    delivery = db.session.scalars(
        db.select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id)
    ).one()
    return hook, delivery


def fresh(model: type, row_id: str) -> object:
    db.session.expire_all()
    return db.session.get(model, row_id)


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    monkeypatch.setattr(webhook_settings, "dispatcher", seen.extend)
    return seen


def test_a_stale_sender_does_not_fail_a_delivery_the_next_sender_delivered(
    actors: Actors, queued: list[str]
) -> None:
    hook, delivery = one_delivery(actors)
    now = utcnow()
    stale = webhooks.lease(delivery.id, now)
    later = now + timedelta(seconds=webhook_settings.lease_seconds + 1)
    current = webhooks.lease(delivery.id, later)
    assert stale is not None and current is not None and current.attempt == 2
    webhooks.record(current, Result(200, 5, "delivered"), later, later)
    # The first sender comes back late with a 400 from its own (earlier) request.
    webhooks.record(
        stale, Result(400, 31_000, "permanent", "HTTP 400"), now, later + timedelta(seconds=1)
    )
    row = fresh(WebhookDelivery, delivery.id)
    assert row.status == DeliveryStatus.DELIVERED, (row.status, row.last_error)
    assert fresh(Webhook, hook.id).consecutive_failures == 0


def test_a_stale_sender_does_not_release_the_lease_of_the_next_sender(
    actors: Actors, queued: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook_settings, "retry_base_seconds", 1.0)  # backoff <= 1 s
    _, delivery = one_delivery(actors)
    now = utcnow()
    stale = webhooks.lease(delivery.id, now)
    later = now + timedelta(seconds=webhook_settings.lease_seconds + 1)
    current = webhooks.lease(delivery.id, later)
    assert stale is not None and current is not None
    # While the current sender's request is in flight, the stale one records a 503.
    webhooks.record(stale, Result(503, 31_000, "retry", "HTTP 503"), now, later)
    row = fresh(WebhookDelivery, delivery.id)
    assert row.locked_until is not None, "the current sender's lease was released"
    # A third sender must not get it while the second still holds it (past the backoff).
    before_expiry = later + timedelta(seconds=webhook_settings.lease_seconds - 1)
    assert webhooks.lease(delivery.id, before_expiry) is None
