"""Webhook delivery end to end: the RQ worker and the clock as real processes, a real
local HTTP receiver, events from the public task API.

Webhooks are created with the service layer (the JSON API has its own tests in
tests/api/test_webhooks_api.py); events come from tasks submitted and reported through the
API (the Flask test client, or a real gunicorn where concurrency matters). The worker and
clock are started per test with the webhook settings the test needs (fast retries, a low
disable threshold, private addresses refused).
"""

from __future__ import annotations

import hashlib
import hmac
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from flask import Flask
from rq import Queue, Worker

from agent_client import verify_signature
from app import webhook_queue_name
from app.extensions import db, redis_client
from app.lib.clock import utcnow
from app.models import Role, WebhookAttempt, WebhookDelivery
from app.services import webhooks
from app.services.errors import Conflict
from app.services.principal import SYSTEM, Principal
from app.services.webhooks import webhook_settings
from tests.conftest import Api, Personas
from tests.processes import Process, free_port, process_env, start_web, wait_until
from tests.webhook_receiver import Receiver, Reply

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLIENT_ONE = Principal(role=Role.CLIENT, name="client one", client_id="client-1")
# Fast retries: the 2nd attempt 0.5-1 s after the 1st fails, the 3rd 1-2 s after the 2nd.
FAST_RETRIES = {"WEBHOOK_RETRY_BASE_SECONDS": "1", "WEBHOOK_MAX_ATTEMPTS": "3"}
# How late a retry may arrive after its backoff: the maintenance tick that queues it comes
# once a second, then the job and the request; generous for 2 shared cores.
RETRY_SLACK = 2.5
TASK_EVENTS = ["task.created", "task.completed"]
# How long a worker or clock may take to start: importing the app alone took 10 s on the
# shared 2 cores under load.
STARTUP_TIMEOUT = 60


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    """Start local receivers: ``receivers(script, default)``; all stopped afterwards."""
    made: list[Receiver] = []

    def make(script: list[int | Reply] | None = None, default: int | Reply = 200) -> Receiver:
        receiver = Receiver(script, default)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.stop()


@pytest.fixture
def spawn(app: Flask, request: pytest.FixtureRequest) -> Iterator[Callable[..., Process]]:
    """Start ``jobs.worker`` or ``jobs.clock`` with extra environment, and wait until it is
    at work (a worker registered in Redis, the clock's tick scheduled): the tests' waits
    time deliveries, not how long a loaded machine takes to import the app. Stopped
    afterwards."""
    started: list[Process] = []
    test = request.node.name.removeprefix("test_")[:40]
    connection = redis_client(app.config["REDIS_URL"])

    def start(kind: str, **env: str) -> Process:
        assert kind in ("worker", "clock"), kind
        name = f"webhooks-{test}-{kind}-{len(started)}"
        workers_before = Worker.count(connection=connection)
        process = Process(name, [sys.executable, "-m", f"jobs.{kind}"], process_env(app, **env))
        started.append(process)
        if kind == "clock":
            process.wait_for_line("scheduled jobs.maintenance.tick", timeout=STARTUP_TIMEOUT)
        else:
            wait_until(
                lambda: Worker.count(connection=connection) > workers_before,
                STARTUP_TIMEOUT,
                f"{name} to register with Redis",
            )
        return process

    yield start
    for process in reversed(started):
        process.stop()


# --------------------------------------------------------------------------- helpers


def create_hook(
    app: Flask, url: str, events: list[str], principal: Principal = SYSTEM
) -> tuple[str, str]:
    """A webhook made through the service layer; returns (webhook id, secret)."""
    with app.app_context():
        hook, secret = webhooks.create_webhook(principal, url=url, events=events)
        hook_id = hook.id
        db.session.remove()
    return hook_id, secret


def deliveries(app: Flask, hook_id: str) -> list[dict[str, Any]]:
    """The webhook's deliveries with their attempts (as the API shows them), oldest first."""
    with app.app_context():
        page = webhooks.list_deliveries(SYSTEM, hook_id, limit=500)
        rows = [d.to_dict(page.attempts[d.id]) for d in reversed(page.deliveries)]
        db.session.remove()
    return rows


