"""GET /health/ready: ready only with the dependencies up, the schema at the migrations'
head, an RQ worker on each queue and the clock seen lately; otherwise 503 naming what is
missing. Real worker and clock processes where it says they run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from rq import Queue, SimpleWorker
from sqlalchemy import text

from app import create_app, webhook_queue_name
from app.api.health import head_revision
from app.api.schemas import HealthOut
from app.config import TestConfig, normalise_database_url
from app.extensions import db, redis_client
from app.lib import ratelimit
from app.lib.clock import utcnow
from app.services import lifecycle
from tests.conftest import Api
from tests.processes import (  # noqa: F401  (fixtures)
    Process,
    clock,
    free_port,
    rq_worker,
)

ALL_CHECKS = {"database", "redis", "migrations", "worker", "clock"}


def ready(api: Api) -> tuple[int, dict[str, Any]]:
    response = api.get("/health/ready")
    body = response.get_json()
    HealthOut.model_validate(body)
    assert body["status"] == ("ok" if response.status_code == 200 else "degraded")
    return response.status_code, body["checks"]


def failing(checks: dict[str, str]) -> set[str]:
    return {name for name, value in checks.items() if value != "ok"}


def beat(app: Flask, name: str, age_seconds: float) -> None:
    with app.app_context():
        lifecycle.record_process_beat(name, {}, now=utcnow() - timedelta(seconds=age_seconds))
        db.session.remove()


@pytest.fixture
def fake_worker(app: Flask) -> Iterator[SimpleWorker]:
    """An entry in RQ's worker registry for both queues, as a live worker leaves one."""
    connection = redis_client(app.config["REDIS_URL"])
    names = [app.config["RQ_QUEUE"], webhook_queue_name(app.config)]
    worker = SimpleWorker([Queue(n, connection=connection) for n in names], connection=connection)
    worker.register_birth()
    yield worker
    worker.register_death()


def test_it_is_ready_with_a_real_worker_and_clock_running(
    api: Api,
    rq_worker: Process,  # noqa: F811
    clock: Process,  # noqa: F811
) -> None:
    deadline = time.monotonic() + 90  # two processes starting on a busy machine
    status, checks = ready(api)
    while status != 200 and time.monotonic() < deadline:
        time.sleep(0.25)
        status, checks = ready(api)
    assert (status, checks) == (200, dict.fromkeys(ALL_CHECKS, "ok")), (
        rq_worker.output()[-2000:] + clock.output()[-2000:]
    )


def test_it_names_the_worker_and_clock_when_neither_runs(api: Api) -> None:
    status, checks = ready(api)
    assert status == 503
    assert failing(checks) == {"worker", "clock"}
    assert checks["clock"] == "never seen"
    assert checks["worker"].startswith("no worker seen on queue ains")
    assert {checks[n] for n in ("database", "redis", "migrations")} == {"ok"}


def test_it_names_only_the_clock_when_the_worker_runs(api: Api, fake_worker: SimpleWorker) -> None:
    status, checks = ready(api)
    assert (status, failing(checks)) == (503, {"clock"})


def test_it_names_only_the_worker_when_the_clock_runs(app: Flask, api: Api) -> None:
    beat(app, "clock", 1)
    status, checks = ready(api)
    assert (status, failing(checks)) == (503, {"worker"})


