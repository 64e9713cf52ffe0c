"""The webhook outbox and delivery rules, at the service level: which events a state change
writes, for whom, in the same transaction; leasing, backoff, the sweep, sealing, SSRF rules.

Real HTTP round trips with real processes live in tests/e2e/test_webhook_delivery.py.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from app.api.schemas import ScheduleCreate
from app.extensions import db
from app.lib import safe_http
from app.lib.clock import utcnow
from app.lib.sealing import Sealer, Unsealable
from app.models import (
    DeliveryStatus,
    ScheduleExecution,
    Task,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
    WebhookEvents,
)
from app.services import agents as agent_service
from app.services import scheduling, webhooks
from app.services.cancellation import cancel_task
from app.services.dispatch import claim_tasks
from app.services.lifecycle import sweep
from app.services.principal import SYSTEM
from app.services.reports import complete_task, fail_task
from app.services.settings import settings
from app.services.webhooks import webhook_settings
from tests.services.conftest import Actors
from tests.services.factories import make_agent, make_task
from tests.webhook_receiver import Receiver, Reply, receiving

URL = "http://127.0.0.1:9/hook"  # never called by these tests unless a receiver is started


def events_for(webhook_id: str) -> list[tuple[str, dict]]:
    """(event name, parsed body) of the deliveries written for a webhook, oldest first."""
    rows = db.session.execute(
        db.select(WebhookDelivery.event, WebhookEvent.body)
        .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.webhook_id == webhook_id)
    ).all()
    parsed = [(name, json.loads(body)) for name, body in rows]
    # Events of one transaction share its time: then the lifecycle's order.
    rank = {name: i for i, name in enumerate(WebhookEvents.ALL)}
    return sorted(parsed, key=lambda e: (e[1]["timestamp"], rank.get(e[0], 99)))


def names(webhook_id: str) -> list[str]:
    return [name for name, _ in events_for(webhook_id)]


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The delivery ids handed to the job queue, instead of a real queue."""
    seen: list[str] = []
    monkeypatch.setattr(webhook_settings, "dispatcher", seen.extend)
    return seen


def test_a_client_webhook_hears_its_own_tasks_only(actors: Actors, queued: list[str]) -> None:
    hook, _ = webhooks.create_webhook(actors.client, url=URL, events=["task.created"])
    now = utcnow()
    mine = make_task(actors.client, now)
    make_task(actors.other_client, now)
    bodies = events_for(hook.id)
    assert [b["task_id"] for _, b in bodies] == [mine.id]
    assert bodies[0][1]["data"]["client_id"] == actors.client.client_id
    # Queued after the commit, once.
    assert len(queued) == 1


def test_a_global_webhook_hears_every_client(actors: Actors, queued: list[str]) -> None:
    hook, _ = webhooks.create_webhook(actors.admin, url=URL, events=["task.created"])
    now = utcnow()
    make_task(actors.client, now)
    make_task(actors.other_client, now)
    assert names(hook.id) == ["task.created", "task.created"]


def test_an_inactive_or_unsubscribed_webhook_gets_nothing(
    actors: Actors, queued: list[str]
) -> None:
    paused, _ = webhooks.create_webhook(actors.client, url=URL, events=["task.created"])
    webhooks.update_webhook(actors.client, paused.id, {"active": False})
    other, _ = webhooks.create_webhook(actors.client, url=URL, events=["task.completed"])
    make_task(actors.client, utcnow())
    assert names(paused.id) == [] and names(other.id) == []
    assert db.session.scalar(db.select(db.func.count()).select_from(WebhookEvent)) == 0
    assert queued == []


