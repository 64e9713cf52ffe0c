"""What a submit costs: statements per call, and no routing lock while no agent is free."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import func, update

from app.extensions import db
from app.models import Agent, CapabilityRouting, Task
from tests.api.support import T0, set_active_tasks, sql_sent
from tests.conftest import IS_POSTGRES, Api, Personas

VALID: dict[str, Any] = {"task_type": "report", "capability_required": "report-v1"}


def test_a_batch_does_not_read_its_tasks_back(app: Flask, api: Api, personas: Personas) -> None:
    items = [{**VALID, "priority": 1 + i % 9, "input_data": {"n": i}} for i in range(100)]
    with sql_sent(app) as sent:
        response = api.post("/ains/tasks/batch", personas.client, json={"tasks": items})
    seen = [sql for sql, _ in sent]
    assert response.status_code == 201 and not response.get_json()["failed"]
    # No task is read back after the commit.
    assert not [s for s in seen if s.lstrip().startswith("SELECT tasks.")], seen
    if IS_POSTGRES:
        # Key, tasks, events (one statement each), routing check, webhooks, audit.
        assert len(seen) <= 8, seen
    body = response.get_json()["submitted"]
    with app.app_context():
        stored = {t.id: t for t in db.session.scalars(db.select(Task))}
        assert len(stored) == 100
        for item in body:
            task = stored[item["task_id"]]
            assert item["status"] == task.status == "PENDING"
            assert task.input_data == {"n": item["index"]}
            assert item["client_id"] == task.client_id


def test_a_submit_answers_what_it_stored(app: Flask, api: Api, personas: Personas) -> None:
    agent_id, _ = api.register_agent(personas.fleet)
    created = api.submit(personas.client, priority=3)
    assert created["status"] == "ASSIGNED" and created["assigned_agent_id"] == agent_id
    shown = api.get(f"/ains/tasks/{created['task_id']}", personas.client).get_json()
    assert {k: shown[k] for k in created} == created


def test_no_routing_lock_while_every_agent_is_busy(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, _ = api.register_agent(personas.fleet, slots=1)
    set_active_tasks(app, agent_id, 1)
    with sql_sent(app) as sent:
        created = api.submit(personas.client)
    seen = [sql for sql, _ in sent]
    assert created["status"] == "PENDING"
    assert not [s for s in seen if "capability_routing" in s], seen
    with app.app_context():
        assert db.session.scalar(db.select(func.count()).select_from(CapabilityRouting)) == 0
        # The slot frees: the next submit routes the waiting task first (queue order).
        db.session.execute(update(Agent).where(Agent.id == agent_id).values(active_tasks=0))
        db.session.commit()
    second = api.submit(personas.client)
    assert second["status"] == "PENDING"
    with app.app_context():
        first = db.session.get(Task, created["task_id"])
        assert first.status == "ASSIGNED" and first.assigned_agent_id == agent_id


def test_a_task_routed_by_its_own_submit_is_written_once(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, _ = api.register_agent(personas.fleet)
    with sql_sent(app) as sent:
        created = api.submit(personas.client)
    seen = [sql for sql, _ in sent]
    assert created["status"] == "ASSIGNED" and created["assigned_agent_id"] == agent_id
    # Routed before its INSERT: the row goes in ASSIGNED and is never updated.
    assert len([s for s in seen if s.startswith("INSERT INTO tasks")]) == 1, seen
    assert not [s for s in seen if s.startswith("UPDATE tasks")], seen
    # No webhook exists: one cheap look, no query for whole webhook rows.
    assert not [s for s in seen if s.startswith("SELECT webhooks.id, webhooks.")], seen
    shown = api.get(f"/ains/tasks/{created['task_id']}", personas.client).get_json()
    assert {k: shown[k] for k in created} == created
    moves = [(e["from_status"], e["to_status"]) for e in shown["events"]]
    assert moves == [(None, "PENDING"), ("PENDING", "ASSIGNED")]
    assert shown["events"][1]["data"]["routing"]["winner"] == agent_id
    with app.app_context():
        stored = db.session.get(Task, created["task_id"])
        assert stored.status == "ASSIGNED" and stored.assigned_agent_id == agent_id


def test_a_batch_routed_before_its_insert_keeps_queue_order_with_older_tasks(
    app: Flask, api: Api, personas: Personas
) -> None:
    first, _ = api.register_agent(personas.fleet, slots=1, name="first")
    second, _ = api.register_agent(personas.fleet, slots=1, name="second")
    set_active_tasks(app, first, 1)
    set_active_tasks(app, second, 1)
    older = api.submit(personas.client, priority=7)  # waits: both agents were full
    assert older["status"] == "PENDING"
    set_active_tasks(app, first, 0)
    set_active_tasks(app, second, 0)
    items = [{**VALID, "priority": p} for p in (1, 9, 5)]
    with sql_sent(app) as sent:
        response = api.post("/ains/tasks/batch", personas.client, json={"tasks": items})
    assert response.status_code == 201, response.get_json()
    status = {item["index"]: item["status"] for item in response.get_json()["submitted"]}
    # Two free slots, queue order across the database and the batch: priority 9 (new),
    # then 7 (the older task, read from the database); 5 and 1 wait.
    assert status == {0: "PENDING", 1: "ASSIGNED", 2: "PENDING"}
    shown = api.get(f"/ains/tasks/{older['task_id']}", personas.client).get_json()
    assert shown["status"] == "ASSIGNED"
    # Only the older task's row is updated; the batch's rows are inserted as routed.
    updates = [params for sql, params in sent if sql.startswith("UPDATE tasks")]
    rows = sum(len(p) if isinstance(p, list) else 1 for p in updates)  # a list: executemany
    assert rows == 1, updates
    with app.app_context():
        holders = set(
            db.session.scalars(db.select(Task.assigned_agent_id).where(Task.status == "ASSIGNED"))
        )
        assert holders == {first, second}


def test_a_batch_over_two_capabilities_never_overfills_an_agent_with_both(
    app: Flask, api: Api, personas: Personas
) -> None:
    both, _ = api.register_agent(personas.fleet, capabilities=("a-v1", "b-v1"), slots=1)
    only_b, _ = api.register_agent(personas.fleet, capabilities=("b-v1",), slots=1, name="b")
    with app.app_context():
        # Round robin's next turn in b-v1 is the agent with both: routing b-v1 without
        # counting the a-v1 task just given to it would overfill it.
        db.session.add(
            CapabilityRouting(capability="b-v1", round_robin_after=both[:-1], updated_at=T0)
        )
        db.session.commit()
    items = [{**VALID, "capability_required": c} for c in ("a-v1", "b-v1")]
    with sql_sent(app) as sent:
        response = api.post("/ains/tasks/batch", personas.client, json={"tasks": items})
    assert response.status_code == 201, response.get_json()
    submitted = response.get_json()["submitted"]
    assert [item["status"] for item in submitted] == ["ASSIGNED", "ASSIGNED"]
    # Routed before their INSERT, across both capabilities: no row written twice.
    assert not [sql for sql, _ in sent if sql.startswith("UPDATE tasks")], sent
    with app.app_context():
        holders = dict(
            db.session.execute(
                db.select(Task.capability_required, Task.assigned_agent_id).where(
                    Task.status == "ASSIGNED"
                )
            ).all()
        )
    # One slot each: the agent with both capabilities takes one task, the other agent the
    # other; never two for the agent with one slot.
    assert holders == {"a-v1": both, "b-v1": only_b}