def hook_state(app: Flask, hook_id: str) -> dict[str, Any]:
    with app.app_context():
        state = webhooks.get_webhook(SYSTEM, hook_id).to_dict()
        db.session.remove()
    return state


def finished(app: Flask, hook_id: str, count: int, timeout: float = 15) -> list[dict[str, Any]]:
    """Wait until the webhook has ``count`` deliveries, none of them pending."""

    def check() -> list[dict[str, Any]] | None:
        rows = deliveries(app, hook_id)
        done = len(rows) == count and all(r["status"] != "pending" for r in rows)
        return rows if done else None

    return wait_until(check, timeout, f"{count} finished deliveries of {hook_id}")


def submit(api: Api, personas: Personas, **fields: Any) -> str:
    """Submit a task for a capability nobody has (it stays PENDING); its id."""
    fields.setdefault("capability_required", "nobody-v1")
    return api.submit(personas.client, **fields)["task_id"]


def expected_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def quiet_for(receiver: Receiver, seconds: float) -> int:
    """How many requests the receiver has after waiting ``seconds`` more."""
    time.sleep(seconds)
    return len(receiver.received())


# --------------------------------------------------------------------------- tests


def test_it_delivers_signed_events_with_their_headers_and_body(
    app: Flask,
    api: Api,
    personas: Personas,
    receivers: Callable[..., Receiver],
    spawn: Callable[..., Process],
) -> None:
    receiver = receivers()
    hook_id, secret = create_hook(app, receiver.url, TASK_EVENTS, CLIENT_ONE)
    spawn("worker")
    agent_id, agent = api.register_agent(personas.fleet)
    task_id = api.submit(personas.client, input_data={"report_type": "sales"})["task_id"]
    # Another client's task is none of this webhook's business.
    api.submit(personas.other_client, capability_required="nobody-v1")
    assert [t["task_id"] for t in api.claim(agent_id, agent)] == [task_id]
    result = {"rows": 3, "summary": "sales are up", "nested": {"ok": True}}
    done = api.post(f"/ains/tasks/{task_id}/complete", agent, json={"result_data": result})
    assert done.status_code == 200, done.get_json()

    got = {r.header("X-Webhook-Event"): r for r in receiver.wait_for(2)}
    assert set(got) == {"task.created", "task.completed"}
    rows = {r["event"]: r for r in finished(app, hook_id, 2)}
    assert {e: r["status"] for e, r in rows.items()} == {
        "task.created": "delivered",
        "task.completed": "delivered",
    }

    for name, request in got.items():
        body = request.json
        signature = request.header("X-Webhook-Signature")
        assert signature == expected_signature(secret, request.body)
        assert verify_signature(secret, request.body, signature) is True
        assert verify_signature("whsec_wrong", request.body, signature) is False
        assert verify_signature(secret, request.body + b" ", signature) is False

        assert request.path == "/hook"
        assert request.header("Content-Type") == "application/json"
        assert request.header("X-Webhook-Id") == body["event_id"]
        assert body["event_id"].startswith("evt")
        assert request.header("X-Webhook-Event") == name == body["event"]
        assert request.header("X-Webhook-Delivery") == rows[name]["delivery_id"]
        assert request.header("X-Webhook-Attempt") == "1"
        assert rows[name]["event_id"] == body["event_id"]
        assert rows[name]["attempt"] == 1
        assert rows[name]["attempts"][0]["status_code"] == 200

        assert set(body) == {"event", "event_id", "task_id", "agent_id", "timestamp", "data"}
        assert body["task_id"] == task_id
        sent_at = datetime.fromisoformat(body["timestamp"])
        assert sent_at.utcoffset() == timedelta(0), body["timestamp"]
        assert abs(datetime.now(UTC) - sent_at) < timedelta(minutes=1)
        assert body["data"]["client_id"] == "client-1"
        assert body["data"]["task_type"] == "report"

    created, completed = got["task.created"].json, got["task.completed"].json
    assert created["data"]["status"] == "PENDING" and created["data"]["from_status"] is None
    assert completed["agent_id"] == agent_id
    assert completed["data"]["status"] == "COMPLETED"
    assert completed["data"]["result_data"] == result
    assert datetime.fromisoformat(completed["data"]["completed_at"]).tzinfo is not None
    assert datetime.fromisoformat(completed["timestamp"]) >= datetime.fromisoformat(
        created["timestamp"]
    )
    assert created["event_id"] != completed["event_id"]
    assert quiet_for(receiver, 1) == 2


