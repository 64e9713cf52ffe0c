"""POST /ains/tasks/{id}/cancel in every state: waiting tasks end CANCELLED at once; a
running one is asked to stop (202), its agent hears it, confirms or is overruled after the
grace period; finished tasks and other clients' tasks are refused and left alone."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask

from app.models import Agent, Task
from app.services.settings import settings
from tests.api.lifecycle_support import (
    beat,
    claim_body,
    detail,
    fail,
    force_state,
    report,
    running,
    sweep_at,
)
from tests.api.support import T0, assert_error, load, parse_time, unchanged
from tests.conftest import Api, Persona, Personas

GRACE = 30


@pytest.fixture(autouse=True)
def grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "cancel_grace_seconds", GRACE)
    monkeypatch.setattr(settings, "retry_jitter", "none")


def cancel(api: Api, persona: Persona, task_id: str, reason: str | None = "stop") -> Any:
    return api.post(f"/ains/tasks/{task_id}/cancel", persona, json={"reason": reason})


def assert_cancelled_now(api: Api, personas: Personas, task_id: str, from_status: str) -> None:
    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        response = cancel(api, personas.client, task_id, "not needed")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "CANCELLED"
    assert parse_time(body["cancelled_at"]) == T0 + timedelta(minutes=1)
    assert parse_time(body["completed_at"]) == T0 + timedelta(minutes=1)
    assert body["cancelled_by"] == "client:client-1"
    assert body["cancellation_reason"] == "not needed"
    assert body["cancel_requested_at"] is None and body["next_retry_at"] is None
    last = detail(api, personas.client, task_id)["events"][-1]
    assert (last["from_status"], last["to_status"]) == (from_status, "CANCELLED")
    assert (last["actor"], last["reason"]) == ("client:client-1", "not needed")


def test_it_cancels_a_pending_task_at_once(app: Flask, api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    with time_machine.travel(T0, tick=False):
        busy = api.submit(personas.client)["task_id"]  # holds the agent's only slot
        waiting = api.submit(personas.client)
    task_id = waiting["task_id"]
    assert (waiting["status"], waiting["assigned_agent_id"]) == ("PENDING", None)
    assert_cancelled_now(api, personas, task_id, "PENDING")
    # Once the slot is free, the cancelled task is not routed to the agent.
    assert [t["task_id"] for t in api.claim(agent_id, agent)] == [busy]
    assert report(api, agent, busy, "complete").status_code == 200
    assert api.claim(agent_id, agent) == []


def test_it_cancels_a_task_waiting_for_its_retry_at_once(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False):
        task_id, agent_id, agent = running(api, personas, retry_policy="fixed")
        assert fail(api, agent, task_id)["next_retry_at"] is not None
    assert_cancelled_now(api, personas, task_id, "PENDING")
    with time_machine.travel(T0 + timedelta(minutes=2), tick=False):
        beat(api, agent_id, agent)
        assert api.claim(agent_id, agent) == []
    # The failed attempt stays in the history; the agent's slot was freed by the failure.
    assert [a["outcome"] for a in detail(api, personas.client, task_id)["attempts"]] == ["failed"]
    assert load(app, Agent, agent_id).active_tasks == 0


@pytest.mark.parametrize("status", ["ASSIGNED", "BLOCKED"])
def test_it_cancels_an_assigned_or_blocked_task_at_once(
    app: Flask, api: Api, personas: Personas, status: str
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    with time_machine.travel(T0, tick=False):
        task_id = api.submit(personas.client)["task_id"]
    force_state(
        app, task_id, status=status, assigned_agent_id=agent_id if status == "ASSIGNED" else None
    )
    assert_cancelled_now(api, personas, task_id, status)
    assert api.claim(agent_id, agent) == []
    assert load(app, Agent, agent_id).active_tasks == 0


def test_a_running_task_is_asked_to_stop_and_the_agent_hears_it(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        task_id, agent_id, agent = running(api, personas, slots=2)
        other = api.submit(personas.client)["task_id"]
        api.claim(agent_id, agent)
        clock.shift(timedelta(seconds=3))
        response = cancel(api, personas.client, task_id, "wrong input")
        assert response.status_code == 202
        body = response.get_json()
        assert body["status"] == "ACTIVE"
        assert parse_time(body["cancel_requested_at"]) == T0 + timedelta(seconds=3)
        assert body["cancelled_at"] is None
        assert body["cancelled_by"] == "client:client-1"
        assert body["cancellation_reason"] == "wrong input"
        last = detail(api, personas.client, task_id)["events"][-1]
        assert (last["from_status"], last["to_status"]) == ("ACTIVE", "ACTIVE")
        assert last["reason"] == "cancel requested: wrong input"
        assert last["data"] == {"attempt": 1, "agent_id": agent_id}

        ack = beat(api, agent_id, agent)
        assert ack["cancelled_task_ids"] == [task_id] and ack["stop_task_ids"] == [task_id]
        notices = claim_body(api, agent_id, agent)
        assert notices["cancelled_task_ids"] == [task_id]
        assert notices["stop_task_ids"] == [task_id]
        with unchanged(app):
            progress = report(api, agent, task_id, "progress", progress=70, attempt=1)
            assert_error(progress, 409, "cancel_requested")
    assert load(app, Task, other).cancel_requested_at is None


def test_the_agents_fail_confirms_the_cancel(app: Flask, api: Api, personas: Personas) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        task_id, agent_id, agent = running(api, personas, max_retries=3)
        cancel(api, personas.client, task_id, "wrong input")
        clock.shift(timedelta(seconds=2))
        body = fail(api, agent, task_id, error_message="stopped", attempt=1)
    assert body["status"] == "CANCELLED"
    assert parse_time(body["cancelled_at"]) == T0 + timedelta(seconds=2)
    assert body["retry_count"] == 0 and body["next_retry_at"] is None
    shown = detail(api, personas.client, task_id)
    [attempt] = shown["attempts"]
    assert attempt["outcome"] == "cancelled" and attempt["ended_by"] == f"agent:{agent_id}"
    last = shown["events"][-1]
    assert (last["from_status"], last["to_status"]) == ("ACTIVE", "CANCELLED")
    assert "wrong input" in last["reason"] and "stopped" in last["reason"]
    stored = load(app, Agent, agent_id)
    # Stopping on request is not the agent's failure.
    assert stored.active_tasks == 0 and stored.total_tasks_failed == 0
    with time_machine.travel(T0 + timedelta(seconds=3), tick=False):
        assert beat(api, agent_id, agent)["cancelled_task_ids"] == [task_id]
    assert sweep_at(app, T0 + timedelta(seconds=GRACE + 10))["cancels_forced"] == 0


def test_a_result_for_a_cancelled_run_is_refused_and_the_task_ends_cancelled(
    app: Flask, api: Api, personas: Personas
) -> None:
    task_id, agent_id, agent = running(api, personas)
    cancel(api, personas.client, task_id)
    response = report(api, agent, task_id, "complete", result_data={"answer": 42})
    assert_error(response, 409, "cancel_requested")
    shown = detail(api, personas.client, task_id)
    assert shown["status"] == "CANCELLED" and shown["result_data"] is None
    assert shown["attempts"][0]["outcome"] == "cancelled"
    stored = load(app, Agent, agent_id)
    assert stored.active_tasks == 0 and stored.total_tasks_completed == 0
    # Said once; the next try is a plain conflict and changes nothing.
    with unchanged(app):
        again = report(api, agent, task_id, "complete", result_data={"answer": 42})
        assert_error(again, 409, "conflict")


def test_the_grace_period_forces_the_cancel_and_refuses_later_reports(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        task_id, agent_id, agent = running(api, personas, timeout_seconds=3600)
        cancel(api, personas.client, task_id, "too slow")
        clock.shift(timedelta(seconds=GRACE))
        beat(api, agent_id, agent)  # alive, but it never confirms
        assert sweep_at(app, T0 + timedelta(seconds=GRACE))["cancels_forced"] == 0
        assert load(app, Task, task_id).status == "ACTIVE"
        forced_at = T0 + timedelta(seconds=GRACE + 1)
        assert sweep_at(app, forced_at)["cancels_forced"] == 1
        shown = detail(api, personas.client, task_id)
        assert shown["status"] == "CANCELLED"
        assert parse_time(shown["cancelled_at"]) == forced_at
        assert shown["attempts"][0]["outcome"] == "cancelled"
        assert shown["attempts"][0]["ended_by"] == "system:cancel"
        last = shown["events"][-1]
        assert last["actor"] == "system:cancel"
        assert f"within {GRACE}s" in last["reason"] and "too slow" in last["reason"]
        assert load(app, Agent, agent_id).active_tasks == 0
        clock.shift(timedelta(seconds=5))
        ack = beat(api, agent_id, agent)
        assert ack["cancelled_task_ids"] == [task_id] and ack["stop_task_ids"] == [task_id]
        with unchanged(app):
            for kind, body in (
                ("complete", {"result_data": {"late": 1}, "attempt": 1}),
                ("fail", {"error_message": "late", "attempt": 1}),
                ("progress", {"progress": 99, "attempt": 1}),
            ):
                assert_error(report(api, agent, task_id, kind, **body), 409, "conflict")
    assert detail(api, personas.client, task_id)["result_data"] is None


def test_a_grace_of_zero_cancels_on_the_next_sweep(
    app: Flask, api: Api, personas: Personas, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "cancel_grace_seconds", 0)
    with time_machine.travel(T0, tick=False):
        task_id, _, _ = running(api, personas)
        assert cancel(api, personas.client, task_id).status_code == 202
    assert sweep_at(app, T0 + timedelta(milliseconds=1))["cancels_forced"] == 1
    assert load(app, Task, task_id).status == "CANCELLED"


def test_cancelling_a_running_task_twice_changes_nothing(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        task_id, agent_id, agent = running(api, personas)
        first = cancel(api, personas.client, task_id, "first").get_json()
        clock.shift(timedelta(seconds=20))
        with unchanged(app):
            again = cancel(api, personas.client, task_id, "second")
            assert again.status_code == 202
            admin_again = cancel(api, personas.admin, task_id, "admin")
            assert admin_again.status_code == 202
        beat(api, agent_id, agent)  # alive: only the grace period can end it
    body = again.get_json()
    assert body["cancel_requested_at"] == first["cancel_requested_at"]
    assert body["cancellation_reason"] == "first"
    # The grace period still counts from the first request.
    assert sweep_at(app, T0 + timedelta(seconds=GRACE + 1))["cancels_forced"] == 1


def test_a_cancel_requested_task_whose_agent_dies_ends_cancelled_not_retried(
    app: Flask, api: Api, personas: Personas, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "cancel_grace_seconds", 3600)
    with time_machine.travel(T0, tick=False):
        task_id, agent_id, _ = running(api, personas, timeout_seconds=3600, max_retries=3)
        cancel(api, personas.client, task_id)
    counts = sweep_at(app, T0 + timedelta(seconds=settings.lease_seconds + 1))
    assert counts["agents_lost"] == 1
    shown = detail(api, personas.client, task_id)
    assert shown["status"] == "CANCELLED" and shown["retry_count"] == 0
    assert shown["attempts"][0]["outcome"] == "cancelled"
    assert load(app, Agent, agent_id).active_tasks == 0


def test_a_cancel_requested_task_that_times_out_ends_cancelled(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False):
        task_id, _, _ = running(api, personas, timeout_seconds=5, retry_on_timeout=True)
        cancel(api, personas.client, task_id)
    assert sweep_at(app, T0 + timedelta(seconds=6))["timed_out"] == 1
    shown = detail(api, personas.client, task_id)
    assert shown["status"] == "CANCELLED" and shown["retry_count"] == 0


@pytest.mark.parametrize("end", ["COMPLETED", "FAILED", "CANCELLED", "EXPIRED"])
def test_cancelling_a_finished_task_is_a_conflict_and_changes_nothing(
    app: Flask, api: Api, personas: Personas, end: str
) -> None:
    with time_machine.travel(T0, tick=False):
        task_id, _, agent = running(api, personas, expires_in_seconds=60)
        if end == "COMPLETED":
            report(api, agent, task_id, "complete", result_data={"v": 1})
        elif end == "FAILED":
            fail(api, agent, task_id, retryable=False)
        elif end == "CANCELLED":
            fail(api, agent, task_id, retry_after_seconds=0)
            assert cancel(api, personas.client, task_id, "first").status_code == 200
        else:
            fail(api, agent, task_id, retry_after_seconds=3600)
    if end == "EXPIRED":
        sweep_at(app, T0 + timedelta(seconds=61))
    before = detail(api, personas.client, task_id)
    assert before["status"] == end
    with unchanged(app):
        for persona in (personas.client, personas.admin):
            error = assert_error(cancel(api, persona, task_id, "again"), 409, "conflict")
            assert end in error["message"]
    assert detail(api, personas.client, task_id) == before


def test_another_clients_task_is_not_found_and_left_alone(
    app: Flask, api: Api, personas: Personas
) -> None:
    pending = api.submit(personas.client, capability_required="idle-v1")["task_id"]
    active, _, _ = running(api, personas)
    with unchanged(app):
        for task_id in (pending, active, "task_does_not_exist"):
            assert_error(cancel(api, personas.other_client, task_id), 404, "not_found")


def test_agents_cannot_cancel_and_bad_bodies_are_refused(
    app: Flask, api: Api, personas: Personas
) -> None:
    task_id, _, agent = running(api, personas)
    with unchanged(app):
        assert_error(cancel(api, agent, task_id), 403, "forbidden")
        assert_error(cancel(api, personas.fleet, task_id), 403, "forbidden")
        url = f"/ains/tasks/{task_id}/cancel"
        for bad, field in (
            ({"reason": "x" * 2001}, "reason"),
            ({"reason": 5}, "reason"),
            ({"why": "x"}, "why"),
        ):
            assert_error(api.post(url, personas.client, json=bad), 422, "validation_error", field)
        assert_error(api.post(url, personas.client, json=["x"]), 400, "bad_request")
        assert_error(api.post(url, json={}), 401)
