"""GET /metrics in-process: seed 002's seven checks, the domain metrics of each kind of
state change, and what a scrape does when Redis or the database misbehaves."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from flask import Flask
from sqlalchemy import text

from app.api.metrics import KNOWN_METHODS, DomainCollector
from app.config import ConfigError, prometheus_multiproc_dir
from app.extensions import db
from app.lib.clock import utcnow
from app.models import Role, WebhookDelivery
from app.services import lifecycle, metrics, scheduling, webhooks
from app.services.principal import SYSTEM, Principal
from tests.conftest import Api, Personas
from tests.metrics.support import CONTRACT_NAMES, Scrape
from tests.webhook_receiver import Receiver, Reply

CAP = "report-v1"


def scrape(api: Api) -> Scrape:
    response = api.get("/metrics")
    assert response.status_code == 200, response.data[:500]
    assert response.headers["Content-Type"].startswith("text/plain")
    return Scrape(response.get_data(as_text=True))


def heartbeat(api: Api, agent_id: str, agent: object, status: str = "ACTIVE") -> None:
    response = api.post(
        f"/ains/agents/{agent_id}/heartbeat",
        agent,
        json={"status": status, "uptime_ms": 1000, "metrics": {}},
    )
    assert response.status_code == 200, response.get_json()


def running(
    api: Api, personas: Personas, capability: str = CAP, **fields: object
) -> tuple[str, str, object]:
    """A task claimed by a fresh agent of its own capability: (task id, agent id, agent)."""
    agent_id, agent = api.register_agent(personas.fleet, capabilities=(capability,))
    task_id = api.submit(personas.client, capability_required=capability, **fields)["task_id"]
    assert [t["task_id"] for t in api.claim(agent_id, agent)] == [task_id]
    return task_id, agent_id, agent


# --------------------------------------------------------------------- seed 002's checks


def test_agent_registration_tracking_metrics(api: Api, personas: Personas) -> None:
    before = scrape(api)
    assert before.get("ains_agent_registrations_total") == 0
    assert before.value("ains_agents", status="AVAILABLE") == 0
    first, _ = api.register_agent(personas.fleet, capabilities=("report-v1", "pdf-v2"))
    hostile = 'bad "name" {x="1"} \\ back'
    second, _ = api.register_agent(personas.fleet, name=hostile)
    body = {"display_name": "x", "public_key": "pk-metrics", "capabilities": [{"name": CAP}]}
    assert api.post("/ains/agents", personas.fleet, json=body).status_code == 201
    # A refused registration (the same public key again) counts nothing.
    assert api.post("/ains/agents", personas.fleet, json=body).status_code == 409

    after = scrape(api)
    assert after.get("ains_agent_registrations_total") == 3
    assert after.value("ains_agents", status="AVAILABLE") == 3
    assert after.value("ains_agents_active") == 3
    assert after.value("ains_capability_agents_online", capability=CAP) == 3
    assert after.value("ains_capability_agents_online", capability="pdf-v2") == 1
    assert after.value("ains_agent_trust_score", agent_id=first, display_name="agent") == 0.5
    # A hostile display name is escaped: it cannot break the exposition or add labels.
    assert after.value("ains_agent_trust_score", agent_id=second, display_name=hostile) == 0.5


def test_agent_heartbeat_and_active_count_updates(api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    other_id, other = api.register_agent(personas.fleet)
    heartbeat(api, agent_id, agent)
    heartbeat(api, other_id, other, "DEGRADED")
    result = scrape(api)
    assert result.get("ains_agent_heartbeats_total") == 2
    assert result.value("ains_agents_active") == 1
    assert result.value("ains_agents", status="BUSY") == 1
    assert result.value("ains_capability_agents_online", capability=CAP) == 2

    heartbeat(api, agent_id, agent, "OFFLINE")
    # Someone else's agent: refused, not counted.
    refused = api.post(
        f"/ains/agents/{agent_id}/heartbeat",
        personas.other_fleet,
        json={"status": "ACTIVE", "uptime_ms": 1, "metrics": {}},
    )
    assert refused.status_code in (403, 404)
    result = scrape(api)
    assert result.get("ains_agent_heartbeats_total") == 3
    assert result.value("ains_agents_active") == 0
    assert result.value("ains_agents", status="INACTIVE") == 1
    assert result.value("ains_capability_agents_online", capability=CAP) == 1


def test_health_endpoint_returns_ok(api: Api) -> None:
    response = api.get("/health")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"
    # /health itself is measured, by its endpoint.
    assert (
        scrape(api).get(
            "flask_http_request_duration_seconds_count",
            method="GET",
            status="200",
            endpoint="api.health",
        )
        >= 1
    )


def test_metrics_expose_all_families(api: Api) -> None:
    result = scrape(api)  # an empty system: every family is still declared
    missing = [n for n in CONTRACT_NAMES if n not in result.types]
    assert missing == []
    assert result.types["ains_tasks_created_total"] == "counter"
    assert result.types["ains_task_run_seconds"] == "histogram"
    assert result.types["ains_queue_tasks"] == "gauge"
    for name in ("ains_agent_registrations_total", "ains_rq_workers", "ains_agents_active"):
        assert result.value(name) == 0, name
    assert result.value("ains_webhook_deliveries_total", outcome="given_up") == 0
    assert result.value("ains_rq_queue_jobs", queue="ains") == 0
    assert result.value("ains_metrics_source_up", source="redis") == 1
    assert result.value("ains_metrics_source_up", source="database") == 1


def test_task_creation_with_lifecycle_metrics(api: Api, personas: Personas) -> None:
    api.submit(personas.client, priority=7)
    api.submit(personas.client, capability_required="nobody-v1", priority=2)
    blocker = api.submit(personas.client, capability_required="nobody-v1")["task_id"]
    api.submit(personas.client, capability_required="nobody-v1", depends_on=[blocker])
    result = scrape(api)
    assert result.get("ains_tasks_created_total", capability=CAP) == 1
    assert result.get("ains_tasks_created_total", capability="nobody-v1") == 3
    assert result.value("ains_queue_tasks", status="PENDING", priority="7") == 1
    assert result.value("ains_queue_tasks", status="PENDING", priority="2") == 1
    assert result.value("ains_queue_tasks", status="BLOCKED", priority="5") == 1
    assert result.total("ains_queue_tasks") == 4
    assert result.value("ains_capability_pending_tasks", capability="nobody-v1") == 2
    assert result.value("ains_capability_agents_online", capability="nobody-v1") == 0
    assert result.value("ains_queue_oldest_pending_age_seconds", capability="nobody-v1") >= 0

    agent_id, agent = api.register_agent(personas.fleet)  # routes the report-v1 task to it
    assert scrape(api).value("ains_queue_tasks", status="ASSIGNED", priority="7") == 1
    assert len(api.claim(agent_id, agent)) == 1
    result = scrape(api)
    assert result.value("ains_queue_tasks", status="ACTIVE", priority="7") == 1
    assert result.get("ains_task_dispatch_latency_seconds_count", capability=CAP) == 1
    assert result.get("ains_task_dispatch_latency_seconds_bucket", capability=CAP, le="+Inf") == 1
    assert result.value("ains_capability_pending_tasks", capability=CAP) == 0


def test_task_completion_and_failure_updates_counters(api: Api, personas: Personas) -> None:
    done, _, agent = running(api, personas)
    assert (
        api.post(f"/ains/tasks/{done}/complete", agent, json={"result_data": {}}).status_code == 200
    )
    retried, _, agent = running(api, personas, "retry-v1")
    api.post(f"/ains/tasks/{retried}/fail", agent, json={"error_message": "503 upstream"})
    failed, _, agent = running(api, personas, "fail-v1")
    response = api.post(
        f"/ains/tasks/{failed}/fail", agent, json={"error_message": "bad input", "retryable": False}
    )
    assert response.get_json()["status"] == "FAILED"
    cancelled = api.submit(personas.client, capability_required="nobody-v1")["task_id"]
    assert api.post(f"/ains/tasks/{cancelled}/cancel", personas.client, json={}).status_code == 200
    # A second complete of a finished task is refused and counts nothing.
    assert api.post(f"/ains/tasks/{done}/complete", agent, json={}).status_code >= 400

    result = scrape(api)
    assert result.get("ains_tasks_completed_total", capability=CAP) == 1
    assert result.get("ains_task_retries_total", capability="retry-v1") == 1
    assert result.get("ains_tasks_failed_total", capability="retry-v1") == 0
    assert result.get("ains_tasks_failed_total", capability="fail-v1") == 1
    assert result.get("ains_task_retries_total", capability="fail-v1") == 0
    assert result.get("ains_tasks_cancelled_total", capability="nobody-v1") == 1
    assert result.total("ains_tasks_created_total") == 4
    run = "ains_task_run_seconds_count"
    assert result.get(run, capability=CAP, status="completed") == 1
    assert result.get(run, capability="retry-v1", status="failed") == 1
    assert result.get(run, capability="fail-v1", status="failed") == 1
    assert result.get("ains_task_run_seconds_sum", capability=CAP, status="completed") >= 0


def test_metrics_endpoint_functional(api: Api, personas: Personas) -> None:
    # The HTTP registry lives as long as the app, which the whole session shares: compare.
    count = "flask_http_request_duration_seconds_count"
    ok = {"method": "GET", "status": "200", "endpoint": "api.list_tasks"}
    refused = {**ok, "status": "401"}
    before = scrape(api)
    for _ in range(3):
        assert api.get("/ains/tasks", personas.client).status_code == 200
    assert api.get("/ains/tasks").status_code == 401
    result = scrape(api)  # no key needed
    assert result.get(count, **ok) - before.get(count, **ok) == 3
    assert result.get(count, **refused) - before.get(count, **refused) == 1
    # Scrapes do not measure themselves.
    assert not any(
        dict(labels).get("endpoint") == "prometheus_metrics"
        for name, labels in result.samples
        if name.startswith("flask_http")
    )
    only = api.get("/metrics?name[]=ains_agents_active")
    assert only.status_code == 200
    assert only.get_data(as_text=True).strip().splitlines()[-1] == "ains_agents_active 0.0"
    assert api.post("/metrics").status_code == 405
    openmetrics = api.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    assert openmetrics.get_data(as_text=True).rstrip().endswith("# EOF")


# --------------------------------------------------------------------- other state changes


def test_timeouts_and_expiry_are_counted(app: Flask, api: Api, personas: Personas) -> None:
    timed_out, _, _ = running(api, personas, timeout_seconds=5)
    api.submit(personas.client, capability_required="nobody-v1", expires_in_seconds=5)
    with app.app_context():
        lifecycle.sweep(utcnow() + timedelta(seconds=30))
        db.session.remove()
    result = scrape(api)
    assert result.get("ains_tasks_timed_out_total", capability=CAP) == 1
    assert result.get("ains_tasks_failed_total", capability=CAP) == 1  # no retry on timeout
    assert result.get("ains_task_run_seconds_count", capability=CAP, status="timed_out") == 1
    assert result.get("ains_tasks_expired_total", capability="nobody-v1") == 1
    assert api.get(f"/ains/tasks/{timed_out}", personas.client).get_json()["status"] == "FAILED"


def test_schedule_firing_counts_runs_and_lateness(app: Flask, api: Api) -> None:
    with app.app_context():
        fields = {
            "client_id": "client-1",
            "task_type": "tick",
            "capability_required": "nobody-v1",
            "interval_seconds": 60,
        }
        schedule = scheduling.create_schedule(SYSTEM, fields)
        due = schedule.next_run_at
        db.session.remove()
        result = scheduling.fire_due(due + timedelta(seconds=3))
        db.session.remove()
    assert result.fired == 1
    metrics_now = scrape(api)
    assert metrics_now.get("ains_schedules_fired_total") == 1
    assert metrics_now.get("ains_schedule_fire_lateness_seconds_count") == 1
    assert metrics_now.get("ains_schedule_fire_lateness_seconds_bucket", le="2.0") == 0
    assert metrics_now.get("ains_schedule_fire_lateness_seconds_bucket", le="5.0") == 1
    assert 2.9 < metrics_now.get("ains_schedule_fire_lateness_seconds_sum") < 3.1
    assert metrics_now.get("ains_tasks_created_total", capability="nobody-v1") == 1


@pytest.fixture
def hooks_receiving() -> Iterator[dict[int, Receiver]]:
    started = {status: Receiver(default=Reply(status=status)) for status in (200, 400, 410, 500)}
    yield started
    for receiver in started.values():
        receiver.stop()


def test_webhook_delivery_outcomes_are_counted(
    app: Flask, api: Api, personas: Personas, hooks_receiving: dict[int, Receiver]
) -> None:
    client = Principal(role=Role.CLIENT, name="client one", client_id="client-1")
    with app.app_context():
        for receiver in hooks_receiving.values():
            webhooks.create_webhook(client, url=receiver.url, events=["task.created"])
        db.session.remove()
    api.submit(personas.client, capability_required="nobody-v1")
    with app.app_context():
        ids = list(db.session.scalars(db.select(WebhookDelivery.id)))
        db.session.remove()
        outcomes = sorted(webhooks.deliver(i) or "none" for i in ids)
        db.session.remove()
    assert outcomes == ["delivered", "disabled", "permanent", "retry"]
    result = scrape(api)
    for outcome in ("delivered", "failed", "retrying", "disabled"):
        assert result.value("ains_webhook_deliveries_total", outcome=outcome) == 1, outcome
    assert result.value("ains_webhook_deliveries_total", outcome="given_up") == 0


# --------------------------------------------------------------------- failure paths


def test_a_rolled_back_transaction_counts_nothing(app: Flask, api: Api) -> None:
    with app.app_context():
        db.session.execute(text("SELECT 1"))  # as a service does before noting anything
        metrics.count("ains_agent_heartbeats_total", 5)
        metrics.observe("ains_schedule_fire_lateness_seconds", 1.0)
        db.session.rollback()
        db.session.commit()
        with db.session.begin_nested():  # a savepoint rolled back leaves the outer count
            metrics.count("ains_agent_heartbeats_total", 2)
        savepoint = db.session.begin_nested()
        savepoint.rollback()
        db.session.commit()
        db.session.remove()
    result = scrape(api)
    assert result.get("ains_agent_heartbeats_total") == 2
    assert result.get("ains_schedule_fire_lateness_seconds_count") == 0


def test_label_counts_are_checked(app: Flask) -> None:
    with app.app_context(), pytest.raises(ValueError):
        metrics.count("ains_tasks_created_total", 1)  # the capability is missing
    with app.app_context(), pytest.raises(KeyError):
        metrics.count("ains_no_such_total")


@pytest.fixture
def redis_down(app: Flask) -> Iterator[None]:
    """The metrics' Redis unreachable (nothing listens on port 1)."""
    metrics.store.configure("redis://127.0.0.1:1/0")
    yield
    metrics.store.configure(app.config["REDIS_URL"])