def test_it_retries_with_backoff_until_the_receiver_accepts(
    app: Flask,
    api: Api,
    personas: Personas,
    receivers: Callable[..., Receiver],
    spawn: Callable[..., Process],
) -> None:
    flaky = receivers([500, 503])  # then 200
    throttling = receivers([408, Reply(429, {"Retry-After": "1"})])  # then 200
    closed_port = f"http://127.0.0.1:{free_port()}/hook"  # nobody listens: connection refused
    flaky_id, _ = create_hook(app, flaky.url, ["task.created"])
    throttling_id, _ = create_hook(app, throttling.url, ["task.created"])
    refused_id, _ = create_hook(app, closed_port, ["task.created"])
    spawn("worker", **FAST_RETRIES)
    spawn("clock", **FAST_RETRIES)
    task_id = submit(api, personas)

    tries = flaky.wait_for(3, timeout=20)
    assert [r.attempt for r in tries] == [1, 2, 3]
    assert len({r.event_id for r in tries}) == 1
    assert len({r.header("X-Webhook-Delivery") for r in tries}) == 1
    assert {r.body for r in tries} == {tries[0].body}, "every try sends the same signed body"
    assert tries[0].json["task_id"] == task_id
    first_gap = tries[1].monotonic - tries[0].monotonic
    second_gap = tries[2].monotonic - tries[1].monotonic
    assert 0.5 <= first_gap <= 1.0 + RETRY_SLACK, first_gap
    assert 1.0 <= second_gap <= 2.0 + RETRY_SLACK, second_gap

    [flaky_delivery] = finished(app, flaky_id, 1)
    assert flaky_delivery["status"] == "delivered"
    assert flaky_delivery["attempt"] == 3
    assert [a["status_code"] for a in flaky_delivery["attempts"]] == [500, 503, 200]
    assert [a["outcome"] for a in flaky_delivery["attempts"]] == ["retry", "retry", "delivered"]
    assert flaky_delivery["attempts"][0]["error"] == "HTTP 500"

    # 408 and 429 are transient too; the 429's Retry-After is honoured.
    throttled = throttling.wait_for(3, timeout=20)
    assert [r.attempt for r in throttled] == [1, 2, 3]
    assert throttled[2].monotonic - throttled[1].monotonic >= 1.0
    [throttled_delivery] = finished(app, throttling_id, 1)
    assert throttled_delivery["status"] == "delivered"
    assert [a["status_code"] for a in throttled_delivery["attempts"]] == [408, 429, 200]

    # A connection error is retried until WEBHOOK_MAX_ATTEMPTS, then the delivery fails.
    [refused] = finished(app, refused_id, 1, timeout=20)
    assert refused["status"] == "failed"
    assert [a["outcome"] for a in refused["attempts"]] == ["retry", "retry", "gave_up"]
    assert all(a["status_code"] is None for a in refused["attempts"])
    assert "Connection" in refused["error"] or "refused" in refused["error"], refused["error"]
    assert hook_state(app, refused_id)["consecutive_failures"] == 1

    assert quiet_for(flaky, 1.5) == 3, "nothing is sent after the delivery succeeded"


