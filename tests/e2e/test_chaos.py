"""Chaos: agents killed mid-task, the worker killed, Redis flushed; nothing lost or run twice.

On PostgreSQL, 8 real sample agents work through 2,000 tasks over HTTP (some fail at
random, some are slow, a few fail for good or overrun their timeout) while the test
SIGKILLs an agent every few seconds and starts a new one, SIGKILLs and restarts the RQ
worker, the clock and the web server once each, and flushes Redis once. At the end every
task must be in a terminal state, none completed twice, and every task's attempts, retry
count and event history must agree with each other. The counts and the lateness of
dead-agent requeues and timeouts are printed and written to test-artifacts/chaos.json.

The web server, worker and clock share one Redis database with nothing else, so FLUSHDB
empties everything AINS keeps in Redis (FLUSHALL would also hit other runs sharing the
server).
"""

from __future__ import annotations

import itertools
import json
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask

from app.extensions import db, redis_client
from app.models import Agent, AttemptOutcome, Task, TaskAttempt, TaskEvent, TaskStatus
from tests.conftest import Personas
from tests.processes import ARTIFACTS, Process, WebServer, process_env, start_agent, start_web

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres_only]

TASKS = 2000
AGENTS = 8
CONCURRENCY = 4
KILL_EVERY_SECONDS = 3.0
CHAOS_SECONDS = 45.0  # kills stop after this, so the last retries can drain
WORKER_RESTART_AT = 6.0
CLOCK_RESTART_AT = 10.0
FLUSH_AT = 14.0
WEB_RESTART_AT = 18.0
DEADLINE_SECONDS = 240.0
MAX_RETRIES = 6


def task_body(rng: random.Random, n: int) -> dict[str, Any]:
    """Mostly quick tasks; some slow, a few that fail for good or overrun their timeout."""
    body: dict[str, Any] = {
        "task_type": "chaos",
        "capability_required": "report-v1",
        "max_retries": MAX_RETRIES,
        "retry_policy": "exponential",
        "priority": rng.randint(1, 10),
    }
    roll = rng.random()
    if roll < 0.02:
        body.update(timeout_seconds=1, input_data={"n": n, "sleep": 4})
    elif roll < 0.05:
        body["input_data"] = {"n": n, "fail": "permanent"}
    elif roll < 0.20:
        body["input_data"] = {"n": n, "sleep": round(rng.uniform(0.3, 1.5), 2)}
    else:
        body["input_data"] = {"n": n, "sleep": 0.01}
    return body


def start_chaos_web(app: Flask, n: int, port: int | None = None) -> WebServer:
    return start_web(app, name=f"chaos-web-{n}", port=port, WEB_CONCURRENCY="2", WEB_THREADS="32")


@pytest.fixture
def web(app: Flask) -> Iterator[list[WebServer]]:
    servers = [start_chaos_web(app, 0)]
    yield servers
    servers[-1].process.stop()


def start_worker(app: Flask, n: int) -> Process:
    return Process(f"chaos-worker-{n}", [sys.executable, "-m", "jobs.worker"], process_env(app))


def start_clock(app: Flask, n: int) -> Process:
    return Process(f"chaos-clock-{n}", [sys.executable, "-m", "jobs.clock"], process_env(app))


def kill(process: Process) -> None:
    process.signal(9)
    process.proc.wait(10)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def test_nothing_is_lost_or_completed_twice_under_chaos(
    app: Flask, personas: Personas, web: list[WebServer], capsys: pytest.CaptureFixture[str]
) -> None:
    url = web[0].url
    rng = random.Random(20261122)
    workers = [start_worker(app, 0)]
    clocks = [start_clock(app, 0)]
    agent_args = ("--capability", "report-v1", "--concurrency", str(CONCURRENCY))
    agent_args += ("--fail-rate", "0.1")
    started = 0

    def new_agent() -> Process:
        nonlocal started
        started += 1
        return start_agent(app, url, personas.fleet.key, *agent_args, name=f"chaos-agent-{started}")

    agents = [new_agent() for _ in range(AGENTS)]
    killed = 0
    try:
        for agent in agents:
            agent.wait_for_line("Agent started:", timeout=30)
        for start in range(0, TASKS, 100):
            batch = [task_body(rng, n) for n in range(start, start + 100)]
            response = requests.post(
                f"{url}/ains/tasks/batch",
                json={"tasks": batch, "atomic": True},
                headers=personas.client.headers,
                timeout=30,
            )
            assert response.status_code == 201, response.text
        t0 = time.monotonic()
        next_kill = t0 + KILL_EVERY_SECONDS
        done: set[str] = set()
        while True:
            now = time.monotonic()
            elapsed = now - t0
            if open_tasks(app) == 0:
                break
            assert elapsed < DEADLINE_SECONDS, f"{open_tasks(app)} tasks still open"
            if elapsed < CHAOS_SECONDS and now >= next_kill:
                kill(agents.pop(rng.randrange(len(agents))))
                killed += 1
                agents.append(new_agent())
                # On a fixed grid: the loop's own latency (a sleep, a count, a process start)
                # must not push every later kill back and cost one over the run.
                next_kill += KILL_EVERY_SECONDS
            if "worker" not in done and elapsed >= WORKER_RESTART_AT:
                kill(workers[-1])
                workers.append(start_worker(app, len(workers)))
                done.add("worker")
            if "clock" not in done and elapsed >= CLOCK_RESTART_AT:
                kill(clocks[-1])
                clocks.append(start_clock(app, len(clocks)))
                done.add("clock")
            if "flush" not in done and elapsed >= FLUSH_AT:
                redis_client(app.config["REDIS_URL"]).flushdb()
                done.add("flush")
            if "web" not in done and elapsed >= WEB_RESTART_AT:
                # Same port: the agents ride out the gap with their connection retries.
                kill(web[-1].process)
                web.append(start_chaos_web(app, len(web), port=int(url.rsplit(":", 1)[1])))
                done.add("web")
            time.sleep(0.25)
        drained_after = time.monotonic() - t0
        assert done == {"worker", "clock", "flush", "web"}, f"the run ended early: {done}"
    finally:
        for process in [*agents, *workers, *clocks]:
            process.stop(timeout=10)

    report = check_consistency(app)
    report.update(
        tasks=TASKS,
        agents_killed=killed,
        agents_started=started,
        worker_restarts=1,
        clock_restarts=1,
        web_restarts=1,
        redis_flushes=1,
        drained_seconds=round(drained_after, 1),
    )
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "chaos.json").write_text(json.dumps(report, indent=2))
    with capsys.disabled():
        print("\nchaos:", json.dumps(report, indent=2))
    # An agent died every KILL_EVERY_SECONDS for as long as there was work (a fast machine
    # drains sooner, so the count follows the run's length rather than a fixed number).
    assert killed >= max(5, int(min(drained_after, CHAOS_SECONDS) / KILL_EVERY_SECONDS) - 1)
    assert report["lost_attempts"] > 0, "the kills should have cost some attempts"
    assert report["by_status"].get("COMPLETED", 0) > TASKS * 0.8