def test_the_task_lifecycle_events(actors: Actors, queued: list[str]) -> None:
    now = utcnow()
    agent = make_agent(actors.fleet, now)
    hook, _ = webhooks.create_webhook(actors.client, url=URL, events=list(WebhookEvents.ALL))
    done = make_task(actors.client, now)
    claim_tasks(actors.fleet, agent.id, 1, now=now)
    complete_task(actors.fleet, done.id, {"answer": 42}, now=now + timedelta(seconds=1))
    failed = make_task(actors.client, now, max_retries=0)
    claim_tasks(actors.fleet, agent.id, 1, now=now + timedelta(seconds=2))
    fail_task(actors.fleet, failed.id, "boom", retryable=False, now=now + timedelta(seconds=3))
    cancelled = make_task(actors.client, now)
    cancel_task(actors.client, cancelled.id, reason="changed my mind")

    by_task: dict[str, list[str]] = {}
    for name, body in events_for(hook.id):
        by_task.setdefault(body["task_id"], []).append(name)
    assert by_task[done.id] == ["task.created", "task.assigned", "task.completed"]
    assert by_task[failed.id] == ["task.created", "task.assigned", "task.failed"]
    assert by_task[cancelled.id][0] == "task.created"
    assert by_task[cancelled.id][-1] == "task.cancelled"

    completed = next(b for n, b in events_for(hook.id) if n == "task.completed")
    assert completed["agent_id"] == agent.id
    assert completed["data"]["result_data"] == {"answer": 42}
    assert completed["data"]["status"] == "COMPLETED"
    assert datetime.fromisoformat(completed["timestamp"]).tzinfo is not None
    failure = next(b for n, b in events_for(hook.id) if n == "task.failed")
    assert failure["data"]["error_message"].startswith("boom")
    assert failure["agent_id"] == agent.id


def test_a_timeout_is_announced_whether_it_retries_or_fails(
    actors: Actors, queued: list[str]
) -> None:
    now = utcnow()
    agent = make_agent(actors.fleet, now, slots=2)
    hook, _ = webhooks.create_webhook(
        actors.client, url=URL, events=["task.timed_out", "task.failed"]
    )
    retried = make_task(actors.client, now, timeout_seconds=5, retry_on_timeout=True)
    ended = make_task(actors.client, now, timeout_seconds=5)
    assert len(claim_tasks(actors.fleet, agent.id, 2, now=now)) == 2
    sweep(now + timedelta(seconds=6))
    seen = [(n, b["task_id"]) for n, b in events_for(hook.id)]
    assert sorted(seen) == sorted(
        [("task.timed_out", retried.id), ("task.timed_out", ended.id), ("task.failed", ended.id)]
    )
    for _, body in events_for(hook.id):
        assert "timed out" in body["data"]["error_message"]
        assert body["agent_id"] == agent.id


def test_an_agent_webhook_hears_new_work_it_could_take_and_its_own_tasks(
    actors: Actors, queued: list[str]
) -> None:
    now = utcnow()
    agent = make_agent(actors.fleet, now, capabilities=("report-v1",))
    hook, _ = webhooks.create_webhook(
        actors.fleet,
        agent_id=agent.id,
        url=URL,
        events=["task.created", "task.assigned", "task.completed"],
    )
    task = make_task(actors.client, now)
    make_task(actors.client, now, capability_required="other-v1")
    claim_tasks(actors.fleet, agent.id, 1, now=now)
    complete_task(actors.fleet, task.id, {}, now=now)
    seen = events_for(hook.id)
    assert [(n, b["task_id"]) for n, b in seen] == [
        ("task.created", task.id),
        ("task.assigned", task.id),
        ("task.completed", task.id),
    ]
    assert all(b["agent_id"] == agent.id for n, b in seen if n != "task.created")


def test_agent_offline_is_announced_once(
    actors: Actors, queued: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "heartbeat_interval_seconds", 10)
    monkeypatch.setattr(settings, "heartbeat_misses_allowed", 3)
    now = utcnow()
    silent = make_agent(actors.fleet, now)
    says_offline = make_agent(actors.fleet, now)
    hook, _ = webhooks.create_webhook(actors.admin, url=URL, events=["agent.offline"])
    agent_service.record_heartbeat(
        actors.fleet,
        says_offline.id,
        health_status="OFFLINE",
        uptime_ms=1,
        metrics={},
        interval_seconds=10,
        now=now,
    )
    sweep(now + timedelta(seconds=31))
    sweep(now + timedelta(seconds=62))
    offline = [b["agent_id"] for n, b in events_for(hook.id)]
    assert sorted(offline) == sorted([silent.id, says_offline.id])
    reasons = {b["agent_id"]: b["data"]["reason"] for _, b in events_for(hook.id)}
    assert "OFFLINE" in reasons[says_offline.id]
    assert "no heartbeat" in reasons[silent.id]


