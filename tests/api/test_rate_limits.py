"""API rate limits: budgets per key and per address, 429 with Retry-After, failing open."""

from __future__ import annotations

import logging
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
import redis
import requests
from flask import Flask

from app.config import ConfigError, env_rate, env_redis_url
from app.lib import ratelimit
from app.lib.tokens import KEY_PREFIX
from tests.api.support import assert_error
from tests.conftest import Api, Persona, Personas
from tests.processes import free_port, start_web

# Low budgets, over an hour so that no window ends in the middle of a test.
LOW = {
    "RATE_LIMIT_SUBMIT": "3/hour",
    "RATE_LIMIT_AGENT": "4/hour",
    "RATE_LIMIT_READ": "5/hour",
    "RATE_LIMIT_WRITE": "3/hour",
    "RATE_LIMIT_PER_ADDRESS": "40/hour",
}
HEARTBEAT = {"status": "ACTIVE"}


@pytest.fixture
def limit(app: Flask) -> Iterator[Callable[..., None]]:
    """Give the app low budgets (LOW, then ``overrides``) for one test, as its config."""
    saved = dict(app.config)

    def configure(**overrides: str) -> None:
        app.config.update({**LOW, **overrides})
        ratelimit.init_app(app)

    yield configure
    app.config.clear()
    app.config.update(saved)
    ratelimit.init_app(app)


