"""Progress, complete and fail: only the assigned agent, only while ACTIVE, only its attempt."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import time_machine
from flask import Flask

from app.models import Agent, Task
from tests.api.support import assert_error, load, unchanged
from tests.conftest import Api, Persona, Personas


def claimed_task(api: Api, personas: Personas, **fields: object) -> tuple[str, str, Persona]:
    """A task ACTIVE for a fresh agent of the fleet: (task_id, agent_id, agent key)."""
    agent_id, agent = api.register_agent(personas.fleet, slots=5)
    task = api.submit(personas.client, **fields)
    assert [t["task_id"] for t in api.claim(agent_id, agent)] == [task["task_id"]]
    return task["task_id"], agent_id, agent


def test_it_records_progress(app: Flask, api: Api, personas: Personas) -> None:
    task_id, _, agent = claimed_task(api, personas)
    response = api.post(
        f"/ains/tasks/{task_id}/progress",
        agent,
        json={"progress": 40, "message": "halfway-ish", "attempt": 1},
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["progress"] == 40 and body["progress_message"] == "halfway-ish"
    assert body["status"] == "ACTIVE"
    assert load(app, Task, task_id).progress == 40


def test_it_completes_a_task_and_counts_it_for_the_agent(
    app: Flask, api: Api, personas: Personas
) -> None:
    task_id, agent_id, agent = claimed_task(api, personas)
    response = api.post(
        f"/ains/tasks/{task_id}/complete",
        agent,
        json={"result_data": {"rows": [1, 2]}, "attempt": 1},
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "COMPLETED"
    assert body["result_data"] == {"rows": [1, 2]}
    assert body["progress"] == 100
    assert body["completed_at"] is not None and body["lease_expires_at"] is None
    stored = load(app, Agent, agent_id)
    assert stored.active_tasks == 0
    assert stored.total_tasks_completed == 1 and stored.total_tasks_failed == 0
    assert stored.avg_completion_time_seconds is not None
    assert stored.last_task_completed_at is not None


def test_it_lets_the_fleet_key_report_for_its_agent(api: Api, personas: Personas) -> None:
    task_id, _, _ = claimed_task(api, personas)
    response = api.post(f"/ains/tasks/{task_id}/complete", personas.fleet, json={})
    assert response.status_code == 200


def test_it_refuses_reports_on_a_finished_task_and_changes_nothing(
    app: Flask, api: Api, personas: Personas
) -> None:
    task_id, agent_id, agent = claimed_task(api, personas)
    api.post(f"/ains/tasks/{task_id}/complete", agent, json={"result_data": {"first": True}})
    before = api.get(f"/ains/tasks/{task_id}", personas.client).get_json()
    with unchanged(app):
        for path, body in (
            ("complete", {"result_data": {"second": True}}),
            ("fail", {"error_message": "too late", "retryable": False}),
            ("progress", {"progress": 10}),
        ):
            assert_error(api.post(f"/ains/tasks/{task_id}/{path}", agent, json=body), 409)
    after = api.get(f"/ains/tasks/{task_id}", personas.client).get_json()
    assert after == before
    assert load(app, Agent, agent_id).total_tasks_completed == 1


def test_it_refuses_to_complete_a_cancelled_task(app: Flask, api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    routed = api.submit(personas.client)["task_id"]  # takes the agent's only slot
    waiting = api.submit(personas.client)
    assert waiting["status"] == "PENDING" and waiting["assigned_agent_id"] is None
    for task_id in (waiting["task_id"], routed):
        api.post(f"/ains/tasks/{task_id}/cancel", personas.client, json={})
    with unchanged(app):
        response = api.post(f"/ains/tasks/{waiting['task_id']}/complete", agent, json={})
        # Never assigned to this agent: not its task to report on.
        assert_error(response, 404)
        # Routed to it, but cancelled before it was claimed: nothing to complete.
        response = api.post(f"/ains/tasks/{routed}/complete", agent, json={})
        assert_error(response, 409, "conflict")
    assert api.claim(agent_id, agent) == []


def test_it_refuses_a_report_from_a_foreign_agent_with_404(
    app: Flask, api: Api, personas: Personas
) -> None:
    task_id, _, _ = claimed_task(api, personas)
    _, sibling = api.register_agent(personas.fleet, name="sibling")
    _, foreign = api.register_agent(personas.other_fleet, name="foreign")
    with unchanged(app):
        for reporter in (sibling, foreign, personas.other_fleet):
            for path, body in (
                ("complete", {}),
                ("fail", {"error_message": "x"}),
                ("progress", {"progress": 1}),
            ):
                response = api.post(f"/ains/tasks/{task_id}/{path}", reporter, json=body)
                assert_error(response, 404, "not_found")


def test_it_refuses_a_stale_attempt_after_the_task_was_claimed_again(
    app: Flask, api: Api, personas: Personas
) -> None:
    task_id, agent_id, agent = claimed_task(api, personas, retry_policy="fixed")
    failed = api.post(
        f"/ains/tasks/{task_id}/fail", agent, json={"error_message": "flaky", "attempt": 1}
    )
    assert failed.get_json()["status"] == "PENDING"
    assert load(app, Task, task_id).assigned_agent_id is None
    # The fixed policy waits 10 s before the task can be claimed again.
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=11)):
        reclaimed = api.claim(agent_id, agent)
        assert [(t["task_id"], t["attempt"]) for t in reclaimed] == [(task_id, 2)]
        with unchanged(app):
            for path, body in (
                ("complete", {"attempt": 1}),
                ("fail", {"error_message": "old", "attempt": 1}),
                ("progress", {"progress": 50, "attempt": 1}),
            ):
                response = api.post(f"/ains/tasks/{task_id}/{path}", agent, json=body)
                assert_error(response, 409, "stale_attempt")
        done = api.post(f"/ains/tasks/{task_id}/complete", agent, json={"attempt": 2})
        assert done.status_code == 200


def test_it_writes_one_event_per_transition(api: Api, personas: Personas) -> None:
    task_id, agent_id, agent = claimed_task(api, personas)
    api.post(f"/ains/tasks/{task_id}/progress", agent, json={"progress": 5})
    api.post(f"/ains/tasks/{task_id}/complete", agent, json={})
    events = api.get(f"/ains/tasks/{task_id}", personas.client).get_json()["events"]
    assert [(e["from_status"], e["to_status"], e["actor"]) for e in events] == [
        (None, "PENDING", "client:client-1"),
        ("PENDING", "ASSIGNED", "system:router"),
        ("ASSIGNED", "ACTIVE", f"agent:{agent_id}"),
        ("ACTIVE", "COMPLETED", f"agent:{agent_id}"),
    ]
    assert events[1]["data"]["routing"]["winner"] == agent_id
    assert [e["event_id"] for e in events] == sorted(e["event_id"] for e in events)
