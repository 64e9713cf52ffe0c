"""The SDK against a real gunicorn: the calls a client and an agent make, and their errors."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator

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


class DroppingServer:
    """A TCP server that reads each request and hangs up without answering."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                self.connections += 1
                conn.recv(65536)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def dropping_server() -> Iterator[DroppingServer]:
    server = DroppingServer()
    yield server
    server.close()


def test_it_does_not_repeat_a_claim_that_may_have_reached_the_server(
    dropping_server: DroppingServer,
) -> None:
    session = HttpSession(dropping_server.url, "k", max_attempts=3, backoff_base=0.01)
    with pytest.raises(ApiError) as dropped:
        AgentClient(dropping_server.url, "k", session=session).claim("agent_x", wait_seconds=0)
    assert (dropped.value.status, dropped.value.code) == (0, "connection_error")
    assert dropping_server.connections == 1  # its tasks would be lost with a second answer


def test_it_repeats_idempotent_requests_after_a_dropped_connection(
    dropping_server: DroppingServer,
) -> None:
    session = HttpSession(dropping_server.url, "k", max_attempts=3, backoff_base=0.01)
    with pytest.raises(ApiError):
        session.get("/ains/tasks")
    with pytest.raises(ApiError):
        TasksClient(dropping_server.url, "k", session=session).submit(task_type="r")
    with pytest.raises(ApiError):
        AgentClient(dropping_server.url, "k", session=session).complete("task_x", {}, attempt=1)
    assert dropping_server.connections == 9


def test_it_lets_the_sample_agent_wait_for_a_server_that_starts_late(
    app: Flask, personas: Personas
) -> None:
    port = free_port()
    agent = start_agent(app, f"http://127.0.0.1:{port}", personas.fleet.key)
    server: WebServer | None = None
    try:
        time.sleep(1.0)  # the agent is retrying registration against a closed port
        assert agent.proc.poll() is None, agent.output()
        server = start_web(app, port=port)
        assert agent.wait_for_line("Agent started:", timeout=30).startswith("Agent started:")
    finally:
        # The agent first, while the server still answers its last claim and heartbeat.
        agent.stop()
        if server is not None:
            server.process.stop()