def caller(app: Flask, address: str) -> Api:
    """An API caller whose requests come from ``address``."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return Api(client)


def spend(api: Api, times: int, method: str, path: str, persona: Persona | None, **kw: Any) -> None:
    """Make ``times`` calls that must all pass the limiter."""
    for i in range(times):
        response = api.call(method, path, persona, **kw)
        assert response.status_code != 429, (i, response.get_json())


def test_it_refuses_a_key_past_its_read_budget_with_the_spec_error(
    app: Flask, limit: Callable[..., None], personas: Personas
) -> None:
    limit()
    api = caller(app, "10.0.0.1")
    for remaining in (4, 3, 2, 1, 0):
        response = api.get("/ains/tasks", personas.client)
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "5"
        assert response.headers["X-RateLimit-Remaining"] == str(remaining)
        reset = int(response.headers["X-RateLimit-Reset"])
        assert time.time() < reset <= time.time() + 3601

    refused = api.get("/ains/tasks", personas.client)
    error = assert_error(refused, 429, "rate_limited")
    assert "read" in error["message"] and "retry in" in error["message"]
    assert [d["message"].split(":")[0] for d in error["details"]] == ["read per key"]
    assert "5 requests per hour" in error["details"][0]["message"]
    assert 3500 <= int(refused.headers["Retry-After"]) <= 3600
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    # Every read of that key is refused, whatever the path.
    assert_error(api.get("/ains/task-chains", personas.client), 429, "rate_limited")


def test_it_refuses_before_authenticating(
    app: Flask, limit: Callable[..., None], personas: Personas
) -> None:
    """A spent key is refused even with a wrong secret: the limiter never reaches the DB."""
    limit()
    api = caller(app, "10.0.0.1")
    spend(api, 5, "GET", "/ains/tasks", personas.client)
    prefix = personas.client.key.split("_")[1]
    forged = Persona(f"{KEY_PREFIX}_{prefix}_not-the-secret", "client")
    assert_error(api.get("/ains/tasks", forged), 429, "rate_limited")
    assert api.get("/ains/tasks", personas.other_client).status_code == 200


def test_it_keeps_submit_agent_read_and_write_budgets_apart(
    app: Flask, limit: Callable[..., None], personas: Personas
) -> None:
    limit()
    api = caller(app, "10.0.0.1")
    agent_id, agent = api.register_agent(personas.fleet)

    # The agent spends its reads: its claims and heartbeats still pass.
    spend(api, 5, "GET", f"/ains/agents/{agent_id}", agent)
    assert_error(api.get(f"/ains/agents/{agent_id}", agent), 429, "rate_limited")
    # The client spends its submits: its reads still pass.
    for _ in range(3):
        api.submit(personas.client)
    refused = api.post("/ains/tasks", personas.client, json={"task_type": "x"})
    error = assert_error(refused, 429, "rate_limited")
    assert error["details"][0]["message"].startswith("submit per key")
    assert api.get("/ains/tasks", personas.client).status_code == 200

    claimed = api.claim(agent_id, agent, max_tasks=1)
    assert len(claimed) == 1
    heartbeat = api.post(f"/ains/agents/{agent_id}/heartbeat", agent, json=HEARTBEAT)
    assert heartbeat.status_code == 200
    complete = api.post(
        f"/ains/tasks/{claimed[0]['task_id']}/complete", agent, json={"result_data": {}}
    )
    assert complete.status_code == 200
    # Three agent calls so far: one more passes, the next is refused.
    assert api.post(f"/ains/agents/{agent_id}/heartbeat", agent, json=HEARTBEAT).status_code == 200
    error = assert_error(
        api.post(f"/ains/agents/{agent_id}/tasks/claim", agent, json={}), 429, "rate_limited"
    )
    assert error["details"][0]["message"].startswith("agent per key")

    # Writes are a budget of their own too (the fleet's registration spent one).
    spend(
        api,
        2,
        "PATCH",
        f"/ains/tasks/{claimed[0]['task_id']}/priority",
        personas.admin,
        json={"priority": 7},
    )
    spend(
        api,
        3,
        "POST",
        "/ains/routing/test",
        personas.client,
        json={"capability_required": "report-v1"},
    )
    assert_error(
        api.post("/ains/routing/test", personas.client, json={"capability_required": "x"}),
        429,
        "rate_limited",
    )


def test_it_counts_a_key_on_every_address(
    app: Flask, limit: Callable[..., None], personas: Personas
) -> None:
    limit()
    spend(caller(app, "10.0.0.1"), 3, "GET", "/ains/tasks", personas.client)
    spend(caller(app, "10.0.0.2"), 2, "GET", "/ains/tasks", personas.client)
    assert_error(caller(app, "10.0.0.3").get("/ains/tasks", personas.client), 429)


def test_it_counts_an_address_over_every_key_and_without_one(
    app: Flask, limit: Callable[..., None], personas: Personas
) -> None:
    limit(RATE_LIMIT_PER_ADDRESS="6/hour")
    api = caller(app, "10.0.0.1")
    spend(api, 2, "GET", "/ains/tasks", personas.client)
    spend(api, 2, "GET", "/ains/tasks", personas.other_client)
    # Callers without a key (or with a made-up one) have only the address budget.
    assert_error(api.get("/ains/tasks"), 401)
    made_up = Persona(f"{KEY_PREFIX}_{secrets.token_hex(6)}_{secrets.token_urlsafe(8)}", "client")
    assert_error(api.get("/ains/tasks", made_up), 401)

    refused = api.get("/ains/tasks", personas.admin)  # a fresh key: the address is spent
    error = assert_error(refused, 429, "rate_limited")
    assert [d["message"].split(":")[0] for d in error["details"]] == ["address"]
    assert_error(api.get("/ains/tasks"), 429, "rate_limited")
    # The same keys from another address still have budget.
    assert caller(app, "10.0.0.2").get("/ains/tasks", personas.admin).status_code == 200


def test_a_refused_request_spends_no_other_budget(
    app: Flask, limit: Callable[..., None], personas: Personas
) -> None:
    """Hammering a spent budget must not use up the address for the key's other work."""
    limit(RATE_LIMIT_PER_ADDRESS="8/hour")
    api = caller(app, "10.0.0.1")
    spend(api, 5, "GET", "/ains/tasks", personas.client)
    for _ in range(20):
        assert_error(api.get("/ains/tasks", personas.client), 429)
    spend(
        api,
        3,
        "POST",
        "/ains/tasks",
        personas.client,
        json={"task_type": "report", "capability_required": "report-v1"},
    )


def test_a_call_refused_for_its_address_spends_none_of_its_keys_budget(
    app: Flask, limit: Callable[..., None], personas: Personas
) -> None:
    """The key's budget is checked first (equal windows): a refusal must give it back."""
    limit(RATE_LIMIT_PER_ADDRESS="2/hour")
    crowded = caller(app, "10.0.0.1")
    spend(crowded, 2, "GET", "/ains/tasks", personas.client)
    for _ in range(10):
        error = assert_error(crowded.get("/ains/tasks", personas.client), 429, "rate_limited")
        assert [d["message"].split(":")[0] for d in error["details"]] == ["address"]
    # Elsewhere the key has its 3 remaining reads of 5, not none.
    elsewhere = caller(app, "10.0.0.2")
    response = elsewhere.get("/ains/tasks", personas.client)
    assert response.headers["X-RateLimit-Remaining"] == "1"  # the new address: 2 - 1
    spend(elsewhere, 1, "GET", "/ains/tasks", personas.client)
    third = caller(app, "10.0.0.3")
    assert third.get("/ains/tasks", personas.client).headers["X-RateLimit-Remaining"] == "0"
    assert_error(caller(app, "10.0.0.4").get("/ains/tasks", personas.client), 429)