def test_redis_down_never_breaks_a_request_or_a_scrape(
    app: Flask, api: Api, personas: Personas, redis_down: None, caplog: pytest.LogCaptureFixture
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)  # counted nowhere: Redis is down
    heartbeat(api, agent_id, agent)
    api.submit(personas.client)
    result = scrape(api)
    assert result.value("ains_metrics_source_up", source="redis") == 0
    assert result.value("ains_metrics_source_up", source="database") == 1
    assert not result.has("ains_agent_registrations_total")
    assert not result.has("ains_rq_workers")
    # The database gauges and the HTTP metrics still answer.
    assert result.value("ains_agents_active") == 1
    assert result.total("flask_http_request_total") >= 3
    warnings = [r for r in caplog.records if "metrics: Redis unavailable" in r.getMessage()]
    assert len(warnings) == 1  # one per outage, not one per commit

    metrics.store.configure(app.config["REDIS_URL"])  # Redis is back
    heartbeat(api, agent_id, agent)
    result = scrape(api)
    assert result.value("ains_metrics_source_up", source="redis") == 1
    assert result.get("ains_agent_heartbeats_total") == 1  # what was lost stays lost


def test_database_down_still_answers(app: Flask, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.exc import OperationalError

    from app.api import metrics as endpoint

    def broken(now: object) -> None:
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(endpoint, "database_gauges", broken)
    result = scrape(api)
    assert result.value("ains_metrics_source_up", source="database") == 0
    assert result.value("ains_metrics_source_up", source="redis") == 1
    assert not result.has("ains_agents_active")
    assert result.value("ains_agent_registrations_total") == 0


def test_gauges_are_cached_counters_are_not(app: Flask, api: Api, personas: Personas) -> None:
    collector = DomainCollector(["ains"], cache_seconds=60)

    def collect() -> dict[str, float]:
        with app.test_request_context():
            values = {s.name: s.value for family in collector.collect() for s in family.samples}
            db.session.remove()
        return values

    first = collect()
    api.register_agent(personas.fleet)
    second = collect()
    assert first["ains_agents_active"] == second["ains_agents_active"] == 0
    assert second["ains_agent_registrations_total"] == 1
    collector.cache_seconds = 0
    assert collect()["ains_agents_active"] == 1


def test_a_multiprocess_dir_that_is_a_file_fails_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(not_a_dir))
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR must be a directory"):
        prometheus_multiproc_dir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "to-be-made"))
    assert prometheus_multiproc_dir() == str(tmp_path / "to-be-made")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    assert prometheus_multiproc_dir() is None


