"""Helpers for the lifecycle tests: run a task, report on it, sweep, and force row states."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Flask
from werkzeug.test import TestResponse

from app.extensions import db
from app.models import Task
from app.services.lifecycle import sweep
from app.services.settings import settings
from tests.conftest import Api, Persona, Personas


def running(
    api: Api, personas: Personas, *, slots: int = 1, name: str = "agent", **fields: Any
) -> tuple[str, str, Persona]:
    """A task ACTIVE for a fresh agent: (task_id, agent_id, agent key)."""
    agent_id, agent = api.register_agent(personas.fleet, slots=slots, name=name)
    task_id = api.submit(personas.client, **fields)["task_id"]
    assert [t["task_id"] for t in api.claim(agent_id, agent)] == [task_id]
    return task_id, agent_id, agent


def report(api: Api, agent: Persona, task_id: str, kind: str, **body: Any) -> TestResponse:
    """POST /ains/tasks/{id}/{kind} (complete, fail or progress)."""
    return api.post(f"/ains/tasks/{task_id}/{kind}", agent, json=body)


def fail(api: Api, agent: Persona, task_id: str, **body: Any) -> dict[str, Any]:
    """A fail report that must be accepted; the task as the response shows it."""
    response = report(api, agent, task_id, "fail", **{"error_message": "boom", **body})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def detail(api: Api, persona: Persona, task_id: str) -> dict[str, Any]:
    """GET /ains/tasks/{id}: the task with its events and attempts."""
    response = api.get(f"/ains/tasks/{task_id}", persona)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def beat(api: Api, agent_id: str, agent: Persona, **fields: Any) -> dict[str, Any]:
    """A heartbeat that must be accepted; its acknowledgement."""
    response = api.post(
        f"/ains/agents/{agent_id}/heartbeat", agent, json={"status": "ACTIVE", **fields}
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def claim_body(api: Api, agent_id: str, agent: Persona, **fields: Any) -> dict[str, Any]:
    """The whole claim response (tasks and stop notices)."""
    response = api.post(f"/ains/agents/{agent_id}/tasks/claim", agent, json=fields)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def sweep_at(app: Flask, now: datetime) -> dict[str, int]:
    """One lifecycle sweep, as the clock runs it, at ``now``."""
    with app.app_context():
        counts = sweep(now=now)
        db.session.remove()
    return counts


def force_state(app: Flask, task_id: str, **values: Any) -> None:
    """Put a task row into a state the API cannot produce yet (ASSIGNED, BLOCKED)."""
    with app.app_context():
        task = db.session.get(Task, task_id)
        assert task is not None
        for name, value in values.items():
            setattr(task, name, value)
        db.session.commit()
        db.session.remove()


def lease() -> int:
    """Seconds a claim's lease lasts (heartbeat interval x misses allowed)."""
    return settings.lease_seconds