def test_it_does_not_retry_permanent_errors_or_follow_redirects_elsewhere(
    app: Flask,
    api: Api,
    personas: Personas,
    receivers: Callable[..., Receiver],
    spawn: Callable[..., Process],
) -> None:
    rejecting = receivers(default=400)
    elsewhere = receivers()
    # 307 is the redirect that could be followed: only to the same scheme, host and port.
    other_host = f"http://localhost:{elsewhere.port}/hook"
    redirecting = receivers(default=Reply(307, {"Location": other_host}))
    moved = receivers(default=Reply(302, {"Location": "/elsewhere"}))
    same_origin = receivers([Reply(308, {"Location": "/moved-here"})])  # then 200
    rejecting_id, _ = create_hook(app, rejecting.url, ["task.created"])
    redirecting_id, _ = create_hook(app, redirecting.url, ["task.created"])
    moved_id, _ = create_hook(app, moved.url, ["task.created"])
    same_origin_id, _ = create_hook(app, same_origin.url, ["task.created"])
    spawn("worker", **FAST_RETRIES)
    spawn("clock", **FAST_RETRIES)
    submit(api, personas)

    [rejected] = finished(app, rejecting_id, 1)
    assert rejected["status"] == "failed"
    assert rejected["error"] == "HTTP 400"
    assert [(a["status_code"], a["outcome"]) for a in rejected["attempts"]] == [(400, "permanent")]
    [redirected] = finished(app, redirecting_id, 1)
    assert redirected["status"] == "failed"
    assert [(a["status_code"], a["outcome"]) for a in redirected["attempts"]] == [
        (307, "permanent")
    ]
    assert f"redirect to {other_host} not followed" in redirected["error"], redirected["error"]
    [moved_delivery] = finished(app, moved_id, 1)
    assert moved_delivery["status"] == "failed"
    assert "HTTP 302" in moved_delivery["error"], moved_delivery["error"]
    # A 308 to the same origin is followed, within the same attempt.
    [followed] = finished(app, same_origin_id, 1)
    assert followed["status"] == "delivered" and followed["attempt"] == 1
    assert [r.path for r in same_origin.wait_for(2)] == ["/hook", "/moved-here"]

    # Well past the first two retries' backoff (0.5-1 s, then 1-2 s): nothing more.
    time.sleep(3)
    assert len(rejecting.received()) == 1
    assert len(redirecting.received()) == 1
    assert len(moved.received()) == 1
    assert len(same_origin.received()) == 2
    assert elsewhere.received() == []
    assert [d["attempt"] for d in deliveries(app, rejecting_id)] == [1]
    state = hook_state(app, rejecting_id)
    assert state["active"] is True and state["consecutive_failures"] == 1


def test_it_disables_a_webhook_whose_receiver_answers_410(
    app: Flask,
    api: Api,
    personas: Personas,
    receivers: Callable[..., Receiver],
    spawn: Callable[..., Process],
) -> None:
    gone = receivers(default=410)
    hook_id, _ = create_hook(app, gone.url, ["task.created"])
    spawn("worker", **FAST_RETRIES)
    spawn("clock", **FAST_RETRIES)
    submit(api, personas)

    [delivery] = finished(app, hook_id, 1)
    assert delivery["status"] == "failed"
    assert [(a["status_code"], a["outcome"]) for a in delivery["attempts"]] == [(410, "disabled")]
    state = hook_state(app, hook_id)
    assert state["active"] is False
    assert "410" in state["disabled_reason"], state["disabled_reason"]
    assert state["disabled_at"] is not None

    submit(api, personas)
    submit(api, personas)
    assert quiet_for(gone, 2) == 1
    assert len(deliveries(app, hook_id)) == 1, "a disabled webhook gets no new deliveries"
    with app.app_context(), pytest.raises(Conflict, match="410"):
        webhooks.redeliver(SYSTEM, delivery["delivery_id"])


def test_it_disables_a_webhook_after_failures_in_a_row_until_re_enabled(
    app: Flask,
    api: Api,
    personas: Personas,
    receivers: Callable[..., Receiver],
    spawn: Callable[..., Process],
) -> None:
    rejecting = receivers(default=400)
    hook_id, _ = create_hook(app, rejecting.url, ["task.created"])
    settings = {**FAST_RETRIES, "WEBHOOK_DISABLE_AFTER_FAILURES": "2"}
    spawn("worker", **settings)
    spawn("clock", **settings)

    submit(api, personas)
    finished(app, hook_id, 1)
    state = hook_state(app, hook_id)
    assert state["active"] is True and state["consecutive_failures"] == 1
    submit(api, personas)
    assert [d["status"] for d in finished(app, hook_id, 2)] == ["failed", "failed"]
    state = hook_state(app, hook_id)
    assert state["active"] is False
    assert state["consecutive_failures"] == 2
    assert "2 deliveries in a row failed" in state["disabled_reason"], state["disabled_reason"]
    assert "HTTP 400" in state["disabled_reason"]

    submit(api, personas)
    assert quiet_for(rejecting, 1.5) == 2
    assert len(deliveries(app, hook_id)) == 2

    with app.app_context():
        webhooks.update_webhook(SYSTEM, hook_id, {"active": True})
        db.session.remove()
    state = hook_state(app, hook_id)
    assert state["active"] is True
    assert state["disabled_reason"] is None and state["disabled_at"] is None
    assert state["consecutive_failures"] == 0

    rejecting.set_default(200)
    task_id = submit(api, personas)
    [request] = rejecting.wait_for(3)[2:]
    assert request.json["task_id"] == task_id
    assert finished(app, hook_id, 3)[-1]["status"] == "delivered"
    assert hook_state(app, hook_id)["last_success_at"] is not None


