"""The SDK against a real gunicorn: the calls a client and an agent make, and their errors."""

from __future__ import annotations

import time
import uuid

import pytest
from flask import Flask

from agent_client import AgentClient, ApiError, TasksClient
from agent_client.http import HttpSession
from tests.conftest import Personas
from tests.processes import WebServer, free_port, start_agent, start_web

pytestmark = pytest.mark.e2e


def test_it_runs_the_dispatch_loop_through_the_sdk(
    personas: Personas, web_server: WebServer
) -> None:
    tasks = TasksClient(web_server.url, personas.client.key)
    agents = AgentClient(web_server.url, personas.fleet.key)
    registered = agents.register("sdk-agent", uuid.uuid4().hex, ["report-v1"], 2)
    agent_id = registered["agent_id"]
    assert agents.heartbeat(agent_id)["agent_status"] == "AVAILABLE"

    submitted = tasks.submit(
        task_type="report", capability_required="report-v1", input_data={"n": 1}, priority=9
    )
    claimed = agents.claim(agent_id, max_tasks=2, wait_seconds=5)
    assert [t["task_id"] for t in claimed] == [submitted["task_id"]]
    agents.progress(submitted["task_id"], 40, "reading")
    agents.complete(submitted["task_id"], {"answer": 42})

    done = tasks.wait(submitted["task_id"], timeout=5)
    assert done["status"] == "COMPLETED" and done["result_data"] == {"answer": 42}
    assert [t["task_id"] for t in tasks.iter_tasks(status="COMPLETED", limit=1)] == [
        submitted["task_id"]
    ]
    assert tasks.queue_metrics()["tasks_by_status"] == {"COMPLETED": 1}


def test_it_replays_an_idempotent_submit_instead_of_creating_a_second_task(
    personas: Personas, web_server: WebServer
) -> None:
    tasks = TasksClient(web_server.url, personas.client.key)
    first = tasks.submit(idempotency_key="order-17", task_type="r", capability_required="c")
    again = tasks.submit(idempotency_key="order-17", task_type="r", capability_required="c")
    assert again["task_id"] == first["task_id"]
    assert len(list(tasks.iter_tasks())) == 1


def test_it_raises_api_errors_with_the_servers_code_and_fields(
    personas: Personas, web_server: WebServer
) -> None:
    tasks = TasksClient(web_server.url, personas.client.key)
    with pytest.raises(ApiError) as invalid:
        tasks.submit(task_type="r", capability_required="c", priority=11)
    assert invalid.value.status == 422
    assert invalid.value.code == "validation_error"
    assert [d["field"] for d in invalid.value.details] == ["priority"]

    with pytest.raises(ApiError) as unauthorized:
        TasksClient(web_server.url, "ains_000000000000_nope").list()
    assert unauthorized.value.status == 401 and not unauthorized.value.is_transient


def test_it_reports_a_connection_error_after_bounded_retries() -> None:
    session = HttpSession(f"http://127.0.0.1:{free_port()}", "k", max_attempts=2, backoff_base=0.05)
    started = time.monotonic()
    with pytest.raises(ApiError) as refused:
        session.get("/health")
    assert refused.value.status == 0 and refused.value.is_transient
    assert time.monotonic() - started < 5


def test_it_lets_the_sample_agent_wait_for_a_server_that_starts_late(
    app: Flask, personas: Personas
) -> None:
    port = free_port()
    agent = start_agent(app, f"http://127.0.0.1:{port}", personas.fleet.key)
    try:
        time.sleep(1.0)  # the agent is retrying registration against a closed port
        assert agent.proc.poll() is None, agent.output()
        server = start_web(app, port=port)
        try:
            assert agent.wait_for_line("Agent started:", timeout=30).startswith("Agent started:")
        finally:
            server.process.stop()
    finally:
        agent.stop()
