"""The sample agent stops tasks the server stops: a client's cancel, and a timeout.

Real processes: gunicorn, the sample agent CLI and, for timeouts, the RQ worker and clock.
The servers here never force a cancel themselves (CANCEL_GRACE_SECONDS is an hour), so a
task that ends CANCELLED within seconds was ended by the agent's confirmation.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from agent_client import TasksClient
from tests.conftest import Personas
from tests.processes import Process, WebServer, start_agent, start_web

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NO_FORCED_CANCEL = {"CANCEL_GRACE_SECONDS": "3600"}


@pytest.fixture(scope="module")
def server(app: Flask) -> Iterator[WebServer]:
    """One gunicorn for the module (heartbeats every second); tables are emptied per test."""
    started = start_web(app, name="web-agent-stops", **NO_FORCED_CANCEL)
    yield started
    started.process.stop()


@pytest.fixture
def tasks(server: WebServer, personas: Personas) -> Iterator[TasksClient]:
    client = TasksClient(server.url, personas.client.key)
    yield client
    client.session.close()  # an idle kept-alive connection holds up the server's exit


def start_sample_agent(app: Flask, server: WebServer, personas: Personas, name: str) -> Process:
    return start_agent(
        app, server.url, personas.fleet.key, "--capability", "slow-v1", "--wait-seconds", "1",
        name=name,
    )  # fmt: skip


def agent_id_of(agent: Process) -> str:
    return agent.wait_for_line("Agent started:").split(":", 1)[1].strip()


def submit_slow(tasks: TasksClient, seconds: float, **fields: Any) -> str:
    task = tasks.submit(
        task_type="slow", capability_required="slow-v1", input_data={"sleep": seconds}, **fields
    )
    return task["task_id"]


def lines_about(agent: Process, task_id: str) -> list[str]:
    return [line for line in agent.output().splitlines() if task_id in line]


def assert_agent_is_free(tasks: TasksClient, agent: Process) -> None:
    """With one slot, a new task runs only once the stopped handler has let go of it."""
    quick = submit_slow(tasks, 0)
    assert tasks.wait(quick, timeout=10)["status"] == "COMPLETED", agent.output()[-3000:]


def cancel_while_running(
    tasks: TasksClient, agent: Process, seconds: float
) -> tuple[str, float, dict[str, Any]]:
    """Submit a task, cancel it once the agent runs it; return (id, cancel time, the end)."""
    task_id = submit_slow(tasks, seconds)
    agent.wait_for_line(f"Executing task... ({task_id})")
    asked = tasks.cancel(task_id, "no longer needed")
    assert asked["status"] == "ACTIVE" and asked["cancel_requested_at"], asked
    cancelled_at = time.monotonic()
    done = tasks.wait(task_id, timeout=15)
    return task_id, cancelled_at, done


def test_it_stops_a_cancelled_task_and_confirms_the_cancellation(
    app: Flask, personas: Personas, server: WebServer, tasks: TasksClient
) -> None:
    agent = start_sample_agent(app, server, personas, "agent-cancel")
    try:
        agent_id = agent_id_of(agent)
        task_id, cancelled_at, done = cancel_while_running(tasks, agent, 30)

        assert done["status"] == "CANCELLED", done
        assert time.monotonic() - cancelled_at < 10  # not the 30 s sleep, nor the grace hour
        last = done["events"][-1]
        assert last["actor"] == f"agent:{agent_id}"
        assert last["reason"] == (
            "cancelled (no longer needed); the agent stopped: cancelled: stopped by the agent"
        )
        assert [(a["outcome"], a["ended_by"]) for a in done["attempts"]] == [
            ("cancelled", f"agent:{agent_id}")
        ]
        assert done["result_data"] is None
        agent.wait_for_line(f"Cancellation confirmed ({task_id})")
        noticed = agent.wait_for_line(f"Task {task_id} cancelled by the server")
        # Heartbeats come every second, progress reports every 3 s: either may tell first.
        assert re.search(r"\((heartbeat|progress report)\), stopping$", noticed), noticed
        assert_agent_is_free(tasks, agent)
    finally:
        assert agent.stop() == 0, agent.output()
    assert not [line for line in lines_about(agent, task_id) if "reported" in line]


def test_it_hears_of_a_cancel_from_a_refused_progress_report_between_heartbeats(
    app: Flask, personas: Personas, tasks: TasksClient
) -> None:
    # Heartbeats every 30 s: the built-in handler's progress report is the first to hear.
    quiet = start_web(app, name="web-quiet-heartbeats", HEARTBEAT_INTERVAL_SECONDS="30")
    agent = start_sample_agent(app, quiet, personas, "agent-cancel-by-progress")
    quiet_tasks = TasksClient(quiet.url, personas.client.key)
    try:
        agent_id = agent_id_of(agent)
        task_id, cancelled_at, done = cancel_while_running(quiet_tasks, agent, 30)

        assert done["status"] == "CANCELLED", done
        assert time.monotonic() - cancelled_at < 10
        assert done["events"][-1]["actor"] == f"agent:{agent_id}"
        agent.wait_for_line(f"Task {task_id} cancelled by the server (progress report), stopping")
        agent.wait_for_line(f"Cancellation confirmed ({task_id})")
    finally:
        quiet_tasks.session.close()
        assert agent.stop() == 0, agent.output()
        quiet.process.stop()


def test_it_stops_a_timed_out_task_without_reporting_on_it(
    app: Flask,
    personas: Personas,
    server: WebServer,
    tasks: TasksClient,
    rq_worker: Process,
    clock: Process,
) -> None:
    agent = start_sample_agent(app, server, personas, "agent-timeout")
    try:
        agent_id = agent_id_of(agent)
        task_id = submit_slow(tasks, 30, timeout_seconds=2)
        agent.wait_for_line(f"Executing task... ({task_id})")

        done = tasks.wait(task_id, timeout=20)
        assert done["status"] == "FAILED", done
        assert done["error_message"] == "Task timed out after 2 seconds"
        agent.wait_for_line(f"Task {task_id} taken back by the server", timeout=10)
        agent.wait_for_line(f"Task {task_id} stopped, nothing to report")
        # Nothing from the agent after the claim: the timeout is the last word.
        final = tasks.get(task_id)
        assert [(e["to_status"], e["actor"]) for e in final["events"]] == [
            ("PENDING", "client:client-1"),
            ("ASSIGNED", "system:router"),
            ("ACTIVE", f"agent:{agent_id}"),
            ("FAILED", "system:timeout"),
        ]
        assert [(a["outcome"], a["ended_by"]) for a in final["attempts"]] == [
            ("timed_out", "system:timeout")
        ]
        assert final["assigned_agent_id"] == agent_id
        assert_agent_is_free(tasks, agent)
    finally:
        assert agent.stop() == 0, agent.output()
    assert not [line for line in lines_about(agent, task_id) if "reported" in line]
