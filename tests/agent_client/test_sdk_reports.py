"""The SDK's reports on tasks the server stopped: distinguishable 409s, stop notices, delays."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from flask import Flask

from agent_client import (
    AgentClient,
    ApiError,
    CancelRequestedError,
    ConflictError,
    StaleAttemptError,
    Task,
    TasksClient,
)
from app.extensions import db
from app.models import Task as DbTask
from app.services import lifecycle
from tests.conftest import Personas
from tests.processes import WebServer, start_web

pytestmark = pytest.mark.e2e


class Sdk:
    """A client and a registered agent (with its own key) on one server."""

    def __init__(self, web_server: WebServer, personas: Personas) -> None:
        self.tasks = TasksClient(web_server.url, personas.client.key)
        self.agents = AgentClient(web_server.url, personas.fleet.key)
        self.agent_id = self.agents.register("sdk-agent", uuid.uuid4().hex, ["report-v1"], 2)[
            "agent_id"
        ]
        self.agents.heartbeat(self.agent_id)

    def close(self) -> None:
        """Drop the kept-alive connections, so that they do not hold up the server's exit."""
        self.tasks.session.close()
        self.agents.session.close()

    def running_task(self, **fields: object) -> Task:
        """Submit a task and claim it: it is ACTIVE for the agent, attempt 1."""
        submitted = self.tasks.submit(task_type="report", capability_required="report-v1", **fields)
        claimed = self.agents.claim(self.agent_id, wait_seconds=5)
        assert [t["task_id"] for t in claimed] == [submitted["task_id"]]
        assert claimed[0]["attempt"] == 1
        return claimed[0]


@pytest.fixture(scope="module")
def server(app: Flask) -> Iterator[WebServer]:
    """One gunicorn for the module: each test starts from empty tables all the same."""
    started = start_web(app, name="web-sdk-reports")
    yield started
    started.process.stop()


@pytest.fixture
def sdk(server: WebServer, personas: Personas) -> Iterator[Sdk]:
    clients = Sdk(server, personas)
    yield clients
    clients.close()


def test_it_names_a_cancelled_task_and_refuses_its_progress_with_cancel_requested(
    sdk: Sdk,
) -> None:
    task = sdk.running_task()
    task_id = task["task_id"]
    asked = sdk.tasks.cancel(task_id, "changed my mind")
    assert asked["status"] == "ACTIVE" and asked["cancel_requested_at"]

    beat = sdk.agents.heartbeat(sdk.agent_id)
    assert beat["cancelled_task_ids"] == [task_id]
    assert beat["stop_task_ids"] == [task_id]
    claim = sdk.agents.claim_with_cancellations(sdk.agent_id)
    assert claim == {"tasks": [], "cancelled_task_ids": [task_id], "stop_task_ids": [task_id]}

    with pytest.raises(CancelRequestedError) as refused:
        sdk.agents.progress(task_id, 60, "still going", attempt=task["attempt"])
    assert isinstance(refused.value, ConflictError) and isinstance(refused.value, ApiError)
    assert (refused.value.status, refused.value.code) == (409, "cancel_requested")

    confirmed = sdk.agents.fail(task_id, "stopped", retryable=False, attempt=task["attempt"])
    assert confirmed["status"] == "CANCELLED"
    done = sdk.tasks.get(task_id)
    assert done["status"] == "CANCELLED"
    assert done["events"][-1]["actor"] == f"agent:{sdk.agent_id}"
    assert [a["outcome"] for a in done["attempts"]] == ["cancelled"]

    # The task has finished: a late report is a plain conflict, neither of the subclasses.
    with pytest.raises(ConflictError) as late:
        sdk.agents.complete(task_id, {"answer": 1}, attempt=task["attempt"])
    assert type(late.value) is ConflictError and late.value.code == "conflict"


def test_it_refuses_the_result_of_a_cancelled_task_and_ends_it_cancelled(sdk: Sdk) -> None:
    task = sdk.running_task()
    sdk.tasks.cancel(task["task_id"])

    with pytest.raises(CancelRequestedError):
        sdk.agents.complete(task["task_id"], {"answer": 42}, attempt=task["attempt"])

    done = sdk.tasks.get(task["task_id"])
    assert done["status"] == "CANCELLED" and done["result_data"] is None


def test_it_waits_retry_after_seconds_before_the_retry(sdk: Sdk) -> None:
    task = sdk.running_task(max_retries=2)
    before = datetime.now().astimezone()
    failed = sdk.agents.fail(
        task["task_id"], "rate limited upstream", retry_after_seconds=120, attempt=1
    )
    after = datetime.now().astimezone()

    assert failed["status"] == "PENDING" and failed["retry_count"] == 1
    next_retry_at = datetime.fromisoformat(sdk.tasks.get(task["task_id"])["next_retry_at"])
    slack = timedelta(seconds=1)  # the server's clock and ours, rounded
    assert before + timedelta(seconds=120) - slack <= next_retry_at
    assert next_retry_at <= after + timedelta(seconds=120) + slack
    assert sdk.agents.claim(sdk.agent_id) == []  # not due yet


