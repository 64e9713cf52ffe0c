"""POST /ains/agents/{id}/tasks/claim: slots, capabilities, agent status, long poll."""

from __future__ import annotations

import threading
import time
from typing import Any

from flask import Flask

from app.models import Agent, Task
from tests.api.support import assert_error, load, parse_time, unchanged
from tests.conftest import Api, Persona, Personas


def claim_url(agent_id: str) -> str:
    return f"/ains/agents/{agent_id}/tasks/claim"


def test_it_hands_out_active_tasks_with_attempt_and_lease(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    task = api.submit(personas.client, timeout_seconds=120)
    response = api.post(claim_url(agent_id), agent, json={"max_tasks": 1})
    assert response.status_code == 200
    body = response.get_json()
    assert body["cancelled_task_ids"] == []
    [claimed] = body["tasks"]
    assert claimed["task_id"] == task["task_id"]
    assert claimed["status"] == "ACTIVE"
    assert claimed["assigned_agent_id"] == agent_id
    assert claimed["attempt"] == 1
    claimed_at = parse_time(claimed["claimed_at"])
    # The execution deadline comes from the task; the lease from the heartbeat settings
    # (interval x misses allowed), renewed by heartbeats and progress.
    assert (parse_time(claimed["timeout_at"]) - claimed_at).total_seconds() == 120
    lease = parse_time(claimed["lease_expires_at"]) - claimed_at
    interval = app.config["HEARTBEAT_INTERVAL_SECONDS"]
    assert lease.total_seconds() == interval * app.config["HEARTBEAT_MISSES_ALLOWED"]


def test_it_never_gives_an_agent_more_than_its_slots(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet, slots=2)
    for _ in range(5):
        api.submit(personas.client)
    first = api.claim(agent_id, agent, max_tasks=10)
    assert len(first) == 2
    assert api.claim(agent_id, agent, max_tasks=10) == []
    assert load(app, Agent, agent_id).active_tasks == 2

    done = api.post(f"/ains/tasks/{first[0]['task_id']}/complete", agent, json={})
    assert done.status_code == 200
    assert len(api.claim(agent_id, agent, max_tasks=10)) == 1
    assert api.claim(agent_id, agent, max_tasks=10) == []
    assert load(app, Agent, agent_id).active_tasks == 2
    listed = api.get("/ains/tasks", personas.client, query_string={"status": "PENDING"})
    assert len(listed.get_json()["tasks"]) == 2


def test_it_claims_no_more_than_max_tasks(api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet, slots=10)
    for _ in range(4):
        api.submit(personas.client)
    assert len(api.claim(agent_id, agent, max_tasks=3)) == 3
    assert len(api.claim(agent_id, agent)) == 1


def test_it_only_hands_out_capabilities_the_agent_registered(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet, capabilities=("report-v1",), slots=10)
    report = api.submit(personas.client, capability_required="report-v1")
    translate = api.submit(personas.client, capability_required="translate-v2")
    assert [t["task_id"] for t in api.claim(agent_id, agent, max_tasks=10)] == [report["task_id"]]
    assert load(app, Task, translate["task_id"]).status == "PENDING"

    added = api.post(f"/ains/agents/{agent_id}/capabilities", agent, json={"name": "translate-v2"})
    assert added.status_code == 201
    claimed = api.claim(agent_id, agent, max_tasks=10)
    assert [t["task_id"] for t in claimed] == [translate["task_id"]]


def test_it_gives_an_agent_without_capabilities_nothing(api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet, capabilities=())
    api.submit(personas.client)
    assert api.claim(agent_id, agent) == []


def test_it_refuses_a_claim_from_an_inactive_agent_with_409(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    api.submit(personas.client)
    offline = api.post(f"/ains/agents/{agent_id}/heartbeat", agent, json={"status": "OFFLINE"})
    assert offline.get_json()["agent_status"] == "INACTIVE"
    with unchanged(app):
        response = api.post(claim_url(agent_id), agent, json={"max_tasks": 1})
        assert_error(response, 409, "conflict")

    api.post(f"/ains/agents/{agent_id}/heartbeat", agent, json={"status": "ACTIVE"})
    assert len(api.claim(agent_id, agent)) == 1


def test_it_lets_a_busy_agent_claim(api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    api.submit(personas.client)
    api.post(f"/ains/agents/{agent_id}/heartbeat", agent, json={"status": "DEGRADED"})
    assert len(api.claim(agent_id, agent)) == 1


def test_it_lets_the_fleet_key_claim_for_its_agent_but_not_another_fleet(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, _ = api.register_agent(personas.fleet)
    api.submit(personas.client)
    with unchanged(app):
        assert_error(api.post(claim_url(agent_id), personas.other_fleet, json={}), 404)
        assert_error(api.post(claim_url(agent_id), personas.client, json={}), 403)
    assert len(api.claim(agent_id, personas.fleet)) == 1


def long_poll(app: Flask, agent_id: str, agent: Persona, wait: float, out: dict[str, Any]) -> None:
    """Claim with wait_seconds from another thread, on its own test client."""
    client = app.test_client()
    started = time.monotonic()
    response = client.post(
        claim_url(agent_id), json={"max_tasks": 1, "wait_seconds": wait}, headers=agent.headers
    )
    out["elapsed"] = time.monotonic() - started
    out["status"] = response.status_code
    out["body"] = response.get_json()


def test_it_wakes_a_long_poll_as_soon_as_a_task_is_submitted(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    out: dict[str, Any] = {}
    poller = threading.Thread(target=long_poll, args=(app, agent_id, agent, 2.0, out))
    poller.start()
    time.sleep(0.3)
    task = api.submit(personas.client)
    submitted_at = time.monotonic()
    poller.join(timeout=10)
    assert not poller.is_alive()
    assert out["status"] == 200, out["body"]
    assert [t["task_id"] for t in out["body"]["tasks"]] == [task["task_id"]]
    # Woken by the submit, not by the end of the wait.
    assert out["elapsed"] < 1.5, out["elapsed"]
    assert time.monotonic() - submitted_at < 1.2


def test_it_ignores_tasks_of_other_capabilities_during_a_long_poll(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet, capabilities=("report-v1",))
    out: dict[str, Any] = {}
    poller = threading.Thread(target=long_poll, args=(app, agent_id, agent, 1.0, out))
    poller.start()
    time.sleep(0.2)
    api.submit(personas.client, capability_required="translate-v2")
    poller.join(timeout=10)
    assert out["status"] == 200
    assert out["body"]["tasks"] == []
    assert out["elapsed"] >= 0.9


def test_it_returns_an_empty_long_poll_after_wait_seconds(api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    started = time.monotonic()
    response = api.post(claim_url(agent_id), agent, json={"wait_seconds": 1})
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.get_json() == {"tasks": [], "cancelled_task_ids": [], "stop_task_ids": []}
    assert 0.9 <= elapsed < 2.5, elapsed
