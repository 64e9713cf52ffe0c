"""POST /ains/tasks/{id}/fail: retry later, or FAILED; the agent's counters follow."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from flask import Flask

from app.models import Agent
from app.services.settings import settings
from tests.api.support import load, parse_time
from tests.conftest import Api, Persona, Personas


def running(
    api: Api, personas: Personas, slots: int = 1, **fields: object
) -> tuple[str, str, Persona]:
    agent_id, agent = api.register_agent(personas.fleet, slots=slots)
    task_id = api.submit(personas.client, **fields)["task_id"]
    assert [t["task_id"] for t in api.claim(agent_id, agent)] == [task_id]
    return task_id, agent_id, agent


def test_it_puts_a_retryable_failure_back_after_the_policy_delay(
    app: Flask, api: Api, personas: Personas, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "retry_jitter", "none")
    task_id, agent_id, agent = running(api, personas, max_retries=3)
    before = datetime.now(UTC)
    response = api.post(
        f"/ains/tasks/{task_id}/fail", agent, json={"error_message": "503 upstream"}
    )
    after = datetime.now(UTC)
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "PENDING"
    assert body["retry_count"] == 1 and body["attempt"] == 1
    assert body["error_message"] == "503 upstream"
    assert body["assigned_agent_id"] is None and body["lease_expires_at"] is None
    next_retry = parse_time(body["next_retry_at"])
    # exponential, first retry: 2 s (jitter off here; test_retries covers it).
    assert (next_retry - before).total_seconds() >= 2
    assert (next_retry - after).total_seconds() <= 2
    assert api.claim(agent_id, agent) == []  # not before next_retry_at

    stored = load(app, Agent, agent_id)
    assert stored.active_tasks == 0 and stored.total_tasks_failed == 1
    events = api.get(f"/ains/tasks/{task_id}", personas.client).get_json()["events"]
    last = events[-1]
    assert (last["from_status"], last["to_status"]) == ("ACTIVE", "PENDING")
    assert last["actor"] == f"agent:{agent_id}" and "503 upstream" in last["reason"]


def test_it_fails_for_good_when_the_agent_says_not_retryable(
    app: Flask, api: Api, personas: Personas
) -> None:
    task_id, agent_id, agent = running(api, personas, max_retries=3)
    response = api.post(
        f"/ains/tasks/{task_id}/fail",
        agent,
        json={"error_message": "bad input", "retryable": False},
    )
    body = response.get_json()
    assert body["status"] == "FAILED"
    assert body["retry_count"] == 0 and body["next_retry_at"] is None
    assert body["completed_at"] is not None
    stored = load(app, Agent, agent_id)
    assert stored.active_tasks == 0 and stored.total_tasks_failed == 1


def test_it_fails_for_good_when_no_retries_are_left(api: Api, personas: Personas) -> None:
    task_id, _, agent = running(api, personas, max_retries=0)
    body = api.post(f"/ains/tasks/{task_id}/fail", agent, json={"error_message": "x"}).get_json()
    assert body["status"] == "FAILED" and body["retry_count"] == 0
    events = api.get(f"/ains/tasks/{task_id}", personas.client).get_json()["events"]
    assert events[-1]["to_status"] == "FAILED"


def test_it_keeps_the_agent_counters_in_step(app: Flask, api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet, slots=3)
    tasks = [api.submit(personas.client)["task_id"] for _ in range(3)]
    assert len(api.claim(agent_id, agent, max_tasks=3)) == 3
    assert load(app, Agent, agent_id).active_tasks == 3
    api.post(f"/ains/tasks/{tasks[0]}/complete", agent, json={})
    api.post(f"/ains/tasks/{tasks[1]}/fail", agent, json={"error_message": "x", "retryable": False})
    api.post(f"/ains/tasks/{tasks[2]}/fail", agent, json={"error_message": "y"})
    shown = api.get(f"/ains/agents/{agent_id}", agent).get_json()
    assert shown["active_tasks"] == 0
    assert shown["total_tasks_completed"] == 1
    assert shown["total_tasks_failed"] == 2
