"""Every kind of bad request: the SPEC error shape, the right status, and no write at all."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask

from app.extensions import db
from app.lib.clock import utcnow
from app.services.auth import create_api_key
from tests.api.support import assert_error, unchanged
from tests.conftest import Api, Persona, Personas

VALID = {"task_type": "report", "capability_required": "report-v1"}
LONG = "x" * 201


@dataclass
class World:
    """Rows every case can point at: agents of two fleets and tasks in each state."""

    agent_id: str
    agent: Persona
    other_agent_id: str
    other_agent: Persona
    pending: str
    active: str
    completed: str
    foreign: str  # client-2's task
    personas: Personas

    def persona(self, name: str | None) -> Persona | None:
        if name is None:
            return None
        if name in {"agent", "other_agent"}:
            return getattr(self, name)
        return getattr(self.personas, name)

    def path(self, template: str) -> str:
        return template.format(**{k: v for k, v in vars(self).items() if isinstance(v, str)})


@pytest.fixture
def world(api: Api, personas: Personas) -> World:
    agent_id, agent = api.register_agent(personas.fleet, slots=5)
    completed = api.submit(personas.client)["task_id"]
    assert [t["task_id"] for t in api.claim(agent_id, agent)] == [completed]
    assert api.post(f"/ains/tasks/{completed}/complete", agent, json={}).status_code == 200
    active = api.submit(personas.client)["task_id"]
    assert [t["task_id"] for t in api.claim(agent_id, agent)] == [active]
    # Registered once the tasks are held: with the same capability it would otherwise be
    # routed its turn of them.
    other_agent_id, other_agent = api.register_agent(personas.other_fleet)
    pending = api.submit(personas.client, capability_required="idle-v1")["task_id"]
    foreign = api.submit(personas.other_client, capability_required="idle-v1")["task_id"]
    return World(
        agent_id, agent, other_agent_id, other_agent, pending, active, completed, foreign, personas
    )


@dataclass
class Case:
    method: str
    path: str
    persona: str | None
    status: int
    json: Any = None
    raw: bytes | None = None
    field: str | None = None
    code: str | None = None
    headers: dict[str, str] | None = None
    query: dict[str, str] | None = None


def case(
    id: str, method: str, path: str, persona: str | None, status: int, *args: Any, **kwargs: Any
) -> Any:
    return pytest.param(Case(method, path, persona, status, *args, **kwargs), id=id)


def post(id: str, path: str, persona: str, status: int, body: Any = None, **kwargs: Any) -> Any:
    return case(id, "POST", path, persona, status, body, **kwargs)


def get(id: str, path: str, persona: str, status: int, **kwargs: Any) -> Any:
    return case(id, "GET", path, persona, status, **kwargs)


def submit(id: str, status: int, body: Any = None, persona: str = "client", **kwargs: Any) -> Any:
    return post(id, TASKS, persona, status, body, **kwargs)


def bad_field(id: str, field: str, value: Any) -> Any:
    """A valid submit with one field wrong: 422 naming it."""
    return submit(id, 422, {**VALID, field: value}, field=field)


def raw_submit(id: str, status: int, raw: bytes, **kwargs: Any) -> Any:
    return submit(id, status, raw=raw, **kwargs)


def nested(depth: int) -> bytes:
    inner = '{"a":' * depth + "1" + "}" * depth
    return (
        '{"task_type":"r","capability_required":"report-v1","input_data":' + inner + "}"
    ).encode()


TASKS = "/ains/tasks"
BATCH = "/ains/tasks/batch"
AGENTS = "/ains/agents"
HEARTBEAT = "/ains/agents/{agent_id}/heartbeat"
CAPS = "/ains/agents/{agent_id}/capabilities"
CLAIM = "/ains/agents/{agent_id}/tasks/claim"
AGENT = {"display_name": "a", "public_key": "pk-new"}
ACTIVE = "/ains/tasks/{active}"
DONE = "/ains/tasks/{completed}"
PENDING = "/ains/tasks/{pending}"
FOREIGN = "/ains/tasks/{foreign}"
BAD_REQUEST = {"code": "bad_request"}
NAN = b'{"task_type":"r","capability_required":"r","input_data":{"x":NaN}}'
INFINITY = b'{"task_type":"r","capability_required":"r","input_data":{"x":-Infinity}}'
HUGE_FLOAT = b'{"task_type":"r","capability_required":"r","input_data":{"x":1e999}}'
SURROGATE_NAME = b'{"task_type":"\\ud800","capability_required":"r"}'
SURROGATE_INPUT = b'{"task_type":"r","capability_required":"r","input_data":{"k":"\\udc00"}}'
MEGABYTE = b"x" * 1024 * 1024

SUBMIT_CASES = [
    bad_field("priority-as-string", "priority", "5"),
    bad_field("priority-as-float", "priority", 5.5),
    bad_field("priority-as-bool", "priority", True),
    bad_field("priority-null", "priority", None),
    bad_field("priority-0", "priority", 0),
    bad_field("priority-11", "priority", 11),
    bad_field("priority-huge", "priority", 10**30),
    bad_field("input-data-list", "input_data", [1]),
    bad_field("input-data-string", "input_data", "{}"),
    bad_field("unknown-field", "colour", "red"),
    bad_field("timeout-0", "timeout_seconds", 0),
    bad_field("timeout-3601", "timeout_seconds", 3601),
    bad_field("max-retries-negative", "max_retries", -1),
    bad_field("max-retries-21", "max_retries", 21),
    bad_field("retry-policy", "retry_policy", "sometimes"),
    bad_field("routing-strategy", "routing_strategy", "dice"),
    bad_field("capability-pattern", "capability_required", "report v1"),
    bad_field("task-type-empty", "task_type", ""),
    bad_field("task-type-too-long", "task_type", LONG),
    submit("missing-task-type", 422, {"capability_required": "r"}, field="task_type"),
    submit("missing-capability", 422, {"task_type": "r"}, field="capability_required"),
    submit("empty-object", 422, {}, field="task_type"),
    raw_submit("empty-body", 422, b"", field="task_type"),
    submit("for-another-client", 403, {**VALID, "client_id": "client-2"}, code="forbidden"),
    submit(
        "idempotency-key-with-nul",
        422,
        VALID,
        field="Idempotency-Key",
        headers={"Idempotency-Key": "k\u0000"},
    ),
    submit("admin-without-client-id", 422, VALID, persona="admin", field="client_id"),
    submit(
        "idempotency-key-too-long",
        422,
        VALID,
        field="Idempotency-Key",
        headers={"Idempotency-Key": "k" * 201},
    ),
    raw_submit("not-json", 400, b"{oops", **BAD_REQUEST),
    raw_submit("not-utf8", 400, b'{"task_type": "\xff"}', **BAD_REQUEST),
    raw_submit("json-array", 400, b"[]", **BAD_REQUEST),
    submit("json-array-of-tasks", 400, [VALID], **BAD_REQUEST),
    raw_submit("json-string", 400, b'"task"', **BAD_REQUEST),
    raw_submit("json-null", 400, b"null", **BAD_REQUEST),
    raw_submit("one-megabyte", 413, MEGABYTE, code="payload_too_large"),
    submit(
        "one-megabyte-of-json",
        413,
        {**VALID, "input_data": {"blob": "x" * 1024 * 1024}},
        code="payload_too_large",
    ),
    raw_submit("nested-5000-deep", 400, nested(5000), **BAD_REQUEST),
    # NaN and Infinity are not JSON (RFC 8259), and PostgreSQL's JSONB refuses them.
    raw_submit("nan-in-input-data", 400, NAN, **BAD_REQUEST),
    raw_submit("infinity-in-input-data", 400, INFINITY, **BAD_REQUEST),
    raw_submit("float-overflow-in-input-data", 400, HUGE_FLOAT, **BAD_REQUEST),
    # PostgreSQL cannot store NUL in text or JSONB, so it is refused on every database alike.
    bad_field("nul-in-task-type", "task_type", "a\u0000b"),
    bad_field("nul-in-input-value", "input_data", {"k": "a\u0000"}),
    bad_field("nul-in-input-key", "input_data", {"\u0000": 1}),
    raw_submit("lone-surrogate-in-task-type", 422, SURROGATE_NAME, field="task_type"),
    raw_submit("lone-surrogate-in-input", 422, SURROGATE_INPUT, field="input_data"),
    submit("agent-key-submits", 403, VALID, persona="fleet", code="forbidden"),
    submit("bound-agent-key-submits", 403, VALID, persona="agent", code="forbidden"),
]

BATCH_CASES = [
    post("batch-101-items", BATCH, "client", 422, {"tasks": [VALID] * 101}, field="tasks"),
    post("batch-empty", BATCH, "client", 422, {"tasks": []}, field="tasks"),
    post("batch-not-a-list", BATCH, "client", 422, {"tasks": VALID}, field="tasks"),
    post("batch-missing-tasks", BATCH, "client", 422, {}, field="tasks"),
    post(
        "batch-atomic-string",
        BATCH,
        "client",
        422,
        {"tasks": [VALID], "atomic": "yes"},
        field="atomic",
    ),
    post("batch-unknown-field", BATCH, "client", 422, {"tasks": [VALID], "mode": 1}, field="mode"),
    post(
        "batch-atomic-bad-item",
        BATCH,
        "client",
        422,
        {"tasks": [VALID, {**VALID, "priority": 0}], "atomic": True},
        field="tasks[1]",
    ),
    post("batch-json-array", BATCH, "client", 400, [VALID], **BAD_REQUEST),
    post("batch-agent-key", BATCH, "fleet", 403, {"tasks": [VALID]}, code="forbidden"),
]


def register(id: str, status: int, body: Any, persona: str = "fleet", **kwargs: Any) -> Any:
    return post(id, AGENTS, persona, status, body, **kwargs)


def bad_capability(id: str, capability: dict[str, Any], field: str) -> Any:
    return register(id, 422, {**AGENT, "capabilities": [capability]}, field=field)


def heartbeat(id: str, status: int, body: Any, persona: str = "agent", **kwargs: Any) -> Any:
    return post(id, HEARTBEAT, persona, status, body, **kwargs)


def claim(id: str, status: int, body: Any, persona: str = "agent", **kwargs: Any) -> Any:
    return post(id, CLAIM, persona, status, body, **kwargs)


AGENT_CASES = [
    register("register-missing-name", 422, {"public_key": "pk"}, field="display_name"),
    register(
        "register-slots-0", 422, {**AGENT, "max_concurrent_tasks": 0}, field="max_concurrent_tasks"
    ),
    register(
        "register-slots-101",
        422,
        {**AGENT, "max_concurrent_tasks": 101},
        field="max_concurrent_tasks",
    ),
    register(
        "register-slots-string",
        422,
        {**AGENT, "max_concurrent_tasks": "2"},
        field="max_concurrent_tasks",
    ),
    register("register-empty-public-key", 422, {**AGENT, "public_key": ""}, field="public_key"),
    register(
        "register-capabilities-object",
        422,
        {**AGENT, "capabilities": {"name": "x"}},
        field="capabilities",
    ),
    bad_capability(
        "register-capability-extra", {"name": "x", "colour": 1}, "capabilities.0.colour"
    ),
    bad_capability("register-capability-bad-name", {"name": "no spaces"}, "capabilities.0.name"),
    bad_capability(
        "register-capability-negative-price", {"name": "x", "price": -1}, "capabilities.0.price"
    ),
    register(
        "register-nul-in-name", 422, {**AGENT, "display_name": "a\u0000"}, field="display_name"
    ),
    register("register-by-client", 403, AGENT, persona="client"),
    register("register-by-bound-key", 403, AGENT, persona="agent"),
    heartbeat("heartbeat-bad-status", 422, {"status": "SLEEPING"}, field="status"),
    heartbeat("heartbeat-missing-status", 422, {}, field="status"),
    heartbeat(
        "heartbeat-negative-uptime", 422, {"status": "ACTIVE", "uptime_ms": -1}, field="uptime_ms"
    ),
    heartbeat("heartbeat-metrics-list", 422, {"status": "ACTIVE", "metrics": []}, field="metrics"),
    heartbeat(
        "heartbeat-bad-timestamp",
        422,
        {"status": "ACTIVE", "timestamp": "yesterday"},
        field="timestamp",
    ),
    heartbeat("heartbeat-unknown-field", 422, {"status": "ACTIVE", "cpu": 1}, field="cpu"),
    heartbeat("heartbeat-other-fleet", 404, {"status": "ACTIVE"}, persona="other_fleet"),
    heartbeat("heartbeat-other-agent-key", 404, {"status": "ACTIVE"}, persona="other_agent"),
    heartbeat("heartbeat-client-key", 403, {"status": "ACTIVE"}, persona="client"),
    post(
        "heartbeat-unknown-agent",
        "/ains/agents/agent_nope/heartbeat",
        "fleet",
        404,
        {"status": "ACTIVE"},
    ),
    post("capability-missing-name", CAPS, "agent", 422, {"version": "1"}, field="name"),
    post("capability-other-fleet", CAPS, "other_fleet", 404, {"name": "x"}),
    post("capability-client-key", CAPS, "client", 403, {"name": "x"}),
    claim("claim-max-tasks-0", 422, {"max_tasks": 0}, field="max_tasks"),
    claim("claim-max-tasks-101", 422, {"max_tasks": 101}, field="max_tasks"),
    claim("claim-wait-31", 422, {"wait_seconds": 31}, field="wait_seconds"),
    claim("claim-wait-negative", 422, {"wait_seconds": -1}, field="wait_seconds"),
    claim("claim-wait-string", 422, {"wait_seconds": "1"}, field="wait_seconds"),
    claim("claim-other-fleet", 404, {}, persona="other_fleet"),
    claim("claim-other-agent-key", 404, {}, persona="other_agent"),
    claim("claim-client-key", 403, {}, persona="client"),
    post("claim-unknown-agent", "/ains/agents/agent_nope/tasks/claim", "fleet", 404, {}),
    get("get-unknown-agent", "/ains/agents/agent_nope", "admin", 404),
    get("get-other-fleets-agent", "/ains/agents/{agent_id}", "other_fleet", 404),
    get("list-agents-bad-status", AGENTS, "admin", 422, query={"status": "ASLEEP"}, field="status"),
]


def listing(id: str, query: dict[str, str], field: str) -> Any:
    return get(id, TASKS, "client", 422, query=query, field=field)


def patch(id: str, path: str, persona: str, status: int, body: Any, **kwargs: Any) -> Any:
    return case(id, "PATCH", path + "/priority", persona, status, body, **kwargs)


CONFLICT = {"code": "conflict"}
STALE = {"code": "stale_attempt"}

TASK_CASES = [
    get("get-unknown-task", "/ains/tasks/task_nope", "admin", 404, code="not_found"),
    get("get-other-clients-task", FOREIGN, "client", 404),
    get("get-unassigned-task-as-agent", PENDING, "fleet", 404),
    get("get-task-of-other-fleet", ACTIVE, "other_fleet", 404),
    post("progress-101", ACTIVE + "/progress", "agent", 422, {"progress": 101}, field="progress"),
    post(
        "progress-negative", ACTIVE + "/progress", "agent", 422, {"progress": -1}, field="progress"
    ),
    post("progress-missing", ACTIVE + "/progress", "agent", 422, {}, field="progress"),
    post("progress-finished", DONE + "/progress", "agent", 409, {"progress": 5}, **CONFLICT),
    post("progress-client-key", ACTIVE + "/progress", "client", 403, {"progress": 5}),
    post(
        "complete-result-list",
        ACTIVE + "/complete",
        "agent",
        422,
        {"result_data": []},
        field="result_data",
    ),
    post("complete-attempt-0", ACTIVE + "/complete", "agent", 422, {"attempt": 0}, field="attempt"),
    post(
        "complete-finished", DONE + "/complete", "agent", 409, {"result_data": {"x": 1}}, **CONFLICT
    ),
    post("complete-stale-attempt", ACTIVE + "/complete", "agent", 409, {"attempt": 2}, **STALE),
    post("complete-by-foreign-agent", ACTIVE + "/complete", "other_agent", 404, {}),
    post("complete-by-other-fleet", ACTIVE + "/complete", "other_fleet", 404, {}),
    post("complete-unassigned", PENDING + "/complete", "agent", 404, {}),
    post("complete-unknown", "/ains/tasks/task_nope/complete", "agent", 404, {}),
    post("complete-client-key", ACTIVE + "/complete", "client", 403, {}),
    post(
        "complete-nul-in-result",
        ACTIVE + "/complete",
        "agent",
        422,
        {"result_data": {"k": "\u0000"}},
        field="result_data",
    ),
    post("fail-missing-message", ACTIVE + "/fail", "agent", 422, {}, field="error_message"),
    post(
        "fail-retryable-string",
        ACTIVE + "/fail",
        "agent",
        422,
        {"error_message": "x", "retryable": "no"},
        field="retryable",
    ),
    post("fail-finished", DONE + "/fail", "agent", 409, {"error_message": "x"}, **CONFLICT),
    post(
        "fail-stale-attempt",
        ACTIVE + "/fail",
        "agent",
        409,
        {"error_message": "x", "attempt": 3},
        **STALE,
    ),
    post("fail-by-foreign-agent", ACTIVE + "/fail", "other_agent", 404, {"error_message": "x"}),
    post(
        "fail-nul-in-message",
        ACTIVE + "/fail",
        "agent",
        422,
        {"error_message": "bad\u0000"},
        field="error_message",
    ),
    post("cancel-completed", DONE + "/cancel", "client", 409, {"reason": "late"}, **CONFLICT),
    post("cancel-other-clients-task", FOREIGN + "/cancel", "client", 404, {}),
    post("cancel-by-agent-key", PENDING + "/cancel", "fleet", 403, {}),
    post("cancel-unknown", "/ains/tasks/task_nope/cancel", "client", 404, {}),
    post("cancel-reason-int", PENDING + "/cancel", "client", 422, {"reason": 5}, field="reason"),
    post(
        "cancel-reason-too-long",
        PENDING + "/cancel",
        "client",
        422,
        {"reason": "r" * 2001},
        field="reason",
    ),
    patch("priority-0", PENDING, "client", 422, {"priority": 0}, field="priority"),
    patch("priority-11", PENDING, "client", 422, {"priority": 11}, field="priority"),
    patch("priority-string", PENDING, "client", 422, {"priority": "5"}, field="priority"),
    patch("priority-missing", PENDING, "client", 422, {}, field="priority"),
    patch("priority-finished", DONE, "client", 409, {"priority": 9}, **CONFLICT),
    patch("priority-other-client", FOREIGN, "client", 404, {"priority": 9}),
    patch("priority-agent-key", PENDING, "fleet", 403, {"priority": 9}),
    listing("list-bad-cursor", {"cursor": "not-a-cursor"}, "cursor"),
    listing("list-cursor-not-ours", {"cursor": "WyJ4IiwgMV0"}, "cursor"),
    listing("list-limit-0", {"limit": "0"}, "limit"),
    listing("list-limit-501", {"limit": "501"}, "limit"),
    listing("list-limit-text", {"limit": "ten"}, "limit"),
    listing("list-bad-status", {"status": "DONE"}, "status"),
    listing("list-priority-11", {"priority": "11"}, "priority"),
    listing("list-bad-date", {"created_after": "last tuesday"}, "created_after"),
    listing("list-unknown-param", {"colour": "red"}, "colour"),
    listing("list-nul-in-filter", {"client_id": "a\u0000"}, "client_id"),
    get("get-nul-in-id", "/ains/tasks/task_%00", "client", 404),
    case("method-not-allowed", "DELETE", TASKS, "client", 405),
    get("unknown-route", "/ains/nothing-here", "client", 404),
]


@pytest.mark.parametrize("bad", SUBMIT_CASES + BATCH_CASES + AGENT_CASES + TASK_CASES)
def test_it_refuses_bad_input_with_the_error_shape_and_writes_nothing(
    app: Flask, api: Api, world: World, bad: Case
) -> None:
    kwargs: dict[str, Any] = {"headers": bad.headers or {}}
    if bad.raw is not None:
        kwargs.update(data=bad.raw, content_type="application/json")
    elif bad.json is not None:
        kwargs["json"] = bad.json
    if bad.query is not None:
        kwargs["query_string"] = bad.query
    with unchanged(app):
        response = api.call(bad.method, world.path(bad.path), world.persona(bad.persona), **kwargs)
        assert_error(response, bad.status, bad.code, bad.field)


AUTH_HEADERS = [
    pytest.param({}, id="no-header"),
    pytest.param({"Authorization": ""}, id="empty"),
    pytest.param({"Authorization": "Bearer"}, id="bearer-without-key"),
    pytest.param({"Authorization": "Bearer "}, id="bearer-blank"),
    pytest.param({"Authorization": "Bearer garbage"}, id="garbage"),
    pytest.param({"Authorization": "Bearer ains_000000000000_secret"}, id="unknown-prefix"),
    pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="basic-auth"),
    pytest.param({"Authorization": "Bearer " + "ä" * 50}, id="non-ascii"),
    pytest.param({"Authorization": "Bearer " + "k" * 10_000}, id="huge"),
    pytest.param({"Authorization": "Bearer ains_" + "\u0000" * 12 + "_x"}, id="nul-prefix"),
]
AUTH_ROUTES = [
    ("POST", TASKS, VALID),
    ("GET", TASKS, None),
    ("GET", "/ains/tasks/{pending}", None),
    ("POST", AGENTS, AGENT),
    ("POST", CLAIM, {}),
    ("GET", "/ains/queue/metrics", None),
]


@pytest.mark.parametrize("headers", AUTH_HEADERS)
def test_it_answers_401_with_www_authenticate_to_missing_or_bad_keys(
    app: Flask, api: Api, world: World, headers: dict[str, str]
) -> None:
    with unchanged(app):
        for method, path, body in AUTH_ROUTES:
            response = api.call(method, world.path(path), headers=headers, json=body)
            assert_error(response, 401, "unauthorized")


def test_it_refuses_a_key_with_the_right_prefix_and_a_wrong_secret(
    app: Flask, api: Api, world: World
) -> None:
    forged = world.personas.client.key[: len("ains_") + 12] + "_not-the-secret"
    with unchanged(app):
        response = api.get(TASKS, headers={"Authorization": f"Bearer {forged}"})
        assert_error(response, 401, "unauthorized")


def test_it_refuses_revoked_and_expired_keys(app: Flask, api: Api, personas: Personas) -> None:
    with app.app_context():
        revoked, revoked_raw = create_api_key(name="old", role="client", client_id="client-1")
        revoked.revoked_at = utcnow()
        _, expired_raw = create_api_key(
            name="expired",
            role="client",
            client_id="client-1",
            expires_at=utcnow() - timedelta(seconds=1),
            now=utcnow() - timedelta(minutes=1),  # made a minute ago, expired since
        )
        db.session.commit()
        db.session.remove()
    for raw in (revoked_raw, expired_raw):
        response = api.get(TASKS, headers={"Authorization": f"Bearer {raw}"})
        assert_error(response, 401, "unauthorized")
    assert api.get(TASKS, personas.client).status_code == 200


def test_it_accepts_a_lowercase_bearer_scheme(api: Api, personas: Personas) -> None:
    response = api.get(TASKS, headers={"Authorization": f"bearer {personas.client.key}"})
    assert response.status_code == 200


def test_it_leaves_a_finished_task_exactly_as_it_was_after_refused_reports(
    app: Flask, api: Api, world: World
) -> None:
    before = api.get(f"/ains/tasks/{world.completed}", world.personas.admin).get_json()
    with unchanged(app):
        for action, body in (
            ("complete", {"result_data": {"x": 1}}),
            ("fail", {"error_message": "e"}),
            ("progress", {"progress": 1}),
        ):
            response = api.post(f"/ains/tasks/{world.completed}/{action}", world.agent, json=body)
            assert_error(response, 409, "conflict")
    assert api.get(f"/ains/tasks/{world.completed}", world.personas.admin).get_json() == before


def test_it_never_answers_500_to_unicode_it_accepts(api: Api, personas: Personas) -> None:
    samples = ["emoji 😀🚀", "e\u0301", "\uffff", "中文", "\u202eRTL", "tab\tnew\nline", "\u2028"]
    for text in samples:
        body = {**VALID, "task_type": text, "input_data": {text: [text, {"k": text}]}}
        created = api.post(TASKS, personas.client, json=body)
        assert created.status_code == 201, (text, created.get_json())
        fetched = api.get(
            f"/ains/tasks/{created.get_json()['task_id']}", personas.client
        ).get_json()
        assert fetched["task_type"] == text
        assert fetched["input_data"] == {text: [text, {"k": text}]}


def test_it_stores_json_nested_up_to_64_levels_and_refuses_deeper(
    app: Flask, api: Api, personas: Personas
) -> None:
    # The body is one level and input_data's 63 nested objects the rest: 64 in all.
    response = api.post(TASKS, personas.client, data=nested(63), content_type="application/json")
    assert response.status_code == 201, response.get_json()
    stored = api.get(f"/ains/tasks/{response.get_json()['task_id']}", personas.client).get_json()
    assert stored["input_data"] == json.loads(nested(63))["input_data"]

    with unchanged(app):
        deeper = api.post(TASKS, personas.client, data=nested(64), content_type="application/json")
    assert_error(deeper, 422, "validation_error", "body")
    assert "deeper than 64 levels" in deeper.get_json()["error"]["message"]