def test_an_agent_webhook_hears_only_its_own_agent_going_offline(
    actors: Actors, queued: list[str]
) -> None:
    now = utcnow()
    mine = make_agent(actors.fleet, now)
    other = make_agent(actors.fleet, now)
    hook, _ = webhooks.create_webhook(
        actors.fleet, agent_id=mine.id, url=URL, events=["agent.offline"]
    )
    for agent in (other, mine):
        agent_service.record_heartbeat(
            actors.fleet,
            agent.id,
            health_status="OFFLINE",
            uptime_ms=1,
            metrics={},
            interval_seconds=10,
            now=now,
        )
    assert [(n, b["agent_id"]) for n, b in events_for(hook.id)] == [("agent.offline", mine.id)]


def test_a_fired_schedule_is_announced_to_its_client(actors: Actors, queued: list[str]) -> None:
    mine, _ = webhooks.create_webhook(actors.client, url=URL, events=["schedule.fired"])
    theirs, _ = webhooks.create_webhook(actors.other_client, url=URL, events=["schedule.fired"])
    start = utcnow()
    fields = ScheduleCreate.model_validate(
        {"task_type": "report", "capability_required": "report-v1", "interval_seconds": 60}
    ).model_dump(exclude_none=True)
    schedule = scheduling.create_schedule(actors.client, fields, now=start)
    assert scheduling.fire_due(now=start + timedelta(seconds=61)).fired == 1

    [(name, body)] = events_for(mine.id)
    assert name == "schedule.fired" == body["event"]
    assert body["schedule_id"] == schedule.id == body["data"]["schedule_id"]
    execution = db.session.get(ScheduleExecution, body["data"]["execution_id"])
    assert execution is not None and execution.schedule_id == schedule.id
    assert execution.task_id == body["task_id"] and db.session.get(Task, body["task_id"])
    assert body["data"]["trigger"] == "schedule"
    assert datetime.fromisoformat(body["data"]["scheduled_for"]) == start + timedelta(seconds=60)
    assert names(theirs.id) == []


def test_a_rolled_back_change_writes_no_event(actors: Actors, queued: list[str]) -> None:
    hook, _ = webhooks.create_webhook(actors.client, url=URL, events=["task.cancelled"])
    task = make_task(actors.client, utcnow())
    task.transition("CANCELLED", actor="test", now=utcnow())
    db.session.flush()
    db.session.rollback()
    db.session.commit()  # a later commit must not pick up what the rollback dropped
    assert names(hook.id) == []
    assert queued == []


# ---------------------------------------------------------------------------------------
# Sending, leasing, the sweep
# ---------------------------------------------------------------------------------------


def scripted(statuses: list[int]) -> Receiver:
    """A receiver answering with ``statuses`` in turn, the last one for good."""
    return Receiver(script=statuses[:-1], default=statuses[-1])


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = scripted([200])
    yield r
    r.stop()


def one_delivery(actors: Actors, url: str) -> tuple[Webhook, str, WebhookDelivery]:
    hook, secret = webhooks.create_webhook(actors.client, url=url, events=["task.created"])
    make_task(actors.client, utcnow())
    delivery = db.session.scalars(
        db.select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id)
    ).one()
    return hook, secret, delivery


def fresh(delivery_id: str) -> WebhookDelivery:
    db.session.expire_all()
    return db.session.get(WebhookDelivery, delivery_id)


def test_a_delivery_is_signed_and_recorded(
    actors: Actors, queued: list[str], receiver: Receiver
) -> None:
    _, secret, delivery = one_delivery(actors, receiver.url)
    assert webhooks.deliver(delivery.id) == "delivered"
    [got] = receiver.requests
    headers, body = got.headers, got.body
    assert headers["X-Webhook-Signature"] == webhooks.sign(secret, body)
    assert headers["X-Webhook-Id"] == delivery.event_id
    assert headers["X-Webhook-Event"] == "task.created"
    assert headers["X-Webhook-Attempt"] == "1"
    row = fresh(delivery.id)
    assert row.status == DeliveryStatus.DELIVERED and row.last_status_code == 200
    [attempt] = db.session.scalars(db.select(WebhookAttempt)).all()
    assert attempt.response_excerpt == '{"ok": true}'
    # The signature is not kept with the attempt.
    assert secret not in json.dumps(attempt.request_headers)
    # Delivered: a second job for it sends nothing.
    assert webhooks.deliver(delivery.id) is None
    assert len(receiver.requests) == 1