def test_made_up_http_methods_share_one_label_value(app: Flask, api: Api) -> None:
    """The method is the caller's: each made-up one must not become a series of its own
    (anyone could grow /metrics without bound, no key needed)."""
    client = app.test_client()
    before = scrape(api).get("flask_http_request_total", method="OTHER", status="405")
    for method in ("XYZ1", "XYZ2", "PURGE"):
        response = client.open("/health", method=method)
        assert response.status_code == 405
    assert client.open("/health", method="GET").status_code == 200
    result = scrape(api)
    methods = {
        dict(labels)["method"]
        for name, labels in result.samples
        if name == "flask_http_request_total"
    }
    # The app's registry lives as long as the app: earlier tests' methods may be there too.
    assert {"GET", "OTHER"} <= methods <= KNOWN_METHODS | {"OTHER"}
    assert result.get("flask_http_request_total", method="OTHER", status="405") == before + 3


def test_a_long_outage_warns_once_and_its_end_is_logged(
    app: Flask,
    api: Api,
    personas: Personas,
    redis_down: None,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics, "OUTAGE_RECHECK_SECONDS", 0.0)  # every commit retries Redis
    agent_id, agent = api.register_agent(personas.fleet)
    for _ in range(3):
        heartbeat(api, agent_id, agent)  # each retry fails again: the same outage
    warnings = [r for r in caplog.records if "metrics: Redis unavailable" in r.getMessage()]
    assert len(warnings) == 1
    # Redis is back (the same store, so the outage it remembers ends here).
    metrics.store.client = redis.Redis.from_url(app.config["REDIS_URL"])
    heartbeat(api, agent_id, agent)
    assert any("metrics: Redis answers again" in r.getMessage() for r in caplog.records)
    assert scrape(api).get("ains_agent_heartbeats_total") == 1


