"""End to end: gunicorn, the RQ worker, the clock and the sample agent as real processes."""

from __future__ import annotations

import signal
import time

import pytest
import requests
from flask import Flask

from app.extensions import db
from app.models import Agent, AgentStatus, ProcessBeat
from tests.conftest import Personas
from tests.processes import Process, WebServer, start_agent

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Seed 001's example task.
SEED_TASK = {
    "client_id": "client-1",
    "task_type": "daily-report",
    "capability_required": "report-v1",
    "input_data": {"report_type": "sales"},
    "priority": 7,
}


def wait_for_status(url: str, headers: dict[str, str], status: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = requests.get(url, headers=headers, timeout=5).json()
        if body.get("status") == status:
            return body
        time.sleep(0.1)
    raise AssertionError(f"task never reached {status}: {body}")


def test_it_completes_the_seed_task_through_the_real_sample_agent(
    app: Flask, personas: Personas, web_server: WebServer, rq_worker: Process, clock: Process
) -> None:
    agent = start_agent(app, web_server.url, personas.fleet.key, "--capability", "report-v1")
    try:
        agent_id = agent.wait_for_line("Agent started:").split(":", 1)[1].strip()
        response = requests.post(
            f"{web_server.url}/ains/tasks",
            json=SEED_TASK,
            headers=personas.client.headers,
            timeout=5,
        )
        assert response.status_code == 201, response.text
        task_url = f"{web_server.url}/ains/tasks/{response.json()['task_id']}"

        done = wait_for_status(task_url, personas.client.headers, "COMPLETED")

        assert done["assigned_agent_id"] == agent_id
        assert done["result_data"]["input"] == {"report_type": "sales"}
        assert done["progress"] == 100
        transitions = [(e["from_status"], e["to_status"]) for e in done["events"]]
        assert transitions == [
            (None, "PENDING"),
            ("PENDING", "ASSIGNED"),
            ("ASSIGNED", "ACTIVE"),
            ("ACTIVE", "COMPLETED"),
        ]
        assert [e["actor"] for e in done["events"]] == [
            "client:client-1",
            "system:router",
            f"agent:{agent_id}",
            f"agent:{agent_id}",
        ]
        assert done["events"][1]["data"]["routing"]["winner"] == agent_id
        agent.wait_for_line("Result reported successfully")
    finally:
        assert agent.stop() == 0, agent.output()
    agent.wait_for_line("Agent stopped")
    # The clock enqueued maintenance ticks and the worker ran them.
    deadline = time.monotonic() + 15
    with app.app_context():
        while time.monotonic() < deadline:
            names = set(db.session.scalars(db.select(ProcessBeat.name)))
            db.session.rollback()
            if names >= {"clock", "worker"}:
                break
            time.sleep(0.2)
        assert names >= {"clock", "worker"}, rq_worker.output()[-2000:] + clock.output()[-2000:]
        stopped = db.session.get(Agent, agent_id)
        assert stopped is not None and stopped.status == AgentStatus.INACTIVE  # OFFLINE heartbeat


def test_it_lets_a_stopping_agent_finish_its_task_and_a_silent_one_be_retired(
    app: Flask, personas: Personas, web_server: WebServer, rq_worker: Process, clock: Process
) -> None:
    agent = start_agent(app, web_server.url, personas.fleet.key, "--capability", "slow-v1")
    agent_id = agent.wait_for_line("Agent started:").split(":", 1)[1].strip()
    task = requests.post(
        f"{web_server.url}/ains/tasks",
        json={**SEED_TASK, "capability_required": "slow-v1", "input_data": {"sleep": 2}},
        headers=personas.client.headers,
        timeout=5,
    ).json()
    agent.wait_for_line("Executing task")
    agent.signal(signal.SIGTERM)  # graceful: finish the running task, claim nothing more
    assert agent.proc.wait(30) == 0, agent.output()
    done = requests.get(
        f"{web_server.url}/ains/tasks/{task['task_id']}", headers=personas.client.headers, timeout=5
    ).json()
    assert done["status"] == "COMPLETED", done

    # A second agent is killed outright: it sends no OFFLINE heartbeat, yet the
    # maintenance job retires it after the allowed silence and requeues its task.
    killed = start_agent(
        app, web_server.url, personas.fleet.key, "--capability", "slow-v1", name="killed-agent"
    )
    killed_id = killed.wait_for_line("Agent started:").split(":", 1)[1].strip()
    stuck = requests.post(
        f"{web_server.url}/ains/tasks",
        json={**SEED_TASK, "capability_required": "slow-v1", "input_data": {"sleep": 60}},
        headers=personas.client.headers,
        timeout=5,
    ).json()
    killed.wait_for_line("Executing task")
    killed.signal(signal.SIGKILL)
    killed.proc.wait(5)
    requeued = wait_for_status(
        f"{web_server.url}/ains/tasks/{stuck['task_id']}",
        personas.client.headers,
        "PENDING",
        timeout=20,
    )
    assert requeued["retry_count"] == 1
    assert "agent lost" in requeued["events"][-1]["reason"]
    with app.app_context():
        assert db.session.get(Agent, killed_id).status == AgentStatus.INACTIVE
    assert agent_id != killed_id