def test_it_refuses_a_report_from_an_earlier_attempt_as_stale(sdk: Sdk) -> None:
    task = sdk.running_task(max_retries=2)
    sdk.agents.fail(task["task_id"], "flaky", retry_after_seconds=0, attempt=1)
    again = sdk.agents.claim(sdk.agent_id, wait_seconds=5)
    assert [(t["task_id"], t["attempt"]) for t in again] == [(task["task_id"], 2)]

    with pytest.raises(StaleAttemptError) as stale:
        sdk.agents.progress(task["task_id"], 90, attempt=1)
    assert (stale.value.status, stale.value.code) == (409, "stale_attempt")
    with pytest.raises(StaleAttemptError):
        sdk.agents.complete(task["task_id"], {"from": "attempt 1"}, attempt=1)

    sdk.agents.complete(task["task_id"], {"from": "attempt 2"}, attempt=2)
    assert sdk.tasks.get(task["task_id"])["result_data"] == {"from": "attempt 2"}


def test_it_names_a_timed_out_task_in_stop_task_ids_only(app: Flask, sdk: Sdk) -> None:
    task = sdk.running_task(timeout_seconds=1)
    time.sleep(1.1)
    with app.app_context():
        assert lifecycle.sweep()["timed_out"] == 1  # what the clock does every second

    beat = sdk.agents.heartbeat(sdk.agent_id)
    assert (beat["cancelled_task_ids"], beat["stop_task_ids"]) == ([], [task["task_id"]])
    claim = sdk.agents.claim_with_cancellations(sdk.agent_id)
    assert (claim["cancelled_task_ids"], claim["stop_task_ids"]) == ([], [task["task_id"]])

    with pytest.raises(ConflictError) as refused:
        sdk.agents.progress(task["task_id"], 50, attempt=task["attempt"])
    assert refused.value.code == "conflict"
    done = sdk.tasks.get(task["task_id"])
    assert done["status"] == "FAILED"
    assert done["error_message"] == "Task timed out after 1 seconds"


def test_a_heartbeat_naming_its_running_tasks_renews_only_their_leases(
    app: Flask, sdk: Sdk
) -> None:
    for n in range(2):
        sdk.tasks.submit(task_type="report", capability_required="report-v1", input_data={"n": n})
    known, orphan = (t["task_id"] for t in sdk.agents.claim(sdk.agent_id, 2, wait_seconds=5))
    with app.app_context():
        claimed = {t.id: t.lease_expires_at for t in db.session.scalars(db.select(DbTask))}
    time.sleep(1.1)

    beat = sdk.agents.heartbeat(sdk.agent_id, running_task_ids=[known])
    assert beat["stop_task_ids"] == []
    with app.app_context():
        leases = {t.id: t.lease_expires_at for t in db.session.scalars(db.select(DbTask))}
    assert leases[orphan] == claimed[orphan]  # not renewed: the agent does not know it
    assert leases[known] - claimed[known] >= timedelta(seconds=1)

    with pytest.raises(ApiError) as refused:
        sdk.agents.heartbeat(sdk.agent_id, running_task_ids=[""])
    assert refused.value.status == 422


def test_complete_many_reports_each_result_on_its_own(sdk: Sdk) -> None:
    for n in range(2):
        sdk.tasks.submit(task_type="report", capability_required="report-v1", input_data={"n": n})
    claimed = sdk.agents.claim(sdk.agent_id, max_tasks=2, wait_seconds=5)
    assert len(claimed) == 2
    cancelled, kept = claimed
    sdk.tasks.cancel(cancelled["task_id"])

    outcomes = sdk.agents.complete_many(
        sdk.agent_id,
        [
            {
                "task_id": t["task_id"],
                "result": {"n": t["input_data"]["n"]},
                "attempt": t["attempt"],
            }
            for t in claimed
        ]
        + [{"task_id": "task_nope", "result": {}}],
    )
    assert [o["task_id"] for o in outcomes] == [cancelled["task_id"], kept["task_id"], "task_nope"]
    assert [o["ok"] for o in outcomes] == [False, True, False]
    assert outcomes[0]["error"]["code"] == "cancel_requested"
    assert outcomes[1]["status"] == "COMPLETED"
    assert outcomes[2]["error"]["code"] == "not_found"
    assert sdk.tasks.get(kept["task_id"])["result_data"] == {"n": kept["input_data"]["n"]}
    assert sdk.tasks.get(cancelled["task_id"])["status"] == "CANCELLED"

    # Sent again (as after a lost answer): nothing changes, each item says why.
    again = sdk.agents.complete_many(sdk.agent_id, [{"task_id": kept["task_id"], "result": {}}])
    assert again[0]["ok"] is False and again[0]["error"]["code"] == "conflict"
    for size in (0, 101):
        with pytest.raises(ValueError, match="1 to 100"):
            sdk.agents.complete_many(sdk.agent_id, [{"task_id": "t", "result": {}}] * size)
