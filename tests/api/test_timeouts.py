"""Execution timeouts: the sweep fails a task past its deadline, tells the agent to stop, and
refuses what the timed-out attempt reports afterwards."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from flask import Flask

from app.models import Agent, Task
from app.services.settings import settings
from tests.api.lifecycle_support import beat, claim_body, detail, fail, report, running, sweep_at
from tests.api.support import T0, assert_error, load, parse_time, unchanged
from tests.conftest import Api, Personas


@pytest.fixture(autouse=True)
def no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "retry_jitter", "none")


def test_the_claim_sets_the_deadline_from_timeout_seconds(api: Api, personas: Personas) -> None:
    with time_machine.travel(T0, tick=False):
        agent_id, agent = api.register_agent(personas.fleet)
        submitted = api.submit(personas.client, timeout_seconds=7)
        assert submitted["timeout_seconds"] == 7 and submitted["timeout_at"] is None
        [claimed] = api.claim(agent_id, agent)
    assert parse_time(claimed["timeout_at"]) == T0 + timedelta(seconds=7)
    assert parse_time(claimed["claimed_at"]) == T0


def test_the_sweep_fails_a_task_past_its_deadline_and_does_not_retry_it(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False):
        task_id, agent_id, _ = running(api, personas, timeout_seconds=5, max_retries=3)
    assert sweep_at(app, T0 + timedelta(seconds=5))["timed_out"] == 0
    assert load(app, Task, task_id).status == "ACTIVE"

    caught = T0 + timedelta(seconds=5, milliseconds=700)
    assert sweep_at(app, caught)["timed_out"] == 1
    shown = detail(api, personas.client, task_id)
    assert shown["status"] == "FAILED"
    assert shown["last_error"] == "Task timed out after 5 seconds"
    assert shown["retry_count"] == 0 and shown["next_retry_at"] is None
    assert shown["timeout_at"] is None and shown["lease_expires_at"] is None
    assert parse_time(shown["completed_at"]) == caught
    [attempt] = shown["attempts"]
    assert attempt["outcome"] == "timed_out"
    assert attempt["ended_by"] == "system:timeout"
    assert attempt["error"] == "Task timed out after 5 seconds"
    last = shown["events"][-1]
    assert (last["from_status"], last["to_status"], last["actor"]) == (
        "ACTIVE",
        "FAILED",
        "system:timeout",
    )
    assert parse_time(last["data"]["deadline"]) == T0 + timedelta(seconds=5)
    assert last["data"]["late_ms"] == 700
    assert last["data"]["outcome"] == "timed_out"
    stored = load(app, Agent, agent_id)
    assert stored.active_tasks == 0 and stored.total_tasks_failed == 1
    # A second pass finds nothing more to do.
    assert sweep_at(app, caught + timedelta(seconds=1))["timed_out"] == 0
    assert load(app, Agent, agent_id).total_tasks_failed == 1


def test_retry_on_timeout_sends_the_task_back_per_its_policy(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        task_id, agent_id, agent = running(
            api, personas, timeout_seconds=5, retry_on_timeout=True, retry_policy="linear"
        )
        caught = T0 + timedelta(seconds=6)
        assert sweep_at(app, caught)["timed_out"] == 1
        shown = detail(api, personas.client, task_id)
        assert shown["status"] == "PENDING" and shown["retry_count"] == 1
        assert shown["assigned_agent_id"] is None
        assert parse_time(shown["next_retry_at"]) == caught + timedelta(seconds=5)
        assert shown["attempts"][0]["outcome"] == "timed_out"
        clock.move_to(caught + timedelta(seconds=5))
        beat(api, agent_id, agent)
        [again] = api.claim(agent_id, agent)
    assert (again["task_id"], again["attempt"]) == (task_id, 2)
    assert parse_time(again["timeout_at"]) == caught + timedelta(seconds=10)


def test_retry_on_timeout_without_retries_left_ends_failed(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False):
        task_id, _, _ = running(
            api, personas, timeout_seconds=1, retry_on_timeout=True, max_retries=0
        )
    sweep_at(app, T0 + timedelta(seconds=2))
    assert load(app, Task, task_id).status == "FAILED"


def test_the_agent_is_told_to_stop_a_timed_out_task_for_a_while(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        task_id, agent_id, agent = running(api, personas, slots=2, timeout_seconds=5)
        other = api.submit(personas.client, timeout_seconds=3600)["task_id"]
        assert [t["task_id"] for t in api.claim(agent_id, agent)] == [other]
        clock.shift(timedelta(seconds=6))
        sweep_at(app, T0 + timedelta(seconds=6))
        ack = beat(api, agent_id, agent)
        assert ack["stop_task_ids"] == [task_id]
        assert ack["cancelled_task_ids"] == []
        notices = claim_body(api, agent_id, agent)
        assert notices["stop_task_ids"] == [task_id] and notices["cancelled_task_ids"] == []
        # The notice is repeated (a lost response must not lose it), then dropped.
        clock.shift(timedelta(seconds=settings.stop_notice_seconds - 1))
        assert beat(api, agent_id, agent)["stop_task_ids"] == [task_id]
        clock.shift(timedelta(seconds=2))
        assert beat(api, agent_id, agent)["stop_task_ids"] == []
    assert load(app, Task, other).status == "ACTIVE"


def test_another_agent_is_not_told_to_stop_it(app: Flask, api: Api, personas: Personas) -> None:
    with time_machine.travel(T0, tick=False):
        running(api, personas, timeout_seconds=1)
        bystander_id, bystander = api.register_agent(personas.fleet, name="bystander")
        sweep_at(app, T0 + timedelta(seconds=2))
        ack = beat(api, bystander_id, bystander)
    assert ack["stop_task_ids"] == [] and ack["cancelled_task_ids"] == []


def test_a_late_report_from_the_timed_out_attempt_is_refused_and_changes_nothing(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        task_id, agent_id, agent = running(api, personas, timeout_seconds=5)
        sweep_at(app, T0 + timedelta(seconds=6))
        clock.shift(timedelta(seconds=7))
        with unchanged(app):
            for kind, body in (
                ("complete", {"result_data": {"late": True}, "attempt": 1}),
                ("complete", {"result_data": {"late": True}}),
                ("fail", {"error_message": "late", "attempt": 1}),
                ("progress", {"progress": 90, "attempt": 1}),
            ):
                assert_error(report(api, agent, task_id, kind, **body), 409, "conflict")
    shown = detail(api, personas.client, task_id)
    assert shown["status"] == "FAILED" and shown["result_data"] is None
    assert load(app, Agent, agent_id).total_tasks_completed == 0


def test_a_report_after_the_deadline_applies_the_timeout_even_before_the_sweep(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        task_id, agent_id, agent = running(api, personas, timeout_seconds=5, max_retries=3)
        clock.shift(timedelta(seconds=5))
        # At the deadline itself the report still counts.
        assert report(api, agent, task_id, "progress", progress=50, attempt=1).status_code == 200
        clock.shift(timedelta(milliseconds=1))
        response = report(api, agent, task_id, "complete", result_data={"x": 1}, attempt=1)
        error = assert_error(response, 409, "conflict")
    assert "timed out" in error["message"]
    shown = detail(api, personas.client, task_id)
    assert shown["status"] == "FAILED" and shown["result_data"] is None
    assert shown["last_error"] == "Task timed out after 5 seconds"
    assert shown["attempts"][0]["outcome"] == "timed_out"
    stored = load(app, Agent, agent_id)
    assert stored.active_tasks == 0 and stored.total_tasks_completed == 0
    assert sweep_at(app, T0 + timedelta(seconds=10))["timed_out"] == 0


def test_a_fail_report_after_the_deadline_is_a_timeout_not_a_retry(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        task_id, _, agent = running(api, personas, timeout_seconds=5, max_retries=3)
        clock.shift(timedelta(seconds=6))
        assert_error(report(api, agent, task_id, "fail", error_message="oops"), 409)
    shown = detail(api, personas.client, task_id)
    assert shown["status"] == "FAILED" and shown["retry_count"] == 0
    assert shown["last_error"] == "Task timed out after 5 seconds"


def test_a_result_before_the_deadline_stops_the_clock(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        task_id, _, agent = running(api, personas, timeout_seconds=5)
        clock.shift(timedelta(seconds=4))
        body = report(api, agent, task_id, "complete", result_data={"ok": 1}).get_json()
    assert body["status"] == "COMPLETED" and body["timeout_at"] is None
    assert sweep_at(app, T0 + timedelta(seconds=60))["timed_out"] == 0
    assert load(app, Task, task_id).status == "COMPLETED"


def test_a_timed_out_task_can_run_again_on_the_same_agent_without_being_stopped(
    app: Flask, api: Api, personas: Personas
) -> None:
    # The stop notice names the old attempt: once the same agent holds the task again,
    # it must not be told to stop the new attempt.
    with time_machine.travel(T0, tick=False) as clock:
        task_id, agent_id, agent = running(
            api, personas, timeout_seconds=5, retry_on_timeout=True, retry_policy="fixed"
        )
        sweep_at(app, T0 + timedelta(seconds=6))
        assert beat(api, agent_id, agent)["stop_task_ids"] == [task_id]
        clock.move_to(T0 + timedelta(seconds=16))
        [again] = api.claim(agent_id, agent)
        assert again["attempt"] == 2
        assert beat(api, agent_id, agent)["stop_task_ids"] == []
        assert_error(report(api, agent, task_id, "complete", attempt=1), 409, "stale_attempt")
        done = report(api, agent, task_id, "complete", result_data={"n": 2}, attempt=2)
        assert done.status_code == 200


@pytest.mark.parametrize("bad", [0, 3601, -5, "60", 1.5, True, None])
def test_it_refuses_a_bad_timeout(app: Flask, api: Api, personas: Personas, bad: object) -> None:
    body = {"task_type": "report", "capability_required": "report-v1", "timeout_seconds": bad}
    with unchanged(app):
        response = api.post("/ains/tasks", personas.client, json=body)
        assert_error(response, 422, "validation_error", "timeout_seconds")


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_it_refuses_a_bad_retry_on_timeout(
    app: Flask, api: Api, personas: Personas, bad: object
) -> None:
    body = {"task_type": "report", "capability_required": "report-v1", "retry_on_timeout": bad}
    with unchanged(app):
        response = api.post("/ains/tasks", personas.client, json=body)
        assert_error(response, 422, "validation_error", "retry_on_timeout")


def test_fail_keeps_the_timed_out_slot_free_for_the_next_task(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        task_id, agent_id, agent = running(api, personas, timeout_seconds=2)
        waiting = api.submit(personas.client)["task_id"]
        assert api.claim(agent_id, agent) == []  # its only slot is taken
        sweep_at(app, T0 + timedelta(seconds=3))
        clock.shift(timedelta(seconds=3))
        assert [t["task_id"] for t in api.claim(agent_id, agent)] == [waiting]
        fail(api, agent, waiting, retryable=False)
    assert load(app, Task, task_id).status == "FAILED"
