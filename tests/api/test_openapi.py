"""/openapi.json and /docs: every route documented, and real responses match their models."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient
from pydantic import BaseModel
from werkzeug.test import TestResponse

from app.api.endpoint import OPERATIONS, Operation
from app.api.schemas import (
    AgentOut,
    CapabilityOut,
    ErrorOut,
    ExecutionOut,
    ScheduleOut,
    TaskAttemptOut,
    TaskDetail,
    TaskEventOut,
    TaskOut,
)
from app.extensions import db
from app.models import (
    Agent,
    Schedule,
    ScheduleExecution,
    Task,
    TaskAttempt,
    TaskEvent,
    WebhookEvents,
)
from app.services import scheduling
from tests.api.support import T0
from tests.api.test_api_keys_api import exercise_api_keys
from tests.api.webhook_support import receiver, send_now
from tests.conftest import Api, Persona, Personas

API_PREFIXES = ("/ains", "/aitp")
SCHEDULES = "/aitp/tasks/schedule"


class RecordingApi(Api):
    """Keeps every response, to check each against the model its route documents."""

    def __init__(self, client: FlaskClient) -> None:
        super().__init__(client)
        self.calls: list[tuple[str, str, TestResponse]] = []

    def call(self, method: str, path: str, persona: Persona | None = None, **kwargs: Any) -> Any:
        response = super().call(method, path, persona, **kwargs)
        self.calls.append((method, path, response))
        return response


def openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def operation_for(app: Flask, method: str, path: str) -> Operation:
    rule, _ = app.url_map.bind("localhost").match(path, method, return_rule=True)
    [op] = [o for o in OPERATIONS if o.rule == rule.rule and o.method == method.lower()]
    return op


@pytest.fixture
def spec(api: Api) -> dict[str, Any]:
    response = api.get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def test_it_documents_every_api_route_with_bearer_security(
    app: Flask, spec: dict[str, Any]
) -> None:
    assert spec["openapi"].startswith("3.")
    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    routes = [r for r in app.url_map.iter_rules() if r.rule.startswith(API_PREFIXES)]
    assert routes
    for rule in routes:
        path = openapi_path(rule.rule)
        assert path in spec["paths"], f"{rule.rule} is not in /openapi.json"
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            operation = spec["paths"][path].get(method.lower())
            assert operation is not None, f"{method} {path} is not documented"
            assert operation["security"] == [{"bearerAuth": []}], f"{method} {path}"
            assert "401" in operation["responses"] and "404" in operation["responses"]
            assert operation["summary"]


def test_it_documents_health_without_security(spec: dict[str, Any]) -> None:
    health = spec["paths"]["/health"]["get"]
    assert "security" not in health
    assert set(health["responses"]) >= {"200", "503"}


def test_it_resolves_every_schema_reference(spec: dict[str, Any]) -> None:
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in spec["components"]["schemas"], ref


def test_it_documents_the_request_bodies_and_their_limits(spec: dict[str, Any]) -> None:
    submit = spec["paths"]["/ains/tasks"]["post"]
    assert submit["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/TaskSubmit"
    )
    assert any(p["name"] == "Idempotency-Key" for p in submit["parameters"])
    fields = spec["components"]["schemas"]["TaskSubmit"]["properties"]
    assert fields["priority"]["minimum"] == 1 and fields["priority"]["maximum"] == 10
    assert fields["timeout_seconds"]["maximum"] == 3600
    assert spec["components"]["schemas"]["TaskSubmit"]["additionalProperties"] is False


def test_it_serves_the_docs_page(api: Api) -> None:
    response = api.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "swagger-ui" in page and "/openapi.json" in page


def exercise(api: RecordingApi, personas: Personas) -> None:
    """Call every documented operation at least once, with success and error outcomes."""
    agent_id, agent = api.register_agent(personas.fleet, slots=5)
    api.get("/ains/agents", personas.admin)
    api.get(f"/ains/agents/{agent_id}", agent)
    api.post(
        f"/ains/agents/{agent_id}/capabilities",
        agent,
        json={"name": "translate-v2", "input_schema": {"type": "object"}, "price": 1.5},
    )
    api.post(
        f"/ains/agents/{agent_id}/heartbeat",
        agent,
        json={"status": "ACTIVE", "uptime_ms": 5, "metrics": {"q": 1}},
    )
    first = api.post(
        "/ains/tasks",
        personas.client,
        headers={"Idempotency-Key": "k"},
        json={
            "task_type": "r",
            "capability_required": "report-v1",
            "input_data": {"a": [1, {"b": None}]},
        },
    )
    api.post(
        "/ains/tasks",
        personas.client,
        headers={"Idempotency-Key": "k"},
        json={
            "task_type": "r",
            "capability_required": "report-v1",
            "input_data": {"a": [1, {"b": None}]},
        },
    )
    batch = {
        "tasks": [
            {"task_type": "r", "capability_required": "report-v1"},
            {"task_type": "r", "capability_required": "report-v1", "priority": 0},
            {"task_type": "r", "capability_required": "idle-v1"},
            {"task_type": "r", "capability_required": "report-v1"},
        ]
    }
    for _ in range(2):  # 201, then the idempotent replay's 200
        api.post("/ains/tasks/batch", personas.client, headers={"Idempotency-Key": "b"}, json=batch)
    claimed = api.claim(agent_id, agent, max_tasks=3)
    done, failed = claimed[0]["task_id"], claimed[1]["task_id"]
    api.post(f"/ains/tasks/{done}/progress", agent, json={"progress": 50, "message": "half"})
    api.post(f"/ains/tasks/{done}/complete", agent, json={"result_data": {"ok": True}})
    results = [{"task_id": done, "result": {}}, {"task_id": "task_nope", "result": {}}]
    api.post(f"/ains/agents/{agent_id}/tasks/complete", agent, json={"results": results})
    api.post(
        f"/ains/tasks/{failed}/fail", agent, json={"error_message": "boom", "retryable": False}
    )
    running = claimed[2]["task_id"]
    api.post(f"/ains/tasks/{running}/cancel", personas.client, json={"reason": "stop it"})
    # The agent confirms it stopped (the task ends CANCELLED): its failure above put it on
    # probation (low trust: one task at a time), so the requeued task is routed to it only
    # once it holds nothing.
    api.post(f"/ains/tasks/{running}/fail", agent, json={"error_message": "stopped"})
    api.get("/ains/dead-letter", personas.client)
    api.post("/ains/dead-letter/requeue", personas.client, json={"task_ids": [failed]})
    claimed_again = api.claim(agent_id, agent, max_tasks=1)
    api.post(
        f"/ains/tasks/{claimed_again[0]['task_id']}/fail",
        agent,
        json={"error_message": "boom again", "retryable": False},
    )
    api.post("/ains/dead-letter/cancel", personas.client, json={"filter": {}, "reason": "gone"})
    waiting = api.get(
        "/ains/tasks", personas.client, query_string={"capability": "idle-v1"}
    ).get_json()["tasks"][0]["task_id"]
    api.patch(f"/ains/tasks/{waiting}/priority", personas.client, json={"priority": 8})
    api.post(f"/ains/tasks/{waiting}/cancel", personas.client, json={"reason": "done with it"})
    page = api.get("/ains/tasks", personas.client, query_string={"limit": 2}).get_json()
    api.get("/ains/tasks", personas.client, query_string={"cursor": page["next_cursor"]})
    for task_id in (first.get_json()["task_id"], done, failed, waiting):
        api.get(f"/ains/tasks/{task_id}", personas.client)
    api.get("/ains/queue/metrics", personas.admin)
    api.get("/health")
    exercise_schedules(api, personas)
    exercise_chains(api, personas)
    exercise_templates(api, personas)
    exercise_dependencies(api, personas)
    exercise_trust(api, personas, agent_id, agent)
    exercise_routing(api, personas)
    exercise_webhooks(api, personas)
    exercise_api_keys(api, personas)
    api.get("/ains/audit-events", personas.admin, query_string={"actor": "client:*"})
    api.get("/ains/audit-events", personas.client)  # admins only
    # Errors of every documented kind.
    api.get("/ains/tasks")
    api.post("/ains/tasks", personas.fleet, json={})
    api.get("/ains/tasks/task_nope", personas.client)
    api.post(f"/ains/tasks/{done}/complete", agent, json={})
    api.post("/ains/tasks", personas.client, json={"priority": 0})
    api.post("/ains/tasks", personas.client, data=b"{", content_type="application/json")
    api.post(
        "/ains/tasks", personas.client, data=b"x" * 1024 * 1024, content_type="application/json"
    )


def exercise_schedules(api: RecordingApi, personas: Personas) -> None:
    """Every schedule operation, with its success and error outcomes."""
    body = {
        "task_type": "r",
        "capability_required": "report-v1",
        "cron_expression": "*/5 * * * *",
        "timezone": "Europe/London",
        "input_data": {"a": [1, None]},
    }
    schedule_id = api.post(SCHEDULES, personas.client, json=body).get_json()["schedule_id"]
    once = api.post(
        SCHEDULES,
        personas.admin,
        json={
            "task_type": "r",
            "capability_required": "report-v1",
            "client_id": "client-1",
            "run_at": "2099-01-01T00:00:00+01:00",
        },
    ).get_json()["schedule_id"]
    api.get(SCHEDULES, personas.client, query_string={"status": "ACTIVE", "limit": 1})
    api.get(f"{SCHEDULES}/{once}", personas.client)
    api.call("PUT", f"{SCHEDULES}/{schedule_id}", personas.client, json={"interval_seconds": 60})
    api.post(f"{SCHEDULES}/{schedule_id}/pause", personas.client)
    api.post(f"{SCHEDULES}/{schedule_id}/resume", personas.client)
    api.post(f"{SCHEDULES}/{schedule_id}/run-now", personas.client)
    api.get(f"{SCHEDULES}/{schedule_id}/executions", personas.client, query_string={"limit": 5})
    api.post(
        f"{SCHEDULES}/validate",
        personas.client,
        json={"cron_expression": "0 9 * * 1-5", "timezone": "America/New_York", "count": 3},
    )
    api.call("DELETE", f"{SCHEDULES}/{once}", personas.client)
    # Errors.
    api.post(SCHEDULES, personas.client, json={"task_type": "r", "capability_required": "x"})
    api.post(SCHEDULES, personas.fleet, json=body)
    api.post(SCHEDULES, personas.client, json={**body, "client_id": "client-2"})
    api.get(SCHEDULES, personas.client, query_string={"status": "DELETED"})
    api.get(f"{SCHEDULES}/{schedule_id}", personas.other_client)
    api.call("PUT", f"{SCHEDULES}/{schedule_id}", personas.client, json={"task_type": None})
    api.call("DELETE", f"{SCHEDULES}/{once}", personas.client)
    api.post(f"{SCHEDULES}/{once}/pause", personas.client)
    api.post(f"{SCHEDULES}/{once}/run-now", personas.client)
    api.get(f"{SCHEDULES}/{once}/executions", personas.client, query_string={"offset": -1})
    api.post(f"{SCHEDULES}/validate", personas.client, json={"cron_expression": "* *", "count": 51})
    api.post(f"{SCHEDULES}/validate", personas.client, data=b"[", content_type="application/json")


def test_it_answers_every_operation_with_the_documented_model(
    app: Flask, client: FlaskClient, personas: Personas, spec: dict[str, Any]
) -> None:
    api = RecordingApi(client)
    exercise(api, personas)
    seen: set[tuple[str, str, int]] = set()
    for method, path, response in api.calls:
        op = operation_for(app, method, path)
        body = response.get_json()
        documented = spec["paths"][openapi_path(op.rule)][op.method]["responses"]
        assert str(response.status_code) in documented, (method, path, response.status_code)
        if response.status_code >= 400:
            ErrorOut.model_validate_json(response.get_data())
            continue
        model = op.responses[response.status_code]
        assert model is not None
        model.model_validate_json(response.get_data())
        assert body is not None
        seen.add((op.rule, op.method, response.status_code))
    expected = {
        (op.rule, op.method, status)
        for op in OPERATIONS
        for status in op.responses
        if status < 300 and (op.rule.startswith(API_PREFIXES) or op.rule == "/health")
    }
    assert expected - seen == set(), "operations never exercised"


def validate_json(model: type[BaseModel], data: dict[str, Any]) -> None:
    """Through JSON, as a client reads it: extra keys or wrong types fail."""
    model.model_validate_json(json.dumps(data))


def test_it_serialises_real_rows_in_every_state_as_the_models_say(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet, slots=5)
    api.post(
        f"/ains/agents/{agent_id}/capabilities",
        agent,
        json={
            "name": "translate-v2",
            "version": "2",
            "description": "d",
            "input_schema": {"type": "object"},
            "output_schema": {},
            "pricing_model": "flat",
            "price": 0,
        },
    )
    ids = [api.submit(personas.client, input_data={"i": i})["task_id"] for i in range(5)]
    api.submit(personas.client, capability_required="idle-v1")
    claimed = [t["task_id"] for t in api.claim(agent_id, agent, max_tasks=3)]
    api.post(f"/ains/tasks/{claimed[0]}/complete", agent, json={"result_data": {"n": 1.5}})
    api.post(
        f"/ains/tasks/{claimed[1]}/fail", agent, json={"error_message": "e", "retryable": False}
    )
    api.post(f"/ains/tasks/{ids[3]}/cancel", personas.client, json={"reason": "r"})
    # After the claim: a DEGRADED agent is BUSY, and a BUSY agent is routed no new tasks.
    api.post(f"/ains/agents/{agent_id}/heartbeat", agent, json={"status": "DEGRADED"})
    with app.app_context():
        tasks = db.session.scalars(db.select(Task)).all()
        assert {t.status for t in tasks} == {
            "PENDING",
            "ASSIGNED",
            "ACTIVE",
            "COMPLETED",
            "FAILED",
            "CANCELLED",
        }
        for task in tasks:
            events = list(
                db.session.scalars(db.select(TaskEvent).where(TaskEvent.task_id == task.id))
            )
            validate_json(TaskOut, task.to_dict())
            attempts = list(
                db.session.scalars(db.select(TaskAttempt).where(TaskAttempt.task_id == task.id))
            )
            validate_json(TaskDetail, task.to_dict(events=events, attempts=attempts))
            for attempt in attempts:
                validate_json(TaskAttemptOut, attempt.to_dict())
            for event in events:
                validate_json(TaskEventOut, event.to_dict())
        agent_row = db.session.get(Agent, agent_id)
        assert agent_row is not None
        validate_json(AgentOut, agent_row.to_dict())
        for cap in agent_row.capabilities:
            validate_json(CapabilityOut, cap.to_dict())
        db.session.remove()


def make_schedule_rows(app: Flask, api: Api, personas: Personas) -> None:
    """Schedules in every status, and executions in every status, through the API and clock."""
    agent_id, agent = api.register_agent(personas.fleet, capabilities=("sched-v1",), slots=5)
    fields = {"task_type": "s", "capability_required": "sched-v1", "max_retries": 0}
    with time_machine.travel(T0, tick=False):
        api.post(
            SCHEDULES,
            personas.client,
            json={**fields, "interval_seconds": 60, "overlap_policy": "skip"},
        )
        paused = api.post(
            SCHEDULES, personas.client, json={**fields, "cron_expression": "0 9 * * 1-5"}
        ).get_json()["schedule_id"]
        api.post(f"{SCHEDULES}/{paused}/pause", personas.client)
        for policy in ("fire_once", "skip"):  # fires late: completed, or failed
            api.post(
                SCHEDULES,
                personas.client,
                json={**fields, "run_at": "2026-03-02T10:00:00Z", "misfire_policy": policy},
            )
        deleted = api.post(SCHEDULES, personas.client, json={**fields, "interval_seconds": 5})
        api.call("DELETE", f"{SCHEDULES}/{deleted.get_json()['schedule_id']}", personas.client)

    def fire(minutes: int) -> None:
        with app.app_context():
            scheduling.fire_due(now=T0 + timedelta(minutes=minutes))
            db.session.remove()

    fire(1)  # a task
    fire(2)  # skipped: that task is unfinished
    [done] = api.claim(agent_id, agent)
    api.post(f"/ains/tasks/{done['task_id']}/complete", agent, json={"result_data": {"n": 1}})
    fire(3)  # a task that fails
    [failed] = api.claim(agent_id, agent)
    api.post(
        f"/ains/tasks/{failed['task_id']}/fail",
        agent,
        json={"error_message": "e", "retryable": False},
    )
    fire(4)  # a task left pending
    fire(90)  # the one-time schedules, an hour late
    with app.app_context():
        statuses = {s.status for s in db.session.scalars(db.select(Schedule))}
        assert statuses == {"ACTIVE", "PAUSED", "COMPLETED", "FAILED", "DELETED"}
        db.session.remove()


def test_it_serialises_schedules_and_executions_in_every_state_as_the_models_say(
    app: Flask, api: Api, personas: Personas
) -> None:
    make_schedule_rows(app, api, personas)
    with app.app_context():
        for schedule in db.session.scalars(db.select(Schedule)):
            validate_json(ScheduleOut, scheduling.schedule_dict(schedule))
        seen = set()
        for execution in db.session.scalars(db.select(ScheduleExecution)):
            task = db.session.get(Task, execution.task_id) if execution.task_id else None
            data = execution.to_dict(task)
            validate_json(ExecutionOut, data)
            seen.add(data["status"])
        assert seen == {"PENDING", "COMPLETED", "FAILED", "SKIPPED"}
        db.session.remove()


def exercise_chains(api: RecordingApi, personas: Personas) -> None:
    """Every chain operation, with its success and error outcomes."""
    chains = "/ains/task-chains"
    body = {
        "name": "etl",
        "steps": [
            {"task_type": "e", "capability_required": "idle-v1", "input_data": {"a": [1]}},
            {"task_type": "l", "capability_required": "idle-v1", "priority": 7},
        ],
    }
    chain_id = api.post(chains, personas.client, json=body).get_json()["chain_id"]
    api.get(chains, personas.client, query_string={"status": "RUNNING", "limit": 1})
    api.get(f"{chains}/{chain_id}", personas.client)
    api.post(f"{chains}/{chain_id}/cancel", personas.client, json={"reason": "enough"})
    # Errors.
    api.post(chains, personas.client, json={"name": "x", "steps": []})
    api.post(chains, personas.fleet, json=body)
    api.get(f"{chains}/{chain_id}", personas.other_client)
    api.post(f"{chains}/{chain_id}/cancel", personas.client, json={})
    api.get(chains, personas.client, query_string={"offset": -1})


def exercise_templates(api: RecordingApi, personas: Personas) -> None:
    """Every template operation, with its success and error outcomes."""
    templates = "/ains/task-templates"
    body = {
        "name": "digest",
        "task_type": "d",
        "capability_required": "idle-v1",
        "default_input_data": {"a": {"b": [1, None]}},
        "input_schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
    }
    template_id = api.post(templates, personas.client, json=body).get_json()["template_id"]
    api.get(templates, personas.client, query_string={"name": "dig", "limit": 1})
    api.get(f"{templates}/{template_id}", personas.client)
    api.patch(f"{templates}/{template_id}", personas.client, json={"default_priority": 7})
    from_template = {"template_id": template_id, "input_data": {"n": 1}}
    for _ in range(2):  # 201, then the idempotent replay's 200
        api.post(
            "/ains/tasks/from-template",
            personas.client,
            headers={"Idempotency-Key": "t"},
            json=from_template,
        )
    api.post(
        SCHEDULES,
        personas.client,
        json={"template_id": template_id, "interval_seconds": 60, "input_data": {"n": 2}},
    )
    # Errors.
    api.post(templates, personas.client, json=body)
    api.post(templates, personas.fleet, json=body)
    api.post(templates, personas.client, json={**body, "name": "x", "input_schema": {"type": 1}})
    api.get(f"{templates}/{template_id}", personas.other_client)
    api.patch(f"{templates}/{template_id}", personas.client, json={"name": None})
    api.post(
        "/ains/tasks/from-template",
        personas.client,
        json={**from_template, "input_data": {"n": "x"}},
    )
    api.get(templates, personas.client, query_string={"offset": -1})
    api.call("DELETE", f"{templates}/{template_id}", personas.client)
    api.call("DELETE", f"{templates}/{template_id}", personas.client)
    api.post("/ains/tasks/from-template", personas.client, json=from_template)


def exercise_dependencies(api: RecordingApi, personas: Personas) -> None:
    """Dependencies: blocked submits, @index batches, the graph reads, and their errors."""
    first = api.submit(personas.client, capability_required="idle-v1")["task_id"]
    blocked = api.submit(
        personas.client,
        capability_required="idle-v1",
        depends_on=[first],
        on_dependency_failure="run",
        input_data={"x": {"$from": first, "path": "a.0"}},
    )["task_id"]
    api.post(
        "/ains/tasks/batch",
        personas.client,
        json={
            "tasks": [
                {"task_type": "r", "capability_required": "idle-v1", "depends_on": [blocked]},
                {"task_type": "r", "capability_required": "idle-v1", "depends_on": ["@0"]},
            ]
        },
    )
    api.get(f"/ains/tasks/{blocked}", personas.client)
    api.get(f"/ains/tasks/{blocked}/dependencies", personas.client)
    api.get(f"/ains/tasks/{first}/dependents", personas.client, query_string={"limit": 1})
    # Errors.
    api.post(
        "/ains/tasks",
        personas.client,
        json={"task_type": "r", "capability_required": "idle-v1", "depends_on": ["task_nope"]},
    )
    api.get(f"/ains/tasks/{blocked}/dependencies", personas.other_client)
    api.get(f"/ains/tasks/{first}/dependents", personas.client, query_string={"limit": 0})


def exercise_trust(api: RecordingApi, personas: Personas, agent_id: str, agent: Persona) -> None:
    """Trust, leaderboard and adjustment, with their success and error outcomes."""
    api.post(
        f"/ains/agents/{agent_id}/trust/adjust",
        personas.admin,
        json={"delta": -0.1, "reason": "flaky"},
    )
    api.get(f"/ains/agents/{agent_id}/trust", agent, query_string={"limit": 5})
    api.get("/ains/agents/leaderboard", personas.client, query_string={"limit": 10})
    # Errors.
    api.post(f"/ains/agents/{agent_id}/trust/adjust", agent, json={"delta": 0.1, "reason": "me"})
    api.post(
        f"/ains/agents/{agent_id}/trust/adjust", personas.admin, json={"delta": 0, "reason": "x"}
    )
    api.post(
        "/ains/agents/agent_nope/trust/adjust", personas.admin, json={"delta": 1, "reason": "x"}
    )
    api.get(f"/ains/agents/{agent_id}/trust", personas.other_fleet)
    api.get("/ains/agents/leaderboard", personas.client, query_string={"limit": 501})


def exercise_routing(api: RecordingApi, personas: Personas) -> None:
    """Strategies, the routing dry run and per-capability defaults, with their errors."""
    routing = "/ains/routing"
    api.get(f"{routing}/strategies", personas.client)
    api.post(f"{routing}/test", personas.client, json={"capability_required": "report-v1"})
    api.post(
        f"{routing}/test",
        personas.admin,
        json={"capability_required": "idle-v1", "strategy": "least_loaded"},
    )
    api.call(
        "PUT",
        f"{routing}/capabilities/report-v1",
        personas.admin,
        json={"default_strategy": "least_loaded"},
    )
    api.get(f"{routing}/capabilities", personas.admin)
    api.call(
        "PUT", f"{routing}/capabilities/report-v1", personas.admin, json={"default_strategy": None}
    )
    # Errors.
    api.get(f"{routing}/strategies")
    api.post(f"{routing}/test", personas.fleet, json={"capability_required": "report-v1"})
    api.post(
        f"{routing}/test",
        personas.client,
        json={"capability_required": "report-v1", "strategy": "dice"},
    )
    api.post(f"{routing}/test", personas.client, data=b"{", content_type="application/json")
    api.call(
        "PUT",
        f"{routing}/capabilities/report-v1",
        personas.client,
        json={"default_strategy": "least_loaded"},
    )
    api.call(
        "PUT",
        f"{routing}/capabilities/report-v1",
        personas.admin,
        json={"default_strategy": "dice"},
    )
    api.call("PUT", f"{routing}/capabilities/report-v1", personas.admin, json={})


def exercise_webhooks(api: RecordingApi, personas: Personas) -> None:
    """Every webhook operation, with its success and error outcomes, and real attempts."""
    hooks, deliveries = "/ains/webhooks", "/ains/webhook-deliveries"
    agent_id, agent = api.register_agent(personas.fleet, name="hooked")
    with receiver() as ok:
        mine = api.post(
            f"/ains/agents/{agent_id}/webhooks",
            agent,
            json={"url": ok.url, "events": ["task.completed"], "secret": "s3cret-value-1234"},
        ).get_json()["webhook_id"]
        client_hook = api.post(
            hooks, personas.client, json={"url": ok.url, "events": ["task.created"]}
        ).get_json()["webhook_id"]
        api.post(hooks, personas.admin, json={"url": ok.url, "description": "everything"})
        api.submit(personas.client, capability_required="idle-v1")
        page = api.get(f"{hooks}/{client_hook}/deliveries", personas.client).get_json()
        first = page["deliveries"][0]["delivery_id"]
        send_now(api.client.application, first)  # delivered: an attempt with its response
        ping = api.post(f"{hooks}/{mine}/test", agent).get_json()["delivery_id"]
    send_now(api.client.application, ping)  # the receiver is gone: an attempt with no answer
    api.get(f"/ains/agents/{agent_id}/webhooks", agent)
    api.get(hooks, personas.admin)
    api.get(f"{hooks}/{mine}", agent)
    api.patch(f"{hooks}/{mine}", agent, json={"events": ["task.failed"], "description": None})
    api.post(f"{hooks}/{mine}/rotate-secret", agent)
    api.get(f"{hooks}/{client_hook}/deliveries", personas.client, query_string={"limit": 1})
    api.get(f"{hooks}/{mine}/deliveries", agent, query_string={"event": "webhook.ping"})
    api.get(f"{deliveries}/{first}", personas.client)
    api.get(f"{deliveries}/{ping}", agent)
    api.post(f"{deliveries}/{first}/redeliver", personas.client)
    # Errors.
    api.post(hooks, agent, json={"url": "http://127.0.0.1:9/x"})
    api.post(hooks, personas.client, json={"url": "ftp://example.com/"})
    api.post(f"/ains/agents/{agent_id}/webhooks", personas.other_fleet, json={"url": "x"})
    api.get(f"/ains/agents/{agent_id}/webhooks", personas.client)
    api.get(f"{hooks}/{mine}", personas.client)
    api.patch(f"{hooks}/{mine}", agent, json={"url": None})
    api.post(f"{hooks}/{mine}/rotate-secret", agent, json={"secret": "short"})
    api.get(f"{hooks}/{client_hook}/deliveries", personas.client, query_string={"cursor": "x"})
    api.get(f"{deliveries}/{first}", personas.other_client)
    api.patch(f"{hooks}/{client_hook}", personas.client, json={"active": False})
    api.post(f"{deliveries}/{first}/redeliver", personas.client)
    api.post(f"{hooks}/{client_hook}/test", personas.client)
    api.call("DELETE", f"{hooks}/{client_hook}", personas.client)
    api.call("DELETE", f"{hooks}/{client_hook}", personas.client)


def test_it_documents_exactly_the_webhook_events_there_are(spec: dict[str, Any]) -> None:
    events = spec["components"]["schemas"]["AgentWebhookCreate"]["properties"]["events"]
    [listed] = [option for option in events["anyOf"] if option.get("type") == "array"]
    assert tuple(listed["items"]["enum"]) == WebhookEvents.ALL


def test_every_rate_limited_operation_documents_429(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            documented = "429" in operation["responses"]
            assert documented == (path not in ("/health", "/health/ready")), f"{method} {path}"
