"""SIGTERM, as a platform sends it on a deploy or restart: every process stops gracefully.

Real processes (gunicorn, the RQ worker, the clock, the sample agent) get SIGTERM while
they are busy: the web's in-flight requests complete and its waiting long polls answer at
once, the worker finishes its job, the clock finishes its pass, the agent finishes its task
(or, killed before it can, the task comes back and another agent completes it); each exits
0. Timings are asserted only against the gaps that matter (a 30 s long poll, a 25 s grace).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any
from urllib.parse import urlparse

import pytest
from flask import Flask

from agent_client import AgentClient
from app.extensions import db, redis_client
from app.lib.clock import utcnow
from app.models import Agent, AgentStatus, ScheduleExecution, Task, TaskAttempt, TaskStatus
from app.services import scheduling, webhooks
from app.services.principal import SYSTEM
from app.services.wakeups import Wakeups
from tests.conftest import Api, Personas
from tests.processes import Process, process_env, start_agent, start_web, wait_until
from tests.webhook_receiver import Receiver, Reply

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# How long a stopping process may take here (a busy 2-core machine); the platform's is 30 s.
EXIT_TIMEOUT = 30.0


def exit_code(process: Process, timeout: float = EXIT_TIMEOUT) -> int:
    try:
        return process.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"{process.name} still running {timeout}s after SIGTERM:\n{process.output()[-3000:]}"
        ) from None


def task_row(app: Flask, task_id: str) -> tuple[str, list[tuple[str, str]]]:
    """The task's status and its attempts as (agent_id, outcome), oldest first."""
    with app.app_context():
        task = db.session.get(Task, task_id)
        assert task is not None
        attempts = db.session.execute(
            db.select(TaskAttempt.agent_id, TaskAttempt.outcome)
            .where(TaskAttempt.task_id == task_id)
            .order_by(TaskAttempt.number)
        ).all()
        status = task.status
        db.session.remove()
    return status, [tuple(a) for a in attempts]  # type: ignore[misc]


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Processes a test starts; any still running at the end are stopped."""
    started: list[Process] = []
    yield started
    for process in reversed(started):
        process.stop()


# --------------------------------------------------------------------------- web


def test_shut_down_wakes_every_waiting_long_poll_and_later_waits_return_at_once(
    app: Flask,
) -> None:
    wakeups = Wakeups()
    wakeups.configure(redis_client(app.config["REDIS_URL"]))
    # Before the shutdown a token still wakes its agent's poll, and only that one.
    wakeups.notify_agents(["agent_a"])
    assert wakeups.wait("agent_a", 5) is True
    assert wakeups.wait("agent_b", 0.05) is False

    results: dict[str, bool] = {}
    waiters = [
        threading.Thread(target=lambda n=n: results.update({n: wakeups.wait(n, 30)}))
        for n in ("agent_1", "agent_2", "agent_3")
    ]
    started = time.monotonic()
    for waiter in waiters:
        waiter.start()
    wait_until(lambda: wakeups._waiting == 3, 10, "three polls waiting")
    assert wakeups.shut_down() == 3
    for waiter in waiters:
        waiter.join(15)
    assert not any(w.is_alive() for w in waiters), "a poll kept waiting after the shutdown"
    assert time.monotonic() - started < 20  # not their 30 s
    assert results == {"agent_1": False, "agent_2": False, "agent_3": False}
    # From now on no wait blocks, even with a token waiting.
    wakeups.notify_agents(["agent_a"])
    before = time.monotonic()
    assert wakeups.wait("agent_a", 30) is False
    assert time.monotonic() - before < 5
    assert wakeups.shut_down() == 0  # again: harmless


def test_web_sigterm_lets_an_in_flight_request_finish_then_exits_0(
    app: Flask, personas: Personas
) -> None:
    server = start_web(app, name="graceful-web-upload")
    try:
        body = json.dumps(
            {
                "task_type": "report",
                "capability_required": "nobody-v1",
                "input_data": {"note": "x" * 4000},
            }
        ).encode()
        url = urlparse(server.url)
        head = (
            f"POST /ains/tasks HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: Bearer {personas.client.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection((url.hostname, url.port), timeout=40) as conn:
            # A slow client: the request is in flight (a thread is reading its body) ...
            conn.sendall(head + body[:100])
            time.sleep(1.0)
            server.process.signal(signal.SIGTERM)
            # ... when the server is told to stop; the rest of the body arrives later.
            time.sleep(2.0)
            assert server.process.proc.poll() is None, "gunicorn quit with a request in flight"
            conn.sendall(body[100:])
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 201"), answer[:500]
        created = json.loads(rest.partition(b"\r\n\r\n")[2])
        assert exit_code(server.process) == 0
    finally:
        server.process.stop()
    status, attempts = task_row(app, created["task_id"])
    assert (status, attempts) == (TaskStatus.PENDING, [])


def test_web_sigterm_answers_a_waiting_long_poll_at_once(app: Flask, personas: Personas) -> None:
    server = start_web(app, name="graceful-web-poll")
    try:
        agent = AgentClient(server.url, personas.fleet.key)
        agent_id = agent.register("poller", "ab" * 32, ["idle-v1"])["agent_id"]
        answer: dict[str, Any] = {}

        def poll() -> None:
            try:
                answer["claim"] = agent.claim_with_cancellations(agent_id, 1, 30)
            except Exception as exc:  # reported by the assertion below
                answer["error"] = exc
            answer["at"] = time.monotonic()

        poller = threading.Thread(target=poll)
        poller.start()
        time.sleep(2.0)  # the poll is waiting (a late one sees the shutdown and returns too)
        assert poller.is_alive(), answer
        signalled = time.monotonic()
        server.process.signal(signal.SIGTERM)
        poller.join(EXIT_TIMEOUT)
        assert "error" not in answer, answer
        assert answer["claim"]["tasks"] == []
        # Well before its 30 s, and before gunicorn's 25 s grace would have cut it off.
        assert answer["at"] - signalled < 15
        assert exit_code(server.process) == 0
    finally:
        server.process.stop()


# --------------------------------------------------------------------------- worker


def test_worker_sigterm_finishes_the_running_job_then_exits_0(
    app: Flask, api: Api, personas: Personas, processes: list[Process]
) -> None:
    receiver = Receiver(default=Reply(delay=4.0))
    try:
        with app.app_context():
            hook, _ = webhooks.create_webhook(SYSTEM, url=receiver.url, events=["task.created"])
            hook_id = hook.id
            db.session.remove()
        worker = Process("graceful-worker", [sys.executable, "-m", "jobs.worker"], process_env(app))
        processes.append(worker)
        api.submit(personas.client, capability_required="nobody-v1")
        # The delivery job is running: its request is held by the receiver for 4 s.
        receiver.wait_for(1, timeout=30)
        worker.signal(signal.SIGTERM)
        assert exit_code(worker) == 0
        assert len(receiver.received()) == 1
        with app.app_context():
            page = webhooks.list_deliveries(SYSTEM, hook_id, limit=10)
            rows = [d.to_dict(page.attempts[d.id]) for d in page.deliveries]
            db.session.remove()
        assert [(r["status"], len(r["attempts"])) for r in rows] == [("delivered", 1)]
        assert "cold shut down" not in worker.output()
    finally:
        receiver.stop()


# --------------------------------------------------------------------------- clock


def test_clock_sigterm_exits_0_promptly_and_loses_or_doubles_no_due_time(
    app: Flask, processes: list[Process]
) -> None:
    with app.app_context():
        ids = [
            scheduling.create_schedule(
                SYSTEM,
                {
                    "client_id": "clocks",
                    "task_type": f"graceful-{n}",
                    "capability_required": "nobody-v1",
                    "interval_seconds": 1,
                },
            ).id
            for n in range(5)
        ]
        db.session.remove()
    # A generous grace: every due time missed between the two clocks is a late run.
    env = process_env(app, SCHEDULE_MISFIRE_GRACE_SECONDS="300")

    def fired() -> list[tuple[str, datetime, str | None]]:
        with app.app_context():
            rows = db.session.execute(
                db.select(
                    ScheduleExecution.schedule_id,
                    ScheduleExecution.scheduled_for,
                    ScheduleExecution.task_id,
                ).where(ScheduleExecution.schedule_id.in_(ids))
            ).all()
            db.session.remove()
        return [tuple(r) for r in rows]  # type: ignore[misc]

    first = Process("graceful-clock-1", [sys.executable, "-m", "jobs.clock"], env)
    processes.append(first)
    wait_until(lambda: len(fired()) >= 5 * 4, 60, "the first clock firing")
    signalled = time.monotonic()
    first.signal(signal.SIGTERM)
    assert exit_code(first) == 0
    # A pass, then interpreter shutdown: seconds, not the platform's 30 (a loaded CI
    # machine stretches both).
    assert time.monotonic() - signalled < 20
    stopped_at = utcnow()
    assert "Traceback" not in first.output()

    second = Process("graceful-clock-2", [sys.executable, "-m", "jobs.clock"], env)
    processes.append(second)

    def caught_up() -> bool:
        latest: dict[str, datetime] = {}
        for schedule_id, due, _ in fired():
            latest[schedule_id] = max(due, latest.get(schedule_id, due))
        return len(latest) == 5 and all(
            due > stopped_at + timedelta(seconds=2) for due in latest.values()
        )

    wait_until(caught_up, 60, "the second clock firing past the stop")
    second.signal(signal.SIGTERM)
    assert exit_code(second) == 0

    rows = fired()
    for schedule_id in ids:
        dues = sorted(due for sid, due, _ in rows if sid == schedule_id)
        assert len(dues) == len(set(dues)), f"{schedule_id}: a due time fired twice"
        gaps = {(b - a).total_seconds() for a, b in pairwise(dues)}
        assert gaps == {1.0}, f"{schedule_id}: due times lost around the stop: {gaps}"
    assert all(task_id is not None for _, _, task_id in rows)
    with app.app_context():
        task_ids = {task_id for _, _, task_id in rows}
        made = db.session.scalar(
            db.select(db.func.count()).select_from(Task).where(Task.id.in_(task_ids))
        )
        db.session.remove()
    assert made == len(rows), "every firing made exactly one task"


# --------------------------------------------------------------------------- sample agent


def test_agent_sigterm_mid_task_finishes_it_goes_offline_and_exits_0(
    app: Flask, api: Api, personas: Personas
) -> None:
    server = start_web(app, name="graceful-agent-web")
    agent = start_agent(
        app, server.url, personas.fleet.key, "--capability", "slow-v1", name="graceful-agent"
    )
    try:
        line = agent.wait_for_line("Agent started:", timeout=30)
        agent_id = line.split("Agent started:")[1].strip()
        task_id = api.submit(
            personas.client, capability_required="slow-v1", input_data={"sleep": 4}
        )["task_id"]
        agent.wait_for_line(f"Executing task... ({task_id})", timeout=30)
        agent.signal(signal.SIGTERM)
        assert exit_code(agent) == 0
        output = agent.output()
        assert "Shutting down: finishing 1 running task(s)" in output
        assert f"Result reported successfully ({task_id})" in output
        status, attempts = task_row(app, task_id)
        assert (status, attempts) == (TaskStatus.COMPLETED, [(agent_id, "completed")])
        with app.app_context():
            gone = db.session.get(Agent, agent_id)
            assert gone is not None and gone.status == AgentStatus.INACTIVE  # said OFFLINE
            db.session.remove()
    finally:
        agent.stop()
        server.process.stop()


def test_agent_killed_before_its_task_ends_loses_nothing_another_agent_completes_it(
    app: Flask, api: Api, personas: Personas, processes: list[Process]
) -> None:
    server = start_web(app, name="graceful-kill-web")
    processes.append(server.process)
    # The sweep that takes back a dead agent's tasks: the clock enqueues it, a worker runs it.
    env = process_env(app, RETRY_MAX_DELAY_SECONDS="1")
    processes.append(Process("graceful-kill-worker", [sys.executable, "-m", "jobs.worker"], env))
    processes.append(Process("graceful-kill-clock", [sys.executable, "-m", "jobs.clock"], env))
    first = start_agent(
        app, server.url, personas.fleet.key, "--capability", "slow-v1", name="graceful-kill-a"
    )
    processes.append(first)
    first_id = first.wait_for_line("Agent started:", timeout=30).split(":", 1)[1].strip()
    task_id = api.submit(personas.client, capability_required="slow-v1", input_data={"sleep": 5})[
        "task_id"
    ]
    first.wait_for_line(f"Executing task... ({task_id})", timeout=30)
    # The platform's SIGTERM, then its SIGKILL before the task could finish.
    first.signal(signal.SIGTERM)
    first.wait_for_line("Shutting down: finishing 1 running task(s)", timeout=15)
    first.signal(signal.SIGKILL)
    assert exit_code(first) == -signal.SIGKILL
    assert f"Result reported successfully ({task_id})" not in first.output()

    second = start_agent(
        app, server.url, personas.fleet.key, "--capability", "slow-v1", name="graceful-kill-b"
    )
    processes.append(second)
    second_id = second.wait_for_line("Agent started:", timeout=30).split(":", 1)[1].strip()
    second.wait_for_line(f"Result reported successfully ({task_id})", timeout=90)
    status, attempts = task_row(app, task_id)
    assert (status, attempts) == (
        TaskStatus.COMPLETED,
        [(first_id, "agent_lost"), (second_id, "completed")],
    )
