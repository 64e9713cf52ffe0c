"""GET /metrics from a real gunicorn with two workers, beside a real RQ worker and clock.

The HTTP counters are summed over the workers (prometheus_client's multiprocess mode): a
scrape shows every request whichever worker answered it, and those of a worker that died.
The domain counters the worker and the clock increment show in the web's /metrics.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from flask import Flask

from app.extensions import db
from app.models import Role
from app.services import scheduling, webhooks
from app.services.principal import SYSTEM, Principal
from tests.conftest import Personas
from tests.metrics.support import Scrape
from tests.processes import Process, WebServer, process_env, start_web, wait_until
from tests.webhook_receiver import Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HEALTH = {"method": "GET", "status": "200", "endpoint": "api.health"}
COUNT = "flask_http_request_duration_seconds_count"


def children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (gunicorn's workers)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def scrape(server: WebServer) -> Scrape:
    response = requests.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 200, response.text[:500]
    return Scrape(response.text)


def hit(server: WebServer, n: int) -> None:
    """``n`` GET /health, each on its own connection, several at a time."""

    def one(_: int) -> int:
        return requests.get(f"{server.url}/health", timeout=10).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(one, range(n))) == {200}


@pytest.fixture
def web(app: Flask, tmp_path: Path) -> Iterator[tuple[WebServer, Path]]:
    """gunicorn with two workers and a multiprocess directory holding a stale file."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    (directory / "counter_4242.db").write_bytes(b"not a metrics file")
    server = start_web(
        app,
        name="metrics-web",
        WEB_CONCURRENCY="2",
        WEB_THREADS="8",
        METRICS_CACHE_SECONDS="0",
        PROMETHEUS_MULTIPROC_DIR=str(directory),
    )
    yield server, directory
    server.process.stop()


def test_http_counters_add_up_over_workers_and_survive_a_dead_worker(
    web: tuple[WebServer, Path],
) -> None:
    server, directory = web
    master = server.process.proc.pid
    wait_until(lambda: len(children(master)) == 2, 90, "two gunicorn workers")
    assert not (directory / "counter_4242.db").exists()  # cleaned at start

    before = scrape(server).get(COUNT, **HEALTH)
    hit(server, 40)
    # Every scrape, whichever worker answers it, shows all 40.
    seen = {scrape(server).get(COUNT, **HEALTH) - before for _ in range(8)}
    assert seen == {40}

    # A worker that served requests dies; gunicorn starts another; its requests still count.
    served = [p for p in children(master) if (directory / f"counter_{p}.db").exists()]
    assert served, sorted(os.listdir(directory))
    os.kill(served[0], signal.SIGKILL)
    wait_until(
        lambda: len(children(master) - {served[0]}) == 2 and served[0] not in children(master),
        90,  # a new worker imports the app: slow on a loaded machine
        "gunicorn to replace the killed worker",
    )
    hit(server, 10)
    seen = {scrape(server).get(COUNT, **HEALTH) - before for _ in range(8)}
    assert seen == {50}
    assert scrape(server).total("flask_http_request_total", method="GET", status="200") >= 50


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver(default=200)
    yield started
    started.stop()


def test_worker_and_clock_counters_show_in_the_web_metrics(
    app: Flask, personas: Personas, web: tuple[WebServer, Path], receiver: Receiver
) -> None:
    server, _ = web
    client = Principal(role=Role.CLIENT, name="client one", client_id="client-1")
    with app.app_context():
        webhooks.create_webhook(client, url=receiver.url, events=["task.created"])
        fields = {
            "client_id": "client-1",
            "task_type": "tick",
            "capability_required": "nobody-v1",
            "interval_seconds": 1,
        }
        scheduling.create_schedule(SYSTEM, fields)
        db.session.remove()
    env = process_env(app)
    processes = [
        Process("metrics-worker", [sys.executable, "-m", "jobs.worker"], env),
        Process("metrics-clock", [sys.executable, "-m", "jobs.clock"], env),
    ]
    try:
        submitted = requests.post(
            f"{server.url}/ains/tasks",
            headers=personas.client.headers,
            json={"task_type": "report", "capability_required": "nobody-v1"},
            timeout=10,
        )
        assert submitted.status_code == 201, submitted.text

        def counted() -> Scrape | None:
            result = scrape(server)
            ready = (
                result.get("ains_schedules_fired_total") >= 2  # the clock
                and result.get("ains_webhook_deliveries_total", outcome="delivered") >= 2
                and result.get("ains_rq_workers") >= 1
            )
            return result if ready else None

        result = wait_until(counted, 120, "the worker's and the clock's counters in /metrics")
        # Scheduled runs are tasks too: counted by the clock, read by the web.
        assert result.get("ains_tasks_created_total", capability="nobody-v1") >= 3
        assert result.get("ains_schedule_fire_lateness_seconds_count") >= 2
        assert result.value("ains_metrics_source_up", source="redis") == 1
    finally:
        for process in processes:
            process.stop()