def test_it_refuses_to_send_to_a_loopback_address_unless_allowed(
    app: Flask,
    api: Api,
    personas: Personas,
    receivers: Callable[..., Receiver],
    spawn: Callable[..., Process],
) -> None:
    receiver = receivers()
    # Created while the test app allows private addresses (creating it would be refused too).
    url = f"http://localhost:{receiver.port}/hook"
    hook_id, _ = create_hook(app, url, ["task.created"])
    spawn("worker", WEBHOOK_ALLOW_PRIVATE="0", **FAST_RETRIES)
    spawn("clock", WEBHOOK_ALLOW_PRIVATE="0", **FAST_RETRIES)
    submit(api, personas)

    [delivery] = finished(app, hook_id, 1)
    assert delivery["status"] == "failed"
    assert [(a["status_code"], a["outcome"]) for a in delivery["attempts"]] == [(None, "permanent")]
    error = delivery["error"]
    assert error.startswith("refused: localhost resolves to "), error
    assert "127.0.0.1" in error or "::1" in error, error
    assert "loopback" in error and "WEBHOOK_ALLOW_PRIVATE" in error, error
    assert quiet_for(receiver, 2) == 0


def test_it_redelivers_an_event_with_the_same_id_and_body(
    app: Flask,
    api: Api,
    personas: Personas,
    receivers: Callable[..., Receiver],
    spawn: Callable[..., Process],
) -> None:
    receiver = receivers()
    hook_id, secret = create_hook(app, receiver.url, ["task.created"])
    spawn("worker")
    submit(api, personas)
    [original] = finished(app, hook_id, 1)
    assert original["status"] == "delivered"

    with app.app_context():
        again = webhooks.redeliver(SYSTEM, original["delivery_id"])
        again_id = again.id
        db.session.remove()
    first, second = receiver.wait_for(2)
    assert second.body == first.body
    assert second.event_id == first.event_id == original["event_id"]
    assert second.header("X-Webhook-Signature") == expected_signature(secret, second.body)
    assert first.header("X-Webhook-Delivery") == original["delivery_id"]
    assert second.header("X-Webhook-Delivery") == again_id != original["delivery_id"]
    assert second.attempt == 1

    rows = {r["delivery_id"]: r for r in finished(app, hook_id, 2)}
    assert rows[again_id]["redelivery_of"] == original["delivery_id"]
    assert rows[again_id]["status"] == "delivered"
    assert rows[again_id]["event_id"] == original["event_id"]
    assert rows[original["delivery_id"]]["redelivery_of"] is None
    assert quiet_for(receiver, 1) == 2


def test_it_delivers_each_event_once_after_redis_is_flushed(
    app: Flask,
    api: Api,
    personas: Personas,
    receivers: Callable[..., Receiver],
    spawn: Callable[..., Process],
) -> None:
    receiver = receivers()
    hook_id, _ = create_hook(app, receiver.url, ["task.created"])
    # No worker yet: the delivery jobs wait in Redis, and are lost with it.
    task_ids = {submit(api, personas) for _ in range(5)}
    connection = redis_client(app.config["REDIS_URL"])
    queue = Queue(webhook_queue_name(app.config), connection=connection)
    assert queue.count == 5
    connection.flushdb()
    assert queue.count == 0
    assert [d["status"] for d in deliveries(app, hook_id)] == ["pending"] * 5

    spawn("worker")
    spawn("clock")
    # The sweep queues deliveries left untaken for 5 s (requeue_after_seconds) again.
    got = receiver.wait_for(5, timeout=20)
    assert {r.json["task_id"] for r in got} == task_ids
    assert [d["status"] for d in finished(app, hook_id, 5)] == ["delivered"] * 5
    assert quiet_for(receiver, 4) == 5
    assert set(receiver.counts_by_event_id().values()) == {1}
    assert all(d["attempt"] == 1 for d in deliveries(app, hook_id))


