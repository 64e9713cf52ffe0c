"""Fencing: a report names its attempt; once that attempt is over (timed out, agent lost) and
the task runs again, on the same agent or another, the old attempt's reports are 409
stale_attempt and change nothing, and the new attempt's result stands."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask

from app.models import Agent
from app.services.settings import settings
from tests.api.lifecycle_support import beat, detail, fail, report, running, sweep_at
from tests.api.support import T0, assert_error, load, unchanged
from tests.conftest import Api, Persona, Personas

OLD_REPORTS: list[tuple[str, dict[str, Any]]] = [
    ("complete", {"result_data": {"from": "old"}, "attempt": 1}),
    ("fail", {"error_message": "old", "retryable": False, "attempt": 1}),
    ("progress", {"progress": 99, "message": "old", "attempt": 1}),
]


@pytest.fixture(autouse=True)
def no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "retry_jitter", "none")


def assert_old_attempt_refused(app: Flask, api: Api, agent: Persona, task_id: str) -> None:
    with unchanged(app):
        for kind, body in OLD_REPORTS:
            error = assert_error(report(api, agent, task_id, kind, **body), 409, "stale_attempt")
            assert "attempt 1" in error["message"]


def finish_second_attempt(api: Api, personas: Personas, agent: Persona, task_id: str) -> None:
    ok = report(api, agent, task_id, "complete", result_data={"from": "new"}, attempt=2)
    assert ok.status_code == 200, ok.get_json()
    shown = detail(api, personas.client, task_id)
    assert shown["status"] == "COMPLETED" and shown["result_data"] == {"from": "new"}
    assert [a["attempt"] for a in shown["attempts"]] == [1, 2]


def test_after_a_timeout_and_a_reclaim_by_the_same_agent(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        task_id, agent_id, agent = running(
            api, personas, timeout_seconds=5, retry_on_timeout=True, retry_policy="exponential"
        )
        sweep_at(app, T0 + timedelta(seconds=6))
        clock.move_to(T0 + timedelta(seconds=8))
        [again] = api.claim(agent_id, agent)
        assert again["attempt"] == 2
        assert_old_attempt_refused(app, api, agent, task_id)
        # Progress for the current attempt still works.
        assert report(api, agent, task_id, "progress", progress=10, attempt=2).status_code == 200
        finish_second_attempt(api, personas, agent, task_id)
    assert load(app, Agent, agent_id).total_tasks_completed == 1


def test_after_a_timeout_and_a_reclaim_by_another_agent(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        task_id, _, slow = running(
            api, personas, name="slow", timeout_seconds=5, retry_on_timeout=True
        )
        rescuer_id, rescuer = api.register_agent(personas.fleet, name="rescuer")
        sweep_at(app, T0 + timedelta(seconds=6))
        clock.move_to(T0 + timedelta(seconds=8))
        [again] = api.claim(rescuer_id, rescuer)
        assert again["attempt"] == 2
        assert_old_attempt_refused(app, api, slow, task_id)
        # Without an attempt number the slow agent is still refused: it no longer holds it.
        with unchanged(app):
            response = report(api, slow, task_id, "complete", result_data={"from": "old"})
            assert_error(response, 409, "stale_attempt")
        # The rescuer cannot pass itself off as attempt 1 either.
        with unchanged(app):
            response = report(api, rescuer, task_id, "complete", attempt=1)
            assert_error(response, 409, "stale_attempt")
        finish_second_attempt(api, personas, rescuer, task_id)


def test_after_agent_loss_and_a_reclaim_by_the_same_agent(
    app: Flask, api: Api, personas: Personas
) -> None:
    lost_at = T0 + timedelta(seconds=settings.lease_seconds + 1)
    with time_machine.travel(T0, tick=False) as clock:
        task_id, agent_id, agent = running(api, personas, timeout_seconds=3600)
        assert sweep_at(app, lost_at)["agents_lost"] == 1
        clock.move_to(lost_at + timedelta(seconds=2))
        # Back from a network partition: it heartbeats, learns to stop, and claims again.
        ack = beat(api, agent_id, agent)
        assert ack["agent_status"] == "AVAILABLE" and ack["stop_task_ids"] == [task_id]
        [again] = api.claim(agent_id, agent)
        assert again["attempt"] == 2
        assert beat(api, agent_id, agent)["stop_task_ids"] == []
        assert_old_attempt_refused(app, api, agent, task_id)
        finish_second_attempt(api, personas, agent, task_id)
    outcomes = [a["outcome"] for a in detail(api, personas.client, task_id)["attempts"]]
    assert outcomes == ["agent_lost", "completed"]


def test_after_agent_loss_and_a_reclaim_by_another_agent(
    app: Flask, api: Api, personas: Personas
) -> None:
    lost_at = T0 + timedelta(seconds=settings.lease_seconds + 1)
    with time_machine.travel(T0, tick=False) as clock:
        task_id, lost_id, lost = running(api, personas, name="lost", timeout_seconds=3600)
        clock.move_to(lost_at - timedelta(seconds=5))
        rescuer_id, rescuer = api.register_agent(personas.fleet, name="rescuer")
        assert sweep_at(app, lost_at)["agents_lost"] == 1
        clock.move_to(lost_at + timedelta(seconds=2))
        [again] = api.claim(rescuer_id, rescuer)
        assert again["attempt"] == 2
        assert_old_attempt_refused(app, api, lost, task_id)
        with unchanged(app):
            response = report(api, lost, task_id, "fail", error_message="old")
            assert_error(response, 409, "stale_attempt")
        finish_second_attempt(api, personas, rescuer, task_id)
    stored = load(app, Agent, lost_id)
    assert stored.total_tasks_completed == 0 and stored.total_tasks_failed == 1


def test_a_lost_attempt_before_any_reclaim_is_refused_as_finished(
    app: Flask, api: Api, personas: Personas
) -> None:
    # The task waits for its retry: the lost attempt is still the latest, but not running.
    with time_machine.travel(T0, tick=False):
        task_id, _, agent = running(api, personas, timeout_seconds=3600)
    sweep_at(app, T0 + timedelta(seconds=settings.lease_seconds + 1))
    with unchanged(app):
        for kind, body in OLD_REPORTS:
            assert_error(report(api, agent, task_id, kind, **body), 409, "conflict")
    assert detail(api, personas.client, task_id)["status"] == "PENDING"


def test_a_future_attempt_number_is_refused(app: Flask, api: Api, personas: Personas) -> None:
    task_id, _, agent = running(api, personas)
    with unchanged(app):
        for kind, body in OLD_REPORTS:
            response = report(api, agent, task_id, kind, **{**body, "attempt": 2})
            assert_error(response, 409, "stale_attempt")


def test_an_agent_that_never_held_the_task_gets_404_whatever_attempt_it_names(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        task_id, _, first = running(api, personas, name="first", retry_policy="fixed")
        fail(api, first, task_id)
        clock.shift(timedelta(seconds=10))
        # Another capability: the retry, due now, cannot be routed to it.
        _, stranger = api.register_agent(personas.other_fleet, ("scan-v1",), name="stranger")
        with unchanged(app):
            for attempt in (1, 2):
                response = report(api, stranger, task_id, "complete", attempt=attempt)
                assert_error(response, 404, "not_found")
