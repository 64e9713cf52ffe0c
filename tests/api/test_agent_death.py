"""Dead agents: an agent that stops heartbeating goes INACTIVE, its running tasks count an
"agent lost" attempt and follow their retry policy (preferring a live agent), its assigned
ones go back to the queue; heartbeats and progress keep a lease alive."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from flask import Flask

from app.models import Agent, AgentStatus, Task
from app.services.settings import settings
from tests.api.lifecycle_support import (
    beat,
    detail,
    force_state,
    lease,
    report,
    running,
    sweep_at,
)
from tests.api.support import T0, load, parse_time
from tests.conftest import Api, Personas


@pytest.fixture(autouse=True)
def no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "retry_jitter", "none")


def test_a_silent_agent_goes_inactive_and_its_running_task_is_retried_as_agent_lost(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False):
        task_id, agent_id, _ = running(
            api, personas, timeout_seconds=3600, max_retries=2, retry_policy="linear"
        )
    assert sweep_at(app, T0 + timedelta(seconds=lease()))["agents_lost"] == 0
    assert load(app, Agent, agent_id).status == AgentStatus.AVAILABLE

    caught = T0 + timedelta(seconds=lease(), milliseconds=400)
    counts = sweep_at(app, caught)
    assert counts["agents_lost"] == 1 and counts["leases_expired"] == 0
    agent = load(app, Agent, agent_id)
    assert agent.status == AgentStatus.INACTIVE
    assert agent.active_tasks == 0 and agent.total_tasks_failed == 1
    shown = detail(api, personas.client, task_id)
    assert shown["status"] == "PENDING" and shown["retry_count"] == 1
    assert shown["assigned_agent_id"] is None and shown["lease_expires_at"] is None
    assert shown["last_error"] == "agent lost: no heartbeat"
    assert parse_time(shown["next_retry_at"]) == caught + timedelta(seconds=5)
    [attempt] = shown["attempts"]
    assert (attempt["outcome"], attempt["error"], attempt["ended_by"]) == (
        "agent_lost",
        "agent lost: no heartbeat",
        "system:heartbeat",
    )
    last = shown["events"][-1]
    assert (last["from_status"], last["to_status"]) == ("ACTIVE", "PENDING")
    assert parse_time(last["data"]["deadline"]) == T0 + timedelta(seconds=lease())
    assert last["data"]["late_ms"] == 400
    assert last["data"]["agent_id"] == agent_id
    # Counted once, however often the sweep runs.
    assert sweep_at(app, caught + timedelta(seconds=1))["agents_lost"] == 0
    assert load(app, Agent, agent_id).total_tasks_failed == 1


def test_an_agent_lost_task_without_retries_left_ends_failed(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False):
        task_id, _, _ = running(api, personas, timeout_seconds=3600, max_retries=0)
    sweep_at(app, T0 + timedelta(seconds=lease() + 1))
    shown = detail(api, personas.client, task_id)
    assert shown["status"] == "FAILED" and shown["last_error"] == "agent lost: no heartbeat"
    dead = api.get("/ains/dead-letter", personas.client).get_json()["tasks"]
    assert [t["task_id"] for t in dead] == [task_id]


def test_the_retry_goes_to_a_live_agent_rather_than_the_lost_one(
    app: Flask, api: Api, personas: Personas
) -> None:
    lost_at = T0 + timedelta(seconds=lease() + 1)
    with time_machine.travel(T0, tick=False) as clock:
        task_id, lost_id, lost = running(
            api, personas, name="lost", timeout_seconds=3600, retry_policy="fixed"
        )
        live_id, live = api.register_agent(personas.fleet, name="live")
        clock.move_to(lost_at - timedelta(seconds=1))
        beat(api, live_id, live)
        sweep_at(app, lost_at)
        clock.move_to(lost_at + timedelta(seconds=10))
        # The lost agent comes back first, but the live one has a free slot.
        beat(api, lost_id, lost)
        beat(api, live_id, live)
        assert api.claim(lost_id, lost) == []
        [taken] = api.claim(live_id, live)
        assert (taken["task_id"], taken["attempt"]) == (task_id, 2)
        assert report(api, live, task_id, "complete", attempt=2).status_code == 200
    agents = [a["agent_id"] for a in detail(api, personas.client, task_id)["attempts"]]
    assert agents == [lost_id, live_id]
    assert load(app, Agent, lost_id).active_tasks == 0


def test_a_lost_agent_alone_gets_its_task_back_once_it_returns(
    app: Flask, api: Api, personas: Personas
) -> None:
    lost_at = T0 + timedelta(seconds=lease() + 1)
    with time_machine.travel(T0, tick=False) as clock:
        task_id, agent_id, agent = running(
            api, personas, timeout_seconds=3600, retry_policy="fixed"
        )
        sweep_at(app, lost_at)
        clock.move_to(lost_at + timedelta(seconds=10))
        # INACTIVE agents may not claim until they heartbeat again.
        response = api.post(f"/ains/agents/{agent_id}/tasks/claim", agent, json={})
        assert response.status_code == 409
        beat(api, agent_id, agent)
        [taken] = api.claim(agent_id, agent)
    assert (taken["task_id"], taken["attempt"]) == (task_id, 2)


def test_a_silent_agents_assigned_task_goes_back_to_the_queue_without_an_attempt(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False):
        agent_id, _ = api.register_agent(personas.fleet, name="routed-to")
        task_id = api.submit(personas.client, capability_required="routed-v1")["task_id"]
    force_state(app, task_id, status="ASSIGNED", assigned_agent_id=agent_id)
    caught = T0 + timedelta(seconds=lease() + 2)
    assert sweep_at(app, caught)["agents_lost"] == 1
    shown = detail(api, personas.client, task_id)
    assert shown["status"] == "PENDING" and shown["assigned_agent_id"] is None
    assert shown["retry_count"] == 0 and shown["attempt"] == 0 and shown["attempts"] == []
    assert shown["next_retry_at"] is None and shown["last_error"] is None
    last = shown["events"][-1]
    assert (last["from_status"], last["to_status"]) == ("ASSIGNED", "PENDING")
    assert last["data"]["agent_id"] == agent_id and last["data"]["late_ms"] == 2000
    agent = load(app, Agent, agent_id)
    assert agent.status == AgentStatus.INACTIVE and agent.total_tasks_failed == 0
    with time_machine.travel(caught, tick=False):
        other_id, other = api.register_agent(
            personas.fleet, name="other", capabilities=("routed-v1",)
        )
        assert [t["task_id"] for t in api.claim(other_id, other)] == [task_id]


def test_heartbeats_keep_a_task_alive_well_past_its_first_lease(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        task_id, agent_id, agent = running(api, personas, timeout_seconds=3600)
        first_lease = parse_time(detail(api, personas.client, task_id)["lease_expires_at"])
        assert first_lease == T0 + timedelta(seconds=lease())
        for step in range(1, 9):
            clock.move_to(T0 + timedelta(seconds=step * lease() / 2))
            beat(api, agent_id, agent)
            counts = sweep_at(app, T0 + timedelta(seconds=step * lease() / 2 + 1))
            assert counts["agents_lost"] == counts["leases_expired"] == 0
        shown = detail(api, personas.client, task_id)
        assert shown["status"] == "ACTIVE" and shown["attempt"] == 1
        assert parse_time(shown["lease_expires_at"]) == T0 + timedelta(seconds=5 * lease())
        assert report(api, agent, task_id, "complete", attempt=1).status_code == 200


def test_progress_renews_the_lease_of_its_task(app: Flask, api: Api, personas: Personas) -> None:
    # Heartbeats naming no task keep the agent alive but renew no lease, so only the
    # progress reports keep the task.
    with time_machine.travel(T0, tick=False) as clock:
        task_id, agent_id, agent = running(api, personas, slots=2, timeout_seconds=3600)
        quiet = api.submit(personas.client, timeout_seconds=3600)["task_id"]
        api.claim(agent_id, agent)
        for step in range(1, 5):
            now = T0 + timedelta(seconds=step * lease() / 2)
            clock.move_to(now)
            beat(api, agent_id, agent, running_task_ids=[])
            body = report(api, agent, task_id, "progress", progress=step * 10, attempt=1)
            assert body.status_code == 200
            assert parse_time(body.get_json()["lease_expires_at"]) == now + timedelta(
                seconds=lease()
            )
            sweep_at(app, now + timedelta(seconds=1))
    assert load(app, Task, task_id).status == "ACTIVE"
    lost = detail(api, personas.client, quiet)
    assert lost["status"] == "PENDING"
    assert lost["last_error"] == f"agent lost: lease expired after {lease()}s"
    assert lost["attempts"][0]["outcome"] == "agent_lost"
    assert load(app, Agent, agent_id).status == AgentStatus.AVAILABLE


def test_an_agent_that_says_offline_loses_its_tasks_once_silent(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False):
        task_id, agent_id, agent = running(api, personas, timeout_seconds=3600)
        ack = beat(api, agent_id, agent, status="OFFLINE")
        assert ack["agent_status"] == "INACTIVE"
    assert sweep_at(app, T0 + timedelta(seconds=lease() + 1))["agents_lost"] == 1
    assert load(app, Task, task_id).status == "PENDING"
    assert load(app, Agent, agent_id).active_tasks == 0


def test_the_lost_agent_is_told_to_stop_when_it_comes_back(
    app: Flask, api: Api, personas: Personas
) -> None:
    lost_at = T0 + timedelta(seconds=lease() + 1)
    with time_machine.travel(T0, tick=False) as clock:
        task_id, agent_id, agent = running(api, personas, timeout_seconds=3600)
        sweep_at(app, lost_at)
        clock.move_to(lost_at + timedelta(seconds=1))
        ack = beat(api, agent_id, agent)
    assert ack["stop_task_ids"] == [task_id] and ack["cancelled_task_ids"] == []
    assert ack["agent_status"] == "AVAILABLE"
