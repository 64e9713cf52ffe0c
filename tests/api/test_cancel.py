"""POST /ains/tasks/{id}/cancel: waiting tasks end CANCELLED, with who, when and why."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Flask

from tests.api.support import assert_error, parse_time, unchanged
from tests.conftest import Api, Personas


def test_it_cancels_a_pending_task(app: Flask, api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    submitted = api.submit(personas.client)
    task_id = submitted["task_id"]
    # Waiting, routed to the agent but not claimed yet.
    assert (submitted["status"], submitted["assigned_agent_id"]) == ("ASSIGNED", agent_id)
    before = datetime.now(UTC)
    response = api.post(
        f"/ains/tasks/{task_id}/cancel", personas.client, json={"reason": "no longer needed"}
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "CANCELLED"
    assert parse_time(body["cancelled_at"]) >= before
    assert body["cancelled_by"] == "client:client-1"
    assert body["cancellation_reason"] == "no longer needed"
    assert api.claim(agent_id, agent) == []

    events = api.get(f"/ains/tasks/{task_id}", personas.client).get_json()["events"]
    last = events[-1]
    assert (last["from_status"], last["to_status"]) == ("ASSIGNED", "CANCELLED")
    assert last["actor"] == "client:client-1" and last["reason"] == "no longer needed"


def test_it_cancels_without_a_reason_and_records_an_admin(api: Api, personas: Personas) -> None:
    task_id = api.submit(personas.client)["task_id"]
    body = api.post(f"/ains/tasks/{task_id}/cancel", personas.admin, json={}).get_json()
    assert body["status"] == "CANCELLED"
    assert body["cancelled_by"].startswith("admin:")
    assert body["cancellation_reason"] is None


def test_it_cancels_a_task_waiting_for_its_retry(api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    task_id = api.submit(personas.client)["task_id"]
    api.claim(agent_id, agent)
    api.post(f"/ains/tasks/{task_id}/fail", agent, json={"error_message": "flaky"})
    body = api.post(f"/ains/tasks/{task_id}/cancel", personas.client, json={}).get_json()
    assert body["status"] == "CANCELLED"


def test_it_refuses_to_cancel_a_finished_task_and_changes_nothing(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    done = api.submit(personas.client)["task_id"]
    api.claim(agent_id, agent)
    api.post(f"/ains/tasks/{done}/complete", agent, json={})
    cancelled = api.submit(personas.client, capability_required="idle-v1")["task_id"]
    api.post(f"/ains/tasks/{cancelled}/cancel", personas.client, json={"reason": "first"})
    with unchanged(app):
        for task_id in (done, cancelled):
            response = api.post(
                f"/ains/tasks/{task_id}/cancel", personas.client, json={"reason": "again"}
            )
            assert_error(response, 409, "conflict")
    body = api.get(f"/ains/tasks/{cancelled}", personas.client).get_json()
    assert body["cancellation_reason"] == "first"