def test_processes_and_threads_share_the_budgets_through_redis(
    app: Flask, personas: Personas
) -> None:
    """A real server, two workers of 16 threads: 12 parallel reads on a budget of 6."""
    server = start_web(app, WEB_CONCURRENCY="2", RATE_LIMIT_READ="6/hour")
    try:
        with ThreadPoolExecutor(12) as pool:
            answers = list(
                pool.map(
                    lambda _: requests.get(
                        f"{server.url}/ains/tasks", headers=personas.client.headers, timeout=30
                    ),
                    range(12),
                )
            )
    finally:
        server.process.stop()
    assert sorted(a.status_code for a in answers) == [200] * 6 + [429] * 6
    for refused in (a for a in answers if a.status_code == 429):
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 3500 <= int(refused.headers["Retry-After"]) <= 3600
    remaining = sorted(a.headers["X-RateLimit-Remaining"] for a in answers if a.ok)
    assert remaining == ["0", "1", "2", "3", "4", "5"]


def test_it_opens_a_new_window_when_the_old_one_ends(
    app: Flask, limit: Callable[..., None], personas: Personas
) -> None:
    limit(RATE_LIMIT_READ="2/second")
    api = caller(app, "10.0.0.1")
    spend(api, 2, "GET", "/ains/tasks", personas.client)
    refused = api.get("/ains/tasks", personas.client)
    assert_error(refused, 429, "rate_limited")
    assert refused.headers["Retry-After"] == "1"
    time.sleep(1.1)
    spend(api, 2, "GET", "/ains/tasks", personas.client)
    assert_error(api.get("/ains/tasks", personas.client), 429)


def test_it_combines_several_limits_in_one_budget(
    app: Flask, limit: Callable[..., None], personas: Personas
) -> None:
    limit(RATE_LIMIT_READ="10/second;3/hour")
    api = caller(app, "10.0.0.1")
    spend(api, 3, "GET", "/ains/tasks", personas.client)
    refused = api.get("/ains/tasks", personas.client)
    error = assert_error(refused, 429, "rate_limited")
    assert "3 requests per hour" in error["details"][0]["message"]
    assert int(refused.headers["Retry-After"]) > 3000


@pytest.mark.parametrize("path", ["/health", "/metrics", "/openapi.json", "/docs", "/login"])
def test_it_never_limits_probes_docs_and_the_console(
    app: Flask, limit: Callable[..., None], path: str
) -> None:
    limit(RATE_LIMIT_READ="1/hour", RATE_LIMIT_PER_ADDRESS="1/hour")
    api = caller(app, "10.0.0.1")
    for _ in range(5):
        response = api.get(path)
        assert response.status_code == 200, response.data[:200]
        assert "X-RateLimit-Limit" not in response.headers
    # The address budget was untouched by them.
    assert api.get("/ains/tasks").status_code == 401
    assert_error(api.get("/ains/tasks"), 429)


def test_it_fails_open_with_one_warning_when_redis_is_down(
    app: Flask,
    limit: Callable[..., None],
    personas: Personas,
    caplog: pytest.LogCaptureFixture,
) -> None:
    limit(
        RATE_LIMIT_REDIS_URL="redis://127.0.0.1:1/0",  # nothing listens there
        RATE_LIMIT_READ="1/hour",
        RATE_LIMIT_SUBMIT="1/hour",
        RATE_LIMIT_AGENT="1/hour",
    )
    api = caller(app, "10.0.0.1")
    with caplog.at_level(logging.WARNING, logger="app.lib.ratelimit"):
        agent_id, agent = api.register_agent(personas.fleet, slots=3)
        for _ in range(3):
            api.submit(personas.client)
            assert api.get("/ains/tasks", personas.client).status_code == 200
        assert len(api.claim(agent_id, agent, max_tasks=3)) == 3
    warnings = [r for r in caplog.records if r.name == "app.lib.ratelimit"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].levelno == logging.WARNING
    assert "not enforced" in warnings[0].getMessage()
    # Flask-Limiter itself saw no error to swallow (and log with a traceback) per request.
    assert not [r for r in caplog.records if r.name == "flask-limiter"]
    assert "X-RateLimit-Limit" not in api.get("/ains/tasks", personas.client).headers


