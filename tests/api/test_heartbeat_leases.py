"""Heartbeats renew leases: all of the agent's tasks, or only the ones it says it runs.

An agent whose claim response was lost never learns it holds the task; if its heartbeats
renewed every task it holds, that task would sit ACTIVE until its timeout. With
`running_task_ids` only the listed tasks are renewed and the orphan comes back when its
lease runs out.
"""

from __future__ import annotations

from datetime import timedelta

import time_machine
from flask import Flask

from app.extensions import db
from app.models import Agent, AgentStatus, Task, TaskAttempt, TaskStatus
from app.services.lifecycle import sweep
from tests.api.support import T0, assert_error, load
from tests.conftest import Api, Persona, Personas


def two_claimed(api: Api, personas: Personas) -> tuple[str, Persona, list[str]]:
    agent_id, agent = api.register_agent(personas.fleet, slots=2)
    for n in range(2):
        api.submit(personas.client, input_data={"n": n}, timeout_seconds=3600)
    claimed = [t["task_id"] for t in api.claim(agent_id, agent, max_tasks=2)]
    assert len(claimed) == 2
    return agent_id, agent, claimed


def beat(api: Api, agent_id: str, agent: Persona, **fields: object) -> dict:
    response = api.post(
        f"/ains/agents/{agent_id}/heartbeat", agent, json={"status": "ACTIVE", **fields}
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_listed_tasks_keep_their_lease_and_an_unlisted_one_is_taken_back(
    app: Flask, api: Api, personas: Personas
) -> None:
    lease = app.config["HEARTBEAT_INTERVAL_SECONDS"] * app.config["HEARTBEAT_MISSES_ALLOWED"]
    with time_machine.travel(T0, tick=False) as traveller:
        agent_id, agent, (known, orphan) = two_claimed(api, personas)
        # The agent keeps heartbeating well past the first lease, naming one task only.
        for _ in range(4):
            traveller.shift(timedelta(seconds=lease / 2))
            beat(api, agent_id, agent, running_task_ids=[known])
        with app.app_context():
            counts = sweep(now=T0 + timedelta(seconds=2 * lease))
        assert counts["leases_expired"] == 1 and counts["agents_lost"] == 0

    assert load(app, Task, known).status == TaskStatus.ACTIVE
    lost = load(app, Task, orphan)
    assert lost.status == TaskStatus.PENDING and lost.retry_count == 1
    assert lost.error_message is not None and "lease expired" in lost.error_message
    assert load(app, Agent, agent_id).status == AgentStatus.AVAILABLE
    assert load(app, Agent, agent_id).active_tasks == 1
    with app.app_context():
        [attempt] = db.session.scalars(
            db.select(TaskAttempt).where(TaskAttempt.task_id == orphan)
        ).all()
        assert attempt.outcome == "agent_lost"
        db.session.remove()


def test_without_a_list_every_task_the_agent_holds_is_renewed(
    app: Flask, api: Api, personas: Personas
) -> None:
    lease = app.config["HEARTBEAT_INTERVAL_SECONDS"] * app.config["HEARTBEAT_MISSES_ALLOWED"]
    with time_machine.travel(T0, tick=False) as traveller:
        agent_id, agent, claimed = two_claimed(api, personas)
        for _ in range(4):
            traveller.shift(timedelta(seconds=lease / 2))
            beat(api, agent_id, agent)
        with app.app_context():
            counts = sweep(now=T0 + timedelta(seconds=2 * lease))
    assert counts["leases_expired"] == 0
    assert {load(app, Task, t).status for t in claimed} == {TaskStatus.ACTIVE}


def test_an_empty_list_renews_nothing(app: Flask, api: Api, personas: Personas) -> None:
    lease = app.config["HEARTBEAT_INTERVAL_SECONDS"] * app.config["HEARTBEAT_MISSES_ALLOWED"]
    with time_machine.travel(T0, tick=False) as traveller:
        agent_id, agent, claimed = two_claimed(api, personas)
        traveller.shift(timedelta(seconds=lease - 1))
        beat(api, agent_id, agent, running_task_ids=[])
        with app.app_context():
            counts = sweep(now=T0 + timedelta(seconds=lease + 1))
    assert counts["leases_expired"] == 2
    assert {load(app, Task, t).status for t in claimed} == {TaskStatus.PENDING}


def test_it_refuses_a_malformed_running_list(api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    url = f"/ains/agents/{agent_id}/heartbeat"
    for bad in ("task_1", [1], [""], ["x" * 41], ["t"] * 101):
        response = api.post(url, agent, json={"status": "ACTIVE", "running_task_ids": bad})
        assert_error(response, 422, "validation_error", "running_task_ids")