def test_a_clock_silent_too_long_counts_as_gone(
    app: Flask, api: Api, fake_worker: SimpleWorker
) -> None:
    limit = app.config["READY_MAX_SILENCE_SECONDS"]
    beat(app, "clock", limit // 2)  # well inside: a slow machine may stall for seconds
    assert ready(api) == (200, dict.fromkeys(ALL_CHECKS, "ok"))
    beat(app, "clock", limit + 60)
    status, checks = ready(api)
    assert (status, failing(checks)) == (503, {"clock"})
    assert checks["clock"].startswith("last seen ") and checks["clock"].endswith("s ago")


def test_a_worker_silent_too_long_counts_as_gone(
    app: Flask, api: Api, fake_worker: SimpleWorker
) -> None:
    """A killed worker stays in RQ's registry until its key expires: its heartbeat tells."""
    beat(app, "clock", 1)
    old = utcnow() - timedelta(seconds=app.config["READY_MAX_SILENCE_SECONDS"] + 30)
    connection = redis_client(app.config["REDIS_URL"])
    connection.hset(fake_worker.key, "last_heartbeat", old.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    status, checks = ready(api)
    assert (status, failing(checks)) == (503, {"worker"})


def test_a_worker_on_one_queue_only_leaves_the_other_named(app: Flask, api: Api) -> None:
    beat(app, "clock", 1)
    connection = redis_client(app.config["REDIS_URL"])
    worker = SimpleWorker(
        [Queue(app.config["RQ_QUEUE"], connection=connection)], connection=connection
    )
    worker.register_birth()
    try:
        status, checks = ready(api)
    finally:
        worker.register_death()
    assert status == 503
    assert checks["worker"] == f"no worker seen on queue {webhook_queue_name(app.config)}"


@pytest.fixture
def older_schema(app: Flask) -> Iterator[str]:
    """The database stamped one revision behind the scripts' head (restored after)."""
    with app.app_context():
        head = head_revision()
        older = f"{int(head) - 1:04d}"
        with db.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": older})
        db.session.remove()
    try:
        yield older
    finally:
        with app.app_context():
            with db.engine.begin() as conn:
                conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})
            db.session.remove()


def test_it_names_the_migrations_when_the_database_is_behind(
    app: Flask, api: Api, fake_worker: SimpleWorker, older_schema: str
) -> None:
    beat(app, "clock", 1)
    status, checks = ready(api)
    assert (status, failing(checks)) == (503, {"migrations"})
    assert checks["migrations"] == (
        f"not at head: database at {older_schema}, code at {head_revision()}"
    )


def test_the_head_is_the_newest_migration_script() -> None:
    from tests.conftest import ROOT

    newest = sorted(p.name for p in (ROOT / "migrations" / "versions").glob("[0-9]*.py"))[-1]
    assert head_revision() == newest.split("_")[0]


class UnreachableDatabase(TestConfig):
    SQLALCHEMY_DATABASE_URI = normalise_database_url(
        f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
    )
    SQLALCHEMY_ENGINE_OPTIONS = {"connect_args": {"connect_timeout": 2}}


def test_it_names_the_database_and_what_it_cannot_check_when_the_database_is_down(
    fake_worker: SimpleWorker,
) -> None:
    down = create_app(UnreachableDatabase)
    status, checks = ready(Api(down.test_client()))
    assert status == 503
    assert failing(checks) == {"database", "migrations", "clock"}
    assert checks["database"].startswith("down: ")
    assert checks["migrations"] == checks["clock"] == "unknown: database down"
    assert checks["worker"] == checks["redis"] == "ok"


def test_it_names_redis_and_the_worker_when_redis_is_down(
    app: Flask, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    beat(app, "clock", 1)
    monkeypatch.setitem(app.config, "REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    status, checks = ready(api)
    assert (status, failing(checks)) == (503, {"redis", "worker"})
    assert checks["worker"] == "unknown: redis down"


def test_it_needs_no_key_and_is_never_rate_limited(app: Flask, api: Api) -> None:
    saved = dict(app.config)
    app.config.update(RATE_LIMIT_PER_ADDRESS="2/hour")
    ratelimit.init_app(app)
    try:
        codes = [api.get("/health/ready").status_code for _ in range(5)]
        codes.append(api.get("/health/ready", headers={"Authorization": "Bearer junk"}).status_code)
        # The address's budget is real, and the probes spent none of it.
        others = [api.get("/ains/tasks").status_code for _ in range(3)]
    finally:
        app.config.clear()
        app.config.update(saved)
        ratelimit.init_app(app)
    assert codes == [503] * 6
    assert others == [401, 401, 429]


def test_openapi_documents_it_without_security_or_429(api: Api) -> None:
    spec = api.get("/openapi.json").get_json()
    operation = spec["paths"]["/health/ready"]["get"]
    assert "security" not in operation
    assert {"200", "503"} <= set(operation["responses"]) and "429" not in operation["responses"]
    assert operation["tags"] == ["Operations"]


def test_liveness_stays_the_database_and_redis_only(api: Api) -> None:
    response = api.get("/health")
    assert response.status_code == 200
    assert response.get_json()["checks"] == {"database": "ok", "redis": "ok"}