def test_a_leased_delivery_is_not_sent_twice(actors: Actors, queued: list[str]) -> None:
    _, _, delivery = one_delivery(actors, URL)
    now = utcnow()
    assert webhooks.lease(delivery.id, now) is not None
    assert webhooks.lease(delivery.id, now + timedelta(seconds=1)) is None
    # A sender that died: its lease runs out and the next one takes over.
    later = now + timedelta(seconds=webhook_settings.lease_seconds + 1)
    again = webhooks.lease(delivery.id, later)
    assert again is not None and again.attempt == 2


def test_failures_back_off_then_give_up(
    actors: Actors, queued: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook_settings, "max_attempts", 3)
    monkeypatch.setattr(webhook_settings, "retry_base_seconds", 10.0)
    r = scripted([500, 503, 502])
    try:
        hook, _, delivery = one_delivery(actors, r.url)
        assert webhooks.deliver(delivery.id) == "retry"
        first = fresh(delivery.id)
        wait = (first.next_attempt_at - first.updated_at).total_seconds()
        assert 5 <= wait <= 10
        # Not due yet: neither a job nor the sweep sends it.
        assert webhooks.deliver(delivery.id) is None
        assert webhooks.queue_due(utcnow()) == 0
        # Due: the sweep queues it (the first job is long gone).
        assert webhooks.queue_due(first.next_attempt_at + timedelta(milliseconds=1)) == 1
        db.session.execute(
            db.update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery.id)
            .values(next_attempt_at=utcnow())
        )
        db.session.commit()
        assert webhooks.deliver(delivery.id) == "retry"
        second = fresh(delivery.id)
        assert 10 <= (second.next_attempt_at - second.updated_at).total_seconds() <= 20
        db.session.execute(
            db.update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery.id)
            .values(next_attempt_at=utcnow())
        )
        db.session.commit()
        assert webhooks.deliver(delivery.id) == "gave_up"
        last = fresh(delivery.id)
        assert last.status == DeliveryStatus.FAILED and last.attempts == 3
        assert [g.header("X-Webhook-Attempt") for g in r.requests] == ["1", "2", "3"]
        assert len({g.event_id for g in r.requests}) == 1
        db.session.expire_all()
        assert db.session.get(Webhook, hook.id).consecutive_failures == 1
    finally:
        r.stop()


@pytest.mark.parametrize(
    ("status", "outcome", "active"),
    [(400, "permanent", True), (404, "permanent", True), (410, "disabled", False)],
)
def test_client_errors_are_not_retried(
    actors: Actors, queued: list[str], status: int, outcome: str, active: bool
) -> None:
    r = scripted([status])
    try:
        hook, _, delivery = one_delivery(actors, r.url)
        assert webhooks.deliver(delivery.id) == outcome
        assert fresh(delivery.id).status == DeliveryStatus.FAILED
        db.session.expire_all()
        row = db.session.get(Webhook, hook.id)
        assert row.active is active
        if not active:
            assert "410" in row.disabled_reason
    finally:
        r.stop()


@pytest.mark.parametrize("status", [408, 429])
def test_timeouts_and_throttling_are_retried(
    actors: Actors, queued: list[str], status: int
) -> None:
    r = scripted([status, 200])
    try:
        _, _, delivery = one_delivery(actors, r.url)
        assert webhooks.deliver(delivery.id) == "retry"
        assert fresh(delivery.id).status == DeliveryStatus.PENDING
    finally:
        r.stop()


def test_a_webhook_failing_too_often_is_disabled(
    actors: Actors, queued: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook_settings, "disable_after_failures", 2)
    r = scripted([400])
    try:
        hook, _ = webhooks.create_webhook(actors.client, url=r.url, events=["task.created"])
        for _ in range(3):
            make_task(actors.client, utcnow())
        ids = list(
            db.session.scalars(
                db.select(WebhookDelivery.id).where(WebhookDelivery.webhook_id == hook.id)
            )
        )
        outcomes = [webhooks.deliver(i) for i in ids]
        # The third is never sent: the webhook was disabled by the second failure.
        assert outcomes == ["permanent", "permanent", None]
        db.session.expire_all()
        row = db.session.get(Webhook, hook.id)
        assert not row.active and "2 deliveries in a row failed" in row.disabled_reason
        assert fresh(ids[2]).status == DeliveryStatus.PENDING  # kept, not lost
        # Enabling it again clears the streak and resumes the waiting delivery.
        webhooks.update_webhook(actors.client, hook.id, {"active": True})
        assert ids[2] in queued
        db.session.expire_all()
        row = db.session.get(Webhook, hook.id)
        assert row.active and row.disabled_reason is None and row.consecutive_failures == 0
    finally:
        r.stop()