def test_it_sends_again_after_the_lease_of_a_killed_worker_runs_out(
    app: Flask,
    api: Api,
    personas: Personas,
    receivers: Callable[..., Receiver],
    spawn: Callable[..., Process],
) -> None:
    # The lease is WEBHOOK_TIMEOUT_SECONDS + 20 s: 22 s here, the bulk of this test's time.
    settings = {**FAST_RETRIES, "WEBHOOK_TIMEOUT_SECONDS": "2"}
    slow = receivers([Reply(200, delay=3)])  # holds the first request past the sender's death
    hook_id, _ = create_hook(app, slow.url, ["task.created"])
    worker = spawn("worker", **settings)
    spawn("clock", **settings)
    submit(api, personas)

    [first] = slow.wait_for(1, timeout=15)
    worker.signal(signal.SIGKILL)
    worker.proc.wait(5)
    with app.app_context():
        delivery = db.session.scalars(db.select(WebhookDelivery)).one()
        attempts = db.session.scalars(db.select(WebhookAttempt)).all()
        db.session.remove()
    # Killed mid-request: the attempt is counted and leased, its outcome never written.
    assert (delivery.status, delivery.attempts, attempts) == ("pending", 1, [])
    assert delivery.locked_until is not None

    spawn("worker", **settings)
    first_try, second_try = slow.wait_for(2, timeout=30)
    gap = second_try.monotonic - first_try.monotonic
    assert gap >= 21, f"sent again {gap:.1f}s later, before the 22 s lease ran out"
    assert second_try.event_id == first.event_id
    assert second_try.body == first.body
    assert second_try.attempt == 2
    [row] = finished(app, hook_id, 1)
    assert row["status"] == "delivered"
    assert [(a["attempt"], a["status_code"]) for a in row["attempts"]] == [(2, 200)]


def test_it_delivers_every_event_exactly_once_with_two_workers(
    app: Flask,
    personas: Personas,
    receivers: Callable[..., Receiver],
    spawn: Callable[..., Process],
) -> None:
    receiver = receivers()
    hook_id, _ = create_hook(app, receiver.url, ["task.created"])
    web = start_web(app, name="webhooks-concurrency-web")
    try:
        spawn("worker")
        spawn("worker")
        spawn("clock")

        def post(n: int) -> str:
            response = requests.post(
                f"{web.url}/ains/tasks",
                json={
                    "task_type": "burst",
                    "capability_required": "nobody-v1",
                    "input_data": {"n": n},
                },
                headers=personas.client.headers,
                timeout=30,
            )
            assert response.status_code == 201, response.text
            return response.json()["task_id"]

        with ThreadPoolExecutor(8) as pool:
            task_ids = set(pool.map(post, range(200)))
        assert len(task_ids) == 200

        def all_arrived() -> bool:
            return {r.json["task_id"] for r in receiver.received()} >= task_ids

        wait_until(all_arrived, 30, "200 task.created events at the receiver")
        time.sleep(3)  # anything sent twice would be here by now
        counts = receiver.counts_by_event_id()
        assert len(counts) == 200
        assert [e for e, n in counts.items() if n != 1] == []
        assert Counter(r.json["task_id"] for r in receiver.received()) == Counter(
            dict.fromkeys(task_ids, 1)
        )
        rows = deliveries(app, hook_id)
        assert Counter((d["status"], d["attempt"]) for d in rows) == {("delivered", 1): 200}
    finally:
        web.process.stop()


# --------------------------------------------------------------------------- backlogs


def test_the_sweep_does_not_queue_a_delivery_again_while_its_job_waits(
    app: Flask, api: Api, personas: Personas, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    create_hook(app, receiver.url, ["task.created"])
    for _ in range(3):
        submit(api, personas)
    queue = Queue(webhook_queue_name(app.config), connection=redis_client(app.config["REDIS_URL"]))
    assert queue.count == 3  # one job per delivery; no worker is running: a backlog
    with app.app_context():
        later = utcnow() + timedelta(seconds=webhook_settings.requeue_after_seconds + 1)
        webhooks.queue_due(later)
        db.session.remove()
    assert queue.count == 3, "the sweep queued deliveries whose job had not been lost"