def test_a_savepoint_counts_only_with_its_transaction(app: Flask, api: Api) -> None:
    """SQLAlchemy runs the commit hooks when a savepoint is released: nothing may reach
    Redis then (the transaction may still roll back), and what a savepoint that rolls back
    noted goes with it."""
    heartbeats = metrics.counter_field("ains_agent_heartbeats_total", ())

    def stored() -> int:
        return int(metrics.store.client.hget(metrics.COUNTERS_KEY, heartbeats) or 0)

    with app.app_context():
        db.session.execute(text("SELECT 1"))
        with db.session.begin_nested():  # released, not committed
            metrics.count("ains_agent_heartbeats_total", 7)
        assert stored() == 0
        db.session.rollback()  # ... and the transaction rolls back: 7 never happened
        db.session.commit()
        assert stored() == 0

        db.session.execute(text("SELECT 1"))
        metrics.count("ains_agent_heartbeats_total", 1)
        with db.session.begin_nested():
            metrics.count("ains_agent_heartbeats_total", 2)
            inner = db.session.begin_nested()
            metrics.count("ains_agent_heartbeats_total", 100)
            metrics.observe("ains_schedule_fire_lateness_seconds", 1.0)
            inner.rollback()  # its 100 and its observation go
        failed = db.session.begin_nested()
        metrics.count("ains_agent_heartbeats_total", 1000)
        failed.rollback()
        assert stored() == 0
        db.session.commit()
        assert stored() == 3
        db.session.remove()
    result = scrape(api)
    assert result.get("ains_agent_heartbeats_total") == 3
    assert result.get("ains_schedule_fire_lateness_seconds_count") == 0