def test_the_sweep_requeues_deliveries_whose_job_was_lost(
    actors: Actors, queued: list[str]
) -> None:
    _, _, delivery = one_delivery(actors, URL)
    queued.clear()
    now = utcnow()
    # Just queued by the commit: the sweep leaves it to that job.
    assert webhooks.queue_due(now) == 0
    later = now + timedelta(seconds=webhook_settings.requeue_after_seconds + 1)
    assert webhooks.queue_due(later) == 1
    assert queued == [delivery.id]
    assert webhooks.queue_due(later) == 0  # queued again just now


def test_redelivery_is_a_new_delivery_of_the_same_event(
    actors: Actors, queued: list[str], receiver: Receiver
) -> None:
    _, _, delivery = one_delivery(actors, receiver.url)
    webhooks.deliver(delivery.id)
    again = webhooks.redeliver(actors.client, delivery.id)
    assert again.redelivery_of == delivery.id and again.event_id == delivery.event_id
    assert webhooks.deliver(again.id) == "delivered"
    ids = [g.event_id for g in receiver.requests]
    assert ids == [delivery.event_id, delivery.event_id]
    assert receiver.requests[0].body == receiver.requests[1].body


def test_old_finished_events_are_pruned(actors: Actors, queued: list[str]) -> None:
    _, _, delivery = one_delivery(actors, URL)
    later = utcnow() + timedelta(days=webhook_settings.retention_days + 1)
    # Still pending: kept however old.
    assert webhooks.prune(later) == 0
    db.session.execute(
        db.update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery.id)
        .values(status=DeliveryStatus.DELIVERED)
    )
    db.session.commit()
    delivery_id = delivery.id
    assert webhooks.prune(later) == 1
    db.session.expunge_all()
    assert db.session.get(WebhookDelivery, delivery_id) is None


# ---------------------------------------------------------------------------------------
# Secrets and outbound safety
# ---------------------------------------------------------------------------------------


def test_secrets_are_sealed_at_rest(actors: Actors) -> None:
    hook, secret = webhooks.create_webhook(actors.client, url=URL, secret="s3cret-value-123")
    assert secret == "s3cret-value-123"
    row = db.session.get(Webhook, hook.id)
    assert secret not in row.secret_sealed
    assert webhook_settings.open(row.secret_sealed) == secret
    assert hook.to_dict()["secret_hint"].endswith("-123")
    assert secret not in json.dumps(hook.to_dict())
    generated = webhooks.create_webhook(actors.client, url=URL)[1]
    assert generated.startswith("whsec_") and len(generated) > 40


def test_a_rotated_secret_key_still_opens_old_secrets() -> None:
    old = Sealer(["old-key"])
    token = old.seal("hello")
    assert Sealer(["new-key", "old-key"]).open(token) == "hello"
    with pytest.raises(Unsealable):
        Sealer(["new-key"]).open(token)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "100.64.0.1",
        "224.0.0.1",
    ],
)
def test_private_addresses_are_refused(address: str) -> None:
    assert safe_http.forbidden_reason(address) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert safe_http.forbidden_reason(address) is None


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/", "javascript:alert(1)", "http://", "http://user:pw@example.com/", "x"],
)
def test_only_plain_http_urls_are_accepted(url: str) -> None:
    with pytest.raises(safe_http.UnsafeURL):
        safe_http.check_url(url)


