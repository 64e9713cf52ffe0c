"""/ains/api-keys: admins create, list, get, revoke and rotate keys; the clear key appears in
the create and rotate responses only; other keys are refused; bad input is a 422 naming the
field, with nothing written."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask

from app.api.api_keys import ApiKeyOut, ApiKeyPageOut, ApiKeySecretOut
from app.extensions import db
from app.models import ApiKey
from tests.api.support import T0, assert_error
from tests.conftest import Api, Persona, Personas

BASE = "/ains/api-keys"


def create(api: Api, admin: Persona, **fields: Any) -> dict[str, Any]:
    body = {"name": "billing", "role": "client", "client_id": "client-9", **fields}
    response = api.post(BASE, admin, json=body)
    assert response.status_code == 201, response.get_json()
    ApiKeySecretOut.model_validate_json(response.get_data())
    return response.get_json()


def holder(body: dict[str, Any]) -> Persona:
    return Persona(body["api_key"], body["role"], body.get("client_id"))


def key_rows(app: Flask) -> list[ApiKey]:
    with app.app_context():
        rows = list(db.session.scalars(db.select(ApiKey).order_by(ApiKey.id)))
        for row in rows:
            db.session.expunge(row)
        db.session.remove()
        return rows


def test_it_creates_a_key_that_works_and_shows_it_only_once(
    app: Flask, api: Api, personas: Personas
) -> None:
    body = create(api, personas.admin)
    raw = body["api_key"]
    assert raw.startswith(f"ains_{body['prefix']}_")
    assert body["status"] == "active" and body["created_by"] == "admin:admin"
    assert body["expires_at"] is None and body["previous_expires_at"] is None
    # The key works, as the client it names.
    tasks = api.get("/ains/tasks", holder(body))
    assert tasks.status_code == 200
    [row] = [k for k in key_rows(app) if k.id == body["key_id"]]
    assert raw not in (row.key_hash, row.prefix)
    # Lists and gets never show the secret or its hash.
    listed = api.get(BASE, personas.admin)
    got = api.get(f"{BASE}/{body['key_id']}", personas.admin)
    for response in (listed, got):
        assert response.status_code == 200
        text = response.get_data(as_text=True)
        assert raw not in text and row.key_hash not in text and 'api_key"' not in text
    ApiKeyPageOut.model_validate_json(listed.get_data())
    ApiKeyOut.model_validate_json(got.get_data())
    assert got.get_json()["last_used_at"] is not None  # used just above


def test_it_sets_an_expiry_by_days_or_by_time(api: Api, personas: Personas) -> None:
    with time_machine.travel(T0, tick=False):
        by_days = create(api, personas.admin, expires_in_days=30)
        at = create(api, personas.admin, expires_at="2026-03-05T10:00:00+01:00")
    assert by_days["expires_at"] == (T0 + timedelta(days=30)).isoformat()
    assert at["expires_at"] == "2026-03-05T09:00:00+00:00"
    assert at["status"] == "expiring"  # within 7 days


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": "2099-01-01T00:00:00"}, "expires_at"),  # no offset
        ({"role": "owner"}, "role"),
        ({"client_id": None}, "client_id"),
        ({"role": "agent"}, "client_id"),
        ({"name": "x" * 201}, "name"),
        ({"name": ""}, "name"),
        ({"name": " \t "}, "name"),
        ({"expires_in_days": 0}, "expires_in_days"),
        ({"expires_in_days": 3, "expires_at": "2099-01-01T00:00:00Z"}, "expires_in_days"),
        ({"agent_id": "agent_1"}, "agent_id"),
    ],
)
def test_it_refuses_bad_input_naming_the_field(
    app: Flask, api: Api, personas: Personas, fields: dict[str, Any], field: str
) -> None:
    before = len(key_rows(app))
    body = {"name": "billing", "role": "client", "client_id": "client-9", **fields}
    assert_error(api.post(BASE, personas.admin, json=body), 422, field=field)
    assert len(key_rows(app)) == before


def test_non_admin_keys_are_refused_on_every_route(
    app: Flask, api: Api, personas: Personas
) -> None:
    target = create(api, personas.admin)["key_id"]
    _, bound = api.register_agent(personas.fleet)
    calls = [
        ("POST", BASE, {"name": "x", "role": "admin"}),
        ("GET", BASE, None),
        ("GET", f"{BASE}/{target}", None),
        ("DELETE", f"{BASE}/{target}", None),
        ("POST", f"{BASE}/{target}/rotate", {}),
    ]
    before = [(k.id, k.prefix, k.revoked_at) for k in key_rows(app)]
    for persona in (personas.client, personas.fleet, bound):
        for method, path, body in calls:
            response = api.call(method, path, persona, json=body)
            assert_error(response, 403, "forbidden")
    for method, path, body in calls:
        assert_error(api.call(method, path, None, json=body), 401)
        bad = Persona("ains_000000000000_nope", "admin")
        assert_error(api.call(method, path, bad, json=body), 401)
    assert [(k.id, k.prefix, k.revoked_at) for k in key_rows(app)] == before


def test_unknown_ids_are_404(api: Api, personas: Personas) -> None:
    for method, path in (
        ("GET", f"{BASE}/key_nope"),
        ("DELETE", f"{BASE}/key_nope"),
        ("POST", f"{BASE}/key_nope/rotate"),
    ):
        assert_error(api.call(method, path, personas.admin, json={}), 404, "not_found")


def test_revoking_is_idempotent_and_refuses_the_key(api: Api, personas: Personas) -> None:
    body = create(api, personas.admin)
    path = f"{BASE}/{body['key_id']}"
    first = api.call("DELETE", path, personas.admin)
    assert first.status_code == 200
    ApiKeyOut.model_validate_json(first.get_data())
    assert first.get_json()["status"] == "revoked" and first.get_json()["revoked_at"]
    again = api.call("DELETE", path, personas.admin)
    assert again.status_code == 200
    assert again.get_json()["revoked_at"] == first.get_json()["revoked_at"]
    assert_error(api.get("/ains/tasks", holder(body)), 401)
    assert_error(api.post(f"{path}/rotate", personas.admin, json={}), 409, "conflict")


def test_rotation_gives_a_new_key_once_and_keeps_the_old_for_the_grace_period(
    api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False):
        body = create(api, personas.admin)
        response = api.post(
            f"{BASE}/{body['key_id']}/rotate", personas.admin, json={"grace_seconds": 3600}
        )
    assert response.status_code == 200
    ApiKeySecretOut.model_validate_json(response.get_data())
    rotated = response.get_json()
    assert rotated["key_id"] == body["key_id"] and rotated["api_key"] != body["api_key"]
    assert rotated["prefix"] != body["prefix"] and rotated["rotated_at"] == T0.isoformat()
    assert rotated["previous_expires_at"] == (T0 + timedelta(hours=1)).isoformat()
    old, new = holder(body), holder(rotated)
    with time_machine.travel(T0 + timedelta(minutes=59), tick=False):
        assert api.get("/ains/tasks", old).status_code == 200
        assert api.get("/ains/tasks", new).status_code == 200
    with time_machine.travel(T0 + timedelta(hours=1, seconds=1), tick=False):
        error = assert_error(api.get("/ains/tasks", old), 401)
        assert "grace period" in error["message"]
        assert api.get("/ains/tasks", new).status_code == 200
        got = api.get(f"{BASE}/{body['key_id']}", personas.admin).get_data(as_text=True)
    assert rotated["api_key"] not in got and body["api_key"] not in got


def test_rotation_grace_defaults_to_the_config_and_zero_ends_the_old_key_now(
    app: Flask, api: Api, personas: Personas
) -> None:
    body = create(api, personas.admin)
    with time_machine.travel(T0, tick=False):
        default = api.post(f"{BASE}/{body['key_id']}/rotate", personas.admin).get_json()
    grace = app.config["API_KEY_ROTATION_GRACE_SECONDS"]
    assert default["previous_expires_at"] == (T0 + timedelta(seconds=grace)).isoformat()
    now = api.post(f"{BASE}/{body['key_id']}/rotate", personas.admin, json={"grace_seconds": 0})
    assert now.status_code == 200 and now.get_json()["previous_expires_at"] is None
    # The rotation with no grace ended both earlier secrets.
    assert_error(api.get("/ains/tasks", holder(body)), 401)
    assert_error(api.get("/ains/tasks", holder(default)), 401)
    assert api.get("/ains/tasks", holder(now.get_json())).status_code == 200


@pytest.mark.parametrize("grace", [-1, 30 * 86400 + 1, "60", 1.5])
def test_it_refuses_a_bad_grace_period(api: Api, personas: Personas, grace: Any) -> None:
    body = create(api, personas.admin)
    response = api.post(
        f"{BASE}/{body['key_id']}/rotate", personas.admin, json={"grace_seconds": grace}
    )
    assert_error(response, 422, field="grace_seconds")
    assert api.get("/ains/tasks", holder(body)).status_code == 200


def test_a_revoked_key_is_refused_in_its_grace_period_too(api: Api, personas: Personas) -> None:
    body = create(api, personas.admin)
    rotated = api.post(
        f"{BASE}/{body['key_id']}/rotate", personas.admin, json={"grace_seconds": 86400}
    ).get_json()
    assert api.get("/ains/tasks", holder(body)).status_code == 200
    api.call("DELETE", f"{BASE}/{body['key_id']}", personas.admin)
    for persona in (holder(body), holder(rotated)):
        assert_error(api.get("/ains/tasks", persona), 401)


def test_an_expired_key_is_refused(api: Api, personas: Personas) -> None:
    with time_machine.travel(T0, tick=False):
        body = create(api, personas.admin, expires_in_days=1)
    with time_machine.travel(T0 + timedelta(hours=23), tick=False):
        assert api.get("/ains/tasks", holder(body)).status_code == 200
    with time_machine.travel(T0 + timedelta(days=1, seconds=1), tick=False):
        assert_error(api.get("/ains/tasks", holder(body)), 401)
        got = api.get(f"{BASE}/{body['key_id']}", personas.admin).get_json()
        assert got["status"] == "expired"
        assert_error(api.post(f"{BASE}/{body['key_id']}/rotate", personas.admin), 409)


def test_a_rotated_fleet_key_still_acts_for_the_agents_it_registered(
    api: Api, personas: Personas
) -> None:
    fleet = create(api, personas.admin, role="agent", client_id=None)
    agent_id, _ = api.register_agent(holder(fleet))
    rotated = api.post(
        f"{BASE}/{fleet['key_id']}/rotate", personas.admin, json={"grace_seconds": 0}
    ).get_json()
    new = holder(rotated)
    beat = api.post(f"/ains/agents/{agent_id}/heartbeat", new, json={"status": "ACTIVE"})
    assert beat.status_code == 200, beat.get_json()
    listed = api.get("/ains/agents", new).get_json()["agents"]
    assert [a["agent_id"] for a in listed] == [agent_id]
    # Another fleet's key does not act for it.
    other = api.post(
        f"/ains/agents/{agent_id}/heartbeat", personas.other_fleet, json={"status": "ACTIVE"}
    )
    assert_error(other, 404)


def test_an_agent_bound_key_keeps_its_agent_through_a_rotation(
    api: Api, personas: Personas
) -> None:
    agent_id, bound = api.register_agent(personas.fleet)
    keys = api.get(BASE, personas.admin, query_string={"role": "agent"}).get_json()["api_keys"]
    [bound_key] = [k for k in keys if k["agent_id"] == agent_id]
    rotated = api.post(
        f"{BASE}/{bound_key['key_id']}/rotate", personas.admin, json={"grace_seconds": 0}
    )
    assert rotated.get_json()["agent_id"] == agent_id
    assert_error(api.post(f"/ains/agents/{agent_id}/heartbeat", bound, json={}), 401)
    beat = api.post(
        f"/ains/agents/{agent_id}/heartbeat", holder(rotated.get_json()), json={"status": "ACTIVE"}
    )
    assert beat.status_code == 200


def test_it_lists_with_filters_and_pages(api: Api, personas: Personas) -> None:
    revoked = create(api, personas.admin, name="gone", client_id="client-r")
    api.call("DELETE", f"{BASE}/{revoked['key_id']}", personas.admin)
    create(api, personas.admin, name="soon", expires_in_days=2)

    def names(**query: Any) -> list[str]:
        response = api.get(BASE, personas.admin, query_string=query)
        assert response.status_code == 200, response.get_json()
        return [k["name"] for k in response.get_json()["api_keys"]]

    assert names(status="revoked") == ["gone"]
    assert names(status="expiring") == ["soon"]
    assert names(client_id="client-r") == ["gone"]
    assert "gone" not in names(status="active") and "admin" in names(status="active")
    assert set(names(role="client")) == {"gone", "soon", "client one", "client two"}
    page = api.get(BASE, personas.admin, query_string={"limit": 2, "offset": 1}).get_json()
    assert page["total"] == 7 and len(page["api_keys"]) == 2 and page["offset"] == 1
    for query in ({"status": "lost"}, {"role": "owner"}, {"limit": 0}, {"offset": -1}):
        field = next(iter(query))
        assert_error(api.get(BASE, personas.admin, query_string=query), 422, field=field)


def test_the_routes_are_documented_as_admin_only(api: Api) -> None:
    spec = api.get("/openapi.json").get_json()
    for path, methods in (
        (BASE, {"get", "post"}),
        (f"{BASE}/{{key_id}}", {"get", "delete"}),
        (f"{BASE}/{{key_id}}/rotate", {"post"}),
    ):
        assert set(spec["paths"][path]) >= methods
    created = spec["paths"][BASE]["post"]["responses"]["201"]
    assert created["content"]["application/json"]["schema"]["$ref"].endswith("ApiKeySecretOut")
    assert "api_key" not in spec["components"]["schemas"]["ApiKeyOut"]["properties"]


def exercise_api_keys(api: Api, personas: Personas) -> None:
    """Every /ains/api-keys operation with its success and error outcomes, for the OpenAPI
    conformance test (tests/api/test_openapi.py calls it from exercise())."""
    body = api.post(BASE, personas.admin, json={"name": "x", "role": "agent"}).get_json()
    api.get(BASE, personas.admin, query_string={"status": "active", "limit": 1})
    api.get(f"{BASE}/{body['key_id']}", personas.admin)
    api.post(f"{BASE}/{body['key_id']}/rotate", personas.admin, json={"grace_seconds": 60})
    api.call("DELETE", f"{BASE}/{body['key_id']}", personas.admin)
    api.post(f"{BASE}/{body['key_id']}/rotate", personas.admin, json={})
    api.post(BASE, personas.admin, json={"name": "x", "role": "client"})
    api.post(BASE, personas.client, json={"name": "x", "role": "admin"})
    api.get(f"{BASE}/key_nope", personas.admin)
    api.post(BASE, personas.admin, data=b"{", content_type="application/json")


def test_every_response_matches_its_documented_model(api: Api, personas: Personas) -> None:
    from app.api.endpoint import OPERATIONS
    from app.api.schemas import ErrorOut

    recorded: list[tuple[str, str, Any]] = []
    original = api.call

    def record(method: str, path: str, persona: Persona | None = None, **kwargs: Any) -> Any:
        response = original(method, path, persona, **kwargs)
        recorded.append((method, path, response))
        return response

    api.call = record  # type: ignore[method-assign]
    exercise_api_keys(api, personas)
    ops = {(op.rule, op.method): op for op in OPERATIONS if op.rule.startswith(BASE)}
    assert len(ops) == 5
    for method, path, response in recorded:
        rule = BASE if path == BASE else f"{BASE}/<key_id>"
        rule = f"{BASE}/<key_id>/rotate" if path.endswith("/rotate") else rule
        op = ops[(rule, method.lower())]
        if response.status_code >= 400:
            ErrorOut.model_validate_json(response.get_data())
            assert response.status_code in (400, 401, 403, 404, 409, 422)
            continue
        model = op.responses[response.status_code]
        assert model is not None, (method, path, response.status_code)
        model.model_validate(json.loads(response.get_data()))