def test_a_hung_redis_stalls_no_more_than_one_call(
    app: Flask,
    limit: Callable[..., None],
    personas: Personas,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Redis that takes connections but never answers costs one call ~1 s, then nothing."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as hung:  # never accepts
        limit(RATE_LIMIT_REDIS_URL=f"redis://127.0.0.1:{hung.getsockname()[1]}/0")
        api = caller(app, "10.0.0.1")
        durations = []
        with caplog.at_level(logging.WARNING, logger="app.lib.ratelimit"):
            for _ in range(8):
                started = time.monotonic()
                assert api.get("/ains/tasks", personas.client).status_code == 200
                durations.append(time.monotonic() - started)
    assert 0.4 < durations[0] < 2.5, durations  # two tries of 0.5 s (timeouts, not 40 s)
    assert max(durations[1:]) < 0.4, durations  # the outage is known: Redis is not asked
    assert len([r for r in caplog.records if r.name == "app.lib.ratelimit"]) == 1


@contextmanager
def private_redis(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A redis-server of our own on ``port``, which the test may stop."""
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield server
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_it_fails_open_while_redis_is_down_and_enforces_again_when_it_is_back(
    app: Flask,
    limit: Callable[..., None],
    personas: Personas,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr("app.lib.ratelimit.OUTAGE_RECHECK_SECONDS", 0.3)
    port = free_port()
    api = caller(app, "10.0.0.1")
    with caplog.at_level(logging.INFO, logger="app.lib.ratelimit"):
        with private_redis(port) as server:
            limit(RATE_LIMIT_REDIS_URL=f"redis://127.0.0.1:{port}/0")
            spend(api, 3, "GET", "/ains/tasks", personas.client)
            server.terminate()
            server.wait(10)
            spend(api, 10, "GET", "/ains/tasks", personas.client)  # unchecked, not refused
        with private_redis(port):
            time.sleep(0.35)
            spend(api, 5, "GET", "/ains/tasks", personas.client)  # a fresh Redis: 5 again
            assert_error(api.get("/ains/tasks", personas.client), 429, "rate_limited")
    messages = [r.getMessage() for r in caplog.records if r.name == "app.lib.ratelimit"]
    assert len(messages) == 2, messages
    assert "not enforced" in messages[0] and "enforced again" in messages[1]


@pytest.mark.parametrize("value", ["lots", "5/fortnight", "0/second", "10/second;"])
def test_it_refuses_a_bad_rate_at_start_up(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("RATE_LIMIT_SUBMIT", value)
    with pytest.raises(ConfigError, match="RATE_LIMIT_SUBMIT"):
        env_rate("RATE_LIMIT_SUBMIT", "3000/second")


def test_it_reads_a_rate_and_a_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_LIMIT_SUBMIT", " 20/second;1000/hour ")
    assert env_rate("RATE_LIMIT_SUBMIT", "3000/second") == "20/second;1000/hour"
    monkeypatch.setenv("RATE_LIMIT_REDIS_URL", "memcached://localhost")
    with pytest.raises(ConfigError, match="RATE_LIMIT_REDIS_URL"):
        env_redis_url("RATE_LIMIT_REDIS_URL")


def test_a_flood_of_refused_calls_writes_one_audit_row_per_caller_a_minute(
    app: Flask, limit: Callable[..., None], personas: Personas
) -> None:
    from app.extensions import db
    from app.models import AuditEvent

    limit()  # writes: 3 an hour per key
    api = caller(app, "10.0.0.7")
    statuses = [
        api.post("/ains/task-chains/nosuch/cancel", personas.client, json={}).status_code
        for _ in range(8)
    ]
    assert statuses.count(429) == 5
    other = caller(app, "10.0.0.8")
    assert (
        other.post("/ains/task-chains/x/cancel", personas.other_client, json={}).status_code != 429
    )
    with app.app_context():
        rows = db.session.scalars(db.select(AuditEvent).order_by(AuditEvent.id)).all()
        refused = [r for r in rows if r.status_code == 429]
        assert len(refused) == 1 and refused[0].address == "10.0.0.7"
        assert len(rows) == 3 + 1 + 1  # three let through, the first refusal, the other client
        db.session.remove()
