"""expires_in_seconds: a task still waiting at its expiry ends EXPIRED and is never handed
out after it, whether or not the sweep has run yet; a claimed task does not expire."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from flask import Flask

from app.models import Task
from app.services.settings import settings
from tests.api.lifecycle_support import beat, detail, fail, report, running, sweep_at
from tests.api.support import T0, assert_error, load, parse_time, unchanged
from tests.conftest import Api, Personas


def test_it_sets_expires_at_from_the_submit(api: Api, personas: Personas) -> None:
    with time_machine.travel(T0, tick=False):
        body = api.submit(personas.client, expires_in_seconds=90)
        plain = api.submit(personas.client)
    assert parse_time(body["expires_at"]) == T0 + timedelta(seconds=90)
    assert plain["expires_at"] is None


def test_a_waiting_task_ends_expired_after_its_expiry(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False):
        task_id = api.submit(personas.client, expires_in_seconds=30)["task_id"]
        keeper = api.submit(personas.client)["task_id"]
    assert sweep_at(app, T0 + timedelta(seconds=30))["expired"] == 0
    assert load(app, Task, task_id).status == "PENDING"

    caught = T0 + timedelta(seconds=30, milliseconds=250)
    assert sweep_at(app, caught)["expired"] == 1
    shown = detail(api, personas.client, task_id)
    assert shown["status"] == "EXPIRED"
    assert parse_time(shown["completed_at"]) == caught
    assert shown["error_message"] == "expired before an agent claimed it"
    assert shown["attempts"] == []
    last = shown["events"][-1]
    assert (last["from_status"], last["to_status"], last["actor"]) == (
        "PENDING",
        "EXPIRED",
        "system:expiry",
    )
    assert parse_time(last["data"]["deadline"]) == T0 + timedelta(seconds=30)
    assert last["data"]["late_ms"] == 250
    assert load(app, Task, keeper).status == "PENDING"
    # Not a failure: the dead-letter view does not list it.
    assert api.get("/ains/dead-letter", personas.client).get_json()["tasks"] == []
    assert sweep_at(app, caught + timedelta(seconds=1))["expired"] == 0


def test_an_expired_task_is_never_claimed_even_before_the_sweep(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        agent_id, agent = api.register_agent(personas.fleet)
        submitted = api.submit(personas.client, expires_in_seconds=10)
        task_id = submitted["task_id"]
        assert (submitted["status"], submitted["assigned_agent_id"]) == ("ASSIGNED", agent_id)
        clock.shift(timedelta(seconds=10))
        # expires_at is the first instant it may no longer be claimed, even by its agent.
        with unchanged(app):
            assert api.claim(agent_id, agent) == []
    assert load(app, Task, task_id).status == "ASSIGNED"
    sweep_at(app, T0 + timedelta(seconds=11))
    assert load(app, Task, task_id).status == "EXPIRED"
    with time_machine.travel(T0 + timedelta(seconds=12), tick=False):
        assert api.claim(agent_id, agent) == []


def test_a_task_claimed_in_time_does_not_expire(app: Flask, api: Api, personas: Personas) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        agent_id, agent = api.register_agent(personas.fleet)
        task_id = api.submit(personas.client, expires_in_seconds=10, timeout_seconds=60)["task_id"]
        clock.shift(timedelta(seconds=9))
        assert [t["task_id"] for t in api.claim(agent_id, agent)] == [task_id]
        clock.shift(timedelta(seconds=5))
        beat(api, agent_id, agent)
        assert sweep_at(app, T0 + timedelta(seconds=14))["expired"] == 0
        assert load(app, Task, task_id).status == "ACTIVE"
        done = report(api, agent, task_id, "complete", result_data={"ok": True})
    assert done.status_code == 200 and done.get_json()["status"] == "COMPLETED"


def test_a_task_waiting_for_its_retry_at_its_expiry_ends_expired(
    app: Flask, api: Api, personas: Personas, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "retry_jitter", "none")
    with time_machine.travel(T0, tick=False) as clock:
        task_id, agent_id, agent = running(
            api, personas, expires_in_seconds=15, retry_policy="fixed"
        )
        clock.shift(timedelta(seconds=8))
        fail(api, agent, task_id)  # retry due at T0 + 18, after the expiry
        clock.shift(timedelta(seconds=10))
        assert api.claim(agent_id, agent) == []
    sweep_at(app, T0 + timedelta(seconds=18))
    shown = detail(api, personas.client, task_id)
    assert shown["status"] == "EXPIRED" and shown["next_retry_at"] is None


def test_cancelling_an_expired_task_is_a_conflict(app: Flask, api: Api, personas: Personas) -> None:
    with time_machine.travel(T0, tick=False):
        task_id = api.submit(personas.client, expires_in_seconds=1)["task_id"]
    sweep_at(app, T0 + timedelta(seconds=2))
    with unchanged(app):
        response = api.post(f"/ains/tasks/{task_id}/cancel", personas.client, json={})
        assert_error(response, 409, "conflict")


def test_the_longest_expiry_is_accepted(api: Api, personas: Personas) -> None:
    with time_machine.travel(T0, tick=False):
        body = api.submit(personas.client, expires_in_seconds=30 * 86400)
    assert parse_time(body["expires_at"]) == T0 + timedelta(days=30)


@pytest.mark.parametrize("bad", [0, -1, 30 * 86400 + 1, 10**12, "60", 1.5, 60.0, True, [60]])
def test_it_refuses_a_bad_expiry_and_changes_nothing(
    app: Flask, api: Api, personas: Personas, bad: object
) -> None:
    body = {"task_type": "report", "capability_required": "report-v1", "expires_in_seconds": bad}
    with unchanged(app):
        response = api.post("/ains/tasks", personas.client, json=body)
        assert_error(response, 422, "validation_error", "expires_in_seconds")


def test_a_batch_reports_a_bad_expiry_by_index(app: Flask, api: Api, personas: Personas) -> None:
    good = {"task_type": "report", "capability_required": "report-v1", "expires_in_seconds": 5}
    items = [good, {**good, "expires_in_seconds": 0}]
    body = api.post("/ains/tasks/batch", personas.client, json={"tasks": items}).get_json()
    assert [s["index"] for s in body["submitted"]] == [0]
    [failed] = body["failed"]
    assert [d["field"] for d in failed["details"]] == ["tasks[1].expires_in_seconds"]