def open_tasks(app: Flask) -> int:
    with app.app_context():
        count = db.session.scalar(
            db.select(db.func.count())
            .select_from(Task)
            .where(Task.status.not_in(TaskStatus.TERMINAL))
        )
        db.session.remove()
    return int(count or 0)


def check_consistency(app: Flask) -> dict[str, Any]:
    """Assert that every task's story adds up; return the counts for the report."""
    with app.app_context():
        tasks = {t.id: t for t in db.session.scalars(db.select(Task))}
        attempts: dict[str, list[TaskAttempt]] = defaultdict(list)
        for attempt in db.session.scalars(db.select(TaskAttempt).order_by(TaskAttempt.number)):
            attempts[attempt.task_id].append(attempt)
        events: dict[str, list[TaskEvent]] = defaultdict(list)
        for event in db.session.scalars(db.select(TaskEvent).order_by(TaskEvent.id)):
            events[event.task_id].append(event)
        agents = list(db.session.scalars(db.select(Agent)))
        db.session.remove()

    assert len(tasks) == TASKS, "no task may be lost"
    by_status = Counter(t.status for t in tasks.values())
    assert set(by_status) <= TaskStatus.TERMINAL, by_status
    outcomes: Counter[str] = Counter()
    lost_late: list[float] = []
    timeout_late: list[float] = []
    for task_id, task in tasks.items():
        runs = attempts[task_id]
        history = events[task_id]
        outcomes.update(a.outcome for a in runs)
        # Attempts: numbered 1..attempt, all closed, at most one completed (and only then).
        assert [a.number for a in runs] == list(range(1, task.attempt + 1)), task_id
        assert all(a.outcome != AttemptOutcome.RUNNING and a.ended_at for a in runs), task_id
        completed = [a for a in runs if a.outcome == AttemptOutcome.COMPLETED]
        assert len(completed) == (1 if task.status == TaskStatus.COMPLETED else 0), task_id
        if completed:
            assert completed[0] is runs[-1], task_id
        # Events: one chain from creation to the final status, one claim per attempt.
        assert history[0].from_status is None and history[-1].to_status == task.status
        for before, after in itertools.pairwise(history):
            assert after.from_status == before.to_status, (task_id, before.id, after.id)
        to = Counter(e.to_status for e in history if e.from_status != e.to_status)
        assert to[TaskStatus.COMPLETED] <= 1, f"{task_id} completed twice"
        assert to[TaskStatus.ACTIVE] == task.attempt, task_id
        retries = sum(
            1
            for e in history
            if (e.from_status, e.to_status) == (TaskStatus.ACTIVE, TaskStatus.PENDING)
        )
        assert retries == task.retry_count <= task.max_retries, task_id
        for event in history:
            data = event.data or {}
            if "late_ms" not in data:
                continue
            if data.get("outcome") == AttemptOutcome.AGENT_LOST:
                lost_late.append(data["late_ms"])
            elif data.get("outcome") == AttemptOutcome.TIMED_OUT:
                timeout_late.append(data["late_ms"])
    # Every slot an agent took was given back, dead agents included.
    assert {a.id: a.active_tasks for a in agents if a.active_tasks} == {}

    def summary(values: list[float]) -> dict[str, float]:
        if not values:
            return {"n": 0}
        return {
            "n": len(values),
            "p50_ms": statistics.median(values),
            "p95_ms": percentile(values, 0.95),
            "max_ms": max(values),
        }

    return {
        "by_status": dict(sorted(by_status.items())),
        "attempts_by_outcome": dict(sorted(outcomes.items())),
        "lost_attempts": outcomes[AttemptOutcome.AGENT_LOST],
        "completed_twice": 0,
        "dead_agent_requeue_lateness": summary(lost_late),
        "timeout_lateness": summary(timeout_late),
    }