def test_names_resolving_to_private_addresses_are_refused_when_sending(
    actors: Actors, queued: list[str], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = receiver.url.replace("127.0.0.1", "localhost")
    _, _, delivery = one_delivery(actors, url)
    monkeypatch.setattr(webhook_settings, "allow_private", False)
    assert webhooks.deliver(delivery.id) == "permanent"
    row = fresh(delivery.id)
    assert row.status == DeliveryStatus.FAILED
    assert "localhost resolves to" in row.last_error and "loopback" in row.last_error
    assert receiver.requests == []


def test_a_receiver_holding_the_request_past_the_timeout_is_retried(
    actors: Actors, queued: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook_settings, "timeout_seconds", 1.0)
    with receiving(default=Reply(200, delay=3)) as slow:
        _, _, delivery = one_delivery(actors, slow.url)
        assert webhooks.deliver(delivery.id) == "retry"
        row = fresh(delivery.id)
        assert row.status == DeliveryStatus.PENDING and row.last_status_code is None
        assert row.last_error == "timed out after 1s", row.last_error
        assert len(slow.requests) == 1


def dripping_server(head: bytes, drip: bytes) -> tuple[str, threading.Event]:
    """A receiver that sends ``head``, then ``drip`` every 0.2 s for up to 15 s: each read
    gets something well within any socket timeout, the whole answer never ends."""
    server = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        try:
            conn.recv(65536)
            conn.sendall(head)
            end = time.monotonic() + 15
            while time.monotonic() < end and not done.is_set():
                conn.sendall(drip)
                time.sleep(0.2)
        except OSError:
            pass  # the sender hung up: what the test wants
        finally:
            conn.close()
            server.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{server.getsockname()[1]}/hook", done


@pytest.mark.parametrize(
    ("head", "drip"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b"x"),  # the body
        (b"HTTP/1.1 200 OK\r\n", b"X-Drip: 1\r\n"),  # the headers
        (b"", b"H"),  # the status line
    ],
    ids=["body", "headers", "status-line"],
)
def test_a_receiver_dripping_its_answer_is_cut_off_at_the_deadline(
    head: bytes, drip: bytes
) -> None:
    url, done = dripping_server(head, drip)
    started = time.monotonic()
    try:
        with pytest.raises(safe_http.RequestFailed, match="timed out after 1s"):
            safe_http.post(url, b"{}", {}, timeout=1, allow_private=True, max_response_bytes=4096)
    finally:
        done.set()
    # The drip goes on for 15 s: only the one deadline ends the request this soon.
    assert time.monotonic() - started < 8


def test_only_the_first_bytes_of_an_answer_are_read_and_kept(
    actors: Actors, queued: list[str]
) -> None:
    with receiving(default=Reply(200, body=b"a" * 200_000)) as big:
        answer = safe_http.post(
            big.url, b"{}", {}, timeout=5, allow_private=True, max_response_bytes=1024
        )
        assert answer.status == 200 and answer.truncated and answer.body == b"a" * 1024
    # The attempt keeps an excerpt of 2,000 characters (not bytes) of what was read.
    with receiving(default=Reply(200, body="é".encode() * 5000)) as wide:
        _, _, delivery = one_delivery(actors, wide.url)
        assert webhooks.deliver(delivery.id) == "delivered"
        [attempt] = db.session.scalars(db.select(WebhookAttempt)).all()
        assert attempt.response_excerpt == "é" * 2000


def test_a_secret_that_cannot_be_opened_fails_the_delivery_without_sending(
    actors: Actors, queued: list[str], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, delivery = one_delivery(actors, receiver.url)
    monkeypatch.setattr(webhook_settings, "sealer", Sealer(["a-different-key"]))
    assert webhooks.deliver(delivery.id) == "permanent"
    assert "SECRET_KEY" in fresh(delivery.id).last_error
    assert receiver.requests == []


def test_the_ping_reaches_only_its_webhook(
    actors: Actors, queued: list[str], receiver: Receiver
) -> None:
    hook, secret = webhooks.create_webhook(actors.client, url=receiver.url, events=["task.failed"])
    delivery = webhooks.ping(actors.client, hook.id)
    assert delivery.event == WebhookEvents.PING
    assert webhooks.deliver(delivery.id) == "delivered"
    [got] = receiver.requests
    headers, body = got.headers, got.body
    assert json.loads(body)["data"]["webhook_id"] == hook.id
    assert headers["X-Webhook-Signature"] == webhooks.sign(secret, body)


def test_backoff_grows_and_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhook_settings, "retry_base_seconds", 2.0)
    monkeypatch.setattr(webhook_settings, "retry_max_seconds", 10.0)
    for attempt, ceiling in [(1, 2), (2, 4), (3, 8), (4, 10), (9, 10)]:
        for _ in range(20):
            delay = webhooks.backoff_seconds(attempt)
            assert ceiling / 2 <= delay <= ceiling


def test_system_principal_manages_every_webhook(actors: Actors) -> None:
    hook, _ = webhooks.create_webhook(actors.client, url=URL)
    assert webhooks.get_webhook(SYSTEM, hook.id).id == hook.id
