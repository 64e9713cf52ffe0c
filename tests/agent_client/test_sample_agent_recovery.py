"""The sample agent runs a task whose claim answer was lost on the way back."""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from agent_client import AgentClient, ApiError, ClaimResult, HeartbeatResult, TasksClient
from agent_client.sample_agent import Console, SampleAgent, echo_report
from tests.conftest import Personas
from tests.processes import WebServer

pytestmark = pytest.mark.e2e


class LosingFirstClaim(AgentClient):
    """The real client, except that the first claim answer with tasks never arrives."""

    lost: list[str] | None = None

    def claim_with_cancellations(self, *args: Any, **kwargs: Any) -> ClaimResult:
        answer = super().claim_with_cancellations(*args, **kwargs)
        if answer["tasks"] and self.lost is None:
            self.lost = [t["task_id"] for t in answer["tasks"]]
            raise ApiError(0, "connection_error", "connection dropped (injected by the test)")
        return answer


class Lines(Console):
    """Keeps what the agent says, for assertions."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def _write(self, stream: Any, message: str) -> None:
        self.lines.append(message)
        super()._write(stream, message)


@pytest.fixture
def agent(web_server: WebServer, personas: Personas) -> Iterator[SampleAgent]:
    client = LosingFirstClaim(web_server.url, personas.fleet.key)
    sample = SampleAgent(
        client, handler=functools.partial(echo_report, agent="recovery"), wait_seconds=1
    )
    sample.console = Lines()
    sample.register("recovery-agent", uuid.uuid4().hex, ["report-v1"])
    runner = threading.Thread(target=sample.run, name="sample-agent")
    runner.start()
    yield sample
    sample.stop.set()
    runner.join(15)
    assert not runner.is_alive()
    client.session.close()


def test_it_runs_a_task_whose_claim_answer_was_lost(
    agent: SampleAgent, web_server: WebServer, personas: Personas
) -> None:
    tasks = TasksClient(web_server.url, personas.client.key)
    submitted = tasks.submit(task_type="r", capability_required="report-v1", input_data={"n": 1})

    done = tasks.wait(submitted["task_id"], timeout=15)
    tasks.session.close()

    assert isinstance(agent.client, LosingFirstClaim)
    assert agent.client.lost == [submitted["task_id"]]
    assert done["status"] == "COMPLETED", done
    assert done["result_data"]["input"] == {"n": 1}
    # The claim's own attempt, not a retry after the lease ran out.
    assert [(a["attempt"], a["outcome"]) for a in done["attempts"]] == [(1, "completed")]
    assert isinstance(agent.console, Lines)
    assert f"Task {submitted['task_id']} recovered: running here on the server" in (
        agent.console.lines
    )


class RecordingBeats(AgentClient):
    """The real client, keeping the task ids each heartbeat named."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.named: list[list[str] | None] = []

    def heartbeat(self, *args: Any, **kwargs: Any) -> HeartbeatResult:
        answer = super().heartbeat(*args, **kwargs)
        ids = kwargs.get("running_task_ids")
        self.named.append(None if ids is None else list(ids))
        return answer


def test_its_heartbeats_name_the_tasks_it_runs(web_server: WebServer, personas: Personas) -> None:
    release = threading.Event()

    def hold(task: dict[str, Any]) -> dict[str, Any]:
        release.wait(20)
        return {"held": task["task_id"]}

    client = RecordingBeats(web_server.url, personas.fleet.key)
    sample = SampleAgent(client, handler=hold, wait_seconds=1, concurrency=2)
    sample.console = Lines()
    sample.register("beats-agent", uuid.uuid4().hex, ["hold-v1"])
    runner = threading.Thread(target=sample.run, name="sample-agent")
    runner.start()
    tasks = TasksClient(web_server.url, personas.client.key)
    try:
        task_id = tasks.submit(task_type="hold", capability_required="hold-v1")["task_id"]
        deadline = time.monotonic() + 10
        while [task_id] not in client.named and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [task_id] in client.named, client.named
        assert client.named[0] == []  # the first beat, before any claim
        release.set()
        assert tasks.wait(task_id, timeout=10)["status"] == "COMPLETED"
    finally:
        release.set()
        sample.stop.set()
        runner.join(15)
        tasks.session.close()
        client.session.close()
    assert not runner.is_alive()
    assert None not in client.named
