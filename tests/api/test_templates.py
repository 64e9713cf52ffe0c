"""/ains/task-templates and /ains/tasks/from-template: CRUD, who may touch what, versions,
deep-merged input checked against the template's JSON Schema, and use counting."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from app.models import Schedule, Task, TaskTemplate
from app.services import templates
from tests.api.support import assert_error, load, row_counts
from tests.conftest import Api, Persona, Personas

BASE = "/ains/task-templates"
FROM = "/ains/tasks/from-template"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["customer"],
    "properties": {
        "customer": {
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "integer"}, "tier": {"enum": ["gold", "silver"]}},
        },
        "tags": {"type": "array", "items": {"type": "string"}},
        "format": {"type": "string"},
    },
}


def template_body(**fields: Any) -> dict[str, Any]:
    return {"name": "report", "task_type": "report", "capability_required": "report-v1", **fields}


def create(api: Api, persona: Persona, **fields: Any) -> dict[str, Any]:
    response = api.post(BASE, persona, json=template_body(**fields))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def patch(api: Api, persona: Persona, template_id: str, **fields: Any) -> dict[str, Any]:
    response = api.patch(f"{BASE}/{template_id}", persona, json=fields)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def from_template(api: Api, persona: Persona, template_id: str, **fields: Any) -> dict[str, Any]:
    response = api.post(FROM, persona, json={"template_id": template_id, **fields})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def times_used(app: Flask, template_id: str) -> int:
    return int(load(app, TaskTemplate, template_id).times_used)


def template_count(app: Flask) -> int:
    with app.app_context():
        count = db.session.scalar(db.select(db.func.count()).select_from(TaskTemplate)) or 0
        db.session.remove()
    return int(count)


def test_it_creates_gets_and_deletes_a_template(app: Flask, api: Api, personas: Personas) -> None:
    body = create(
        api,
        personas.client,
        description="daily report",
        default_input_data={"format": "pdf"},
        default_priority=8,
        default_max_retries=1,
        default_retry_policy="fixed",
        default_timeout_seconds=60,
        input_schema=SCHEMA,
    )
    assert body["template_id"].startswith("tmpl_")
    assert body["client_id"] == "client-1" and body["created_by"] == "client:client-1"
    assert (body["version"], body["times_used"]) == (1, 0)
    assert body["default_priority"] == 8 and body["input_schema"] == SCHEMA
    got = api.get(f"{BASE}/{body['template_id']}", personas.client)
    assert got.status_code == 200 and got.get_json() == body

    deleted = api.call("DELETE", f"{BASE}/{body['template_id']}", personas.client)
    assert deleted.status_code == 200
    assert deleted.get_json()["template_id"] == body["template_id"]
    assert deleted.get_json()["deleted"] is True
    assert_error(api.get(f"{BASE}/{body['template_id']}", personas.client), 404, "not_found")
    assert_error(api.call("DELETE", f"{BASE}/{body['template_id']}", personas.client), 404)
    assert template_count(app) == 0  # gone for good


def test_it_fills_in_the_defaults(api: Api, personas: Personas) -> None:
    body = create(api, personas.client)
    assert body["default_input_data"] == {} and body["input_schema"] is None
    assert (
        body["default_priority"],
        body["default_max_retries"],
        body["default_retry_policy"],
        body["default_timeout_seconds"],
    ) == (5, 3, "exponential", 300)


def test_it_lists_templates_newest_first_with_filters_and_paging(
    api: Api, personas: Personas
) -> None:
    ids = [create(api, personas.client, name=n)["template_id"] for n in ("Daily 100%", "weekly")]
    other = create(api, personas.other_client, name="daily")["template_id"]

    page = api.get(BASE, personas.client).get_json()
    assert [t["template_id"] for t in page["templates"]] == ids[::-1]
    assert (page["total"], page["limit"], page["offset"]) == (2, 20, 0)
    page = api.get(BASE, personas.client, query_string={"limit": 1, "offset": 1}).get_json()
    assert [t["template_id"] for t in page["templates"]] == [ids[0]] and page["total"] == 2
    # name: any part, any case; % and _ are literal characters.
    page = api.get(BASE, personas.client, query_string={"name": "DAILY"}).get_json()
    assert [t["template_id"] for t in page["templates"]] == [ids[0]]
    page = api.get(BASE, personas.client, query_string={"name": "0%"}).get_json()
    assert [t["template_id"] for t in page["templates"]] == [ids[0]]
    assert api.get(BASE, personas.client, query_string={"name": "_"}).get_json()["total"] == 0
    # A client's client_id filter cannot widen what it sees; an admin sees every client's.
    page = api.get(BASE, personas.client, query_string={"client_id": "client-2"}).get_json()
    assert page["total"] == 0
    assert api.get(BASE, personas.admin).get_json()["total"] == 3
    page = api.get(BASE, personas.admin, query_string={"client_id": "client-2"}).get_json()
    assert [t["template_id"] for t in page["templates"]] == [other]
    assert_error(api.get(BASE, personas.client, query_string={"limit": 0}), 422, field="limit")


def test_it_keeps_names_unique_per_client_with_409(api: Api, personas: Personas) -> None:
    first = create(api, personas.client, name="report")
    error = assert_error(api.post(BASE, personas.client, json=template_body()), 409, "conflict")
    assert error["details"][0]["field"] == "name"
    create(api, personas.other_client, name="report")  # another client's names are its own
    second = create(api, personas.client, name="digest")
    renamed = api.patch(f"{BASE}/{second['template_id']}", personas.client, json={"name": "report"})
    assert_error(renamed, 409, "conflict", field="name")
    assert patch(api, personas.client, first["template_id"], name="report v2")["version"] == 2


def test_it_lets_admins_create_for_a_named_client(api: Api, personas: Personas) -> None:
    assert_error(api.post(BASE, personas.admin, json=template_body()), 422, field="client_id")
    body = create(api, personas.admin, client_id="client-1")
    assert body["client_id"] == "client-1" and body["created_by"] == "admin:admin"
    assert api.get(f"{BASE}/{body['template_id']}", personas.client).status_code == 200
    refused = api.post(BASE, personas.client, json=template_body(client_id="client-2"))
    assert_error(refused, 403, "forbidden")


def test_it_hides_templates_from_other_clients_and_refuses_agents(
    app: Flask, api: Api, personas: Personas
) -> None:
    template_id = create(api, personas.client)["template_id"]
    other = personas.other_client
    assert_error(api.get(f"{BASE}/{template_id}", other), 404, "not_found")
    assert_error(api.patch(f"{BASE}/{template_id}", other, json={"name": "x"}), 404)
    assert_error(api.call("DELETE", f"{BASE}/{template_id}", other), 404)
    assert_error(api.post(FROM, other, json={"template_id": template_id}), 404)
    assert api.get(BASE, other).get_json()["total"] == 0
    for call in (
        api.get(BASE, personas.fleet),
        api.get(f"{BASE}/{template_id}", personas.fleet),
        api.post(BASE, personas.fleet, json=template_body(name="agent's")),
        api.post(FROM, personas.fleet, json={"template_id": template_id}),
    ):
        assert_error(call, 403, "forbidden")
    assert_error(api.get(BASE), 401)
    assert load(app, TaskTemplate, template_id).version == 1
    assert row_counts(app)["tasks"] == 0


def test_it_bumps_the_version_on_each_change_only(api: Api, personas: Personas) -> None:
    template_id = create(api, personas.client, description="a")["template_id"]
    body = patch(api, personas.client, template_id, default_priority=9, description=None)
    assert (body["version"], body["default_priority"], body["description"]) == (2, 9, None)
    assert body["name"] == "report"  # the fields not given stay
    assert patch(api, personas.client, template_id, default_priority=9)["version"] == 2
    assert patch(api, personas.client, template_id)["version"] == 2
    body = patch(api, personas.client, template_id, input_schema={"type": "object"})
    assert body["version"] == 3
    assert patch(api, personas.client, template_id, input_schema=None)["input_schema"] is None
    for field in ("name", "task_type", "default_priority", "default_input_data"):
        response = api.patch(f"{BASE}/{template_id}", personas.client, json={field: None})
        assert_error(response, 422, "validation_error", field=field)
    response = api.patch(f"{BASE}/{template_id}", personas.client, json={"times_used": 0})
    assert_error(response, 422, field="times_used")
    assert api.get(f"{BASE}/{template_id}", personas.client).get_json()["version"] == 4


def test_it_makes_a_task_from_the_template_defaults(
    app: Flask, api: Api, personas: Personas
) -> None:
    template = create(
        api,
        personas.client,
        task_type="digest",
        capability_required="digest-v1",
        default_input_data={"format": "pdf"},
        default_priority=8,
        default_max_retries=1,
        default_retry_policy="fixed",
        default_timeout_seconds=60,
    )
    task = from_template(api, personas.client, template["template_id"])
    assert (task["task_type"], task["capability_required"], task["client_id"]) == (
        "digest",
        "digest-v1",
        "client-1",
    )
    assert task["input_data"] == {"format": "pdf"} and task["status"] == "PENDING"
    assert (task["priority"], task["max_retries"], task["retry_policy"]) == (8, 1, "fixed")
    assert task["timeout_seconds"] == 60
    assert (task["template_id"], task["template_version"]) == (template["template_id"], 1)
    row = load(app, Task, task["task_id"])
    assert (row.template_id, row.template_version) == (template["template_id"], 1)
    assert row.created_by == "client:client-1"

    task = from_template(
        api,
        personas.client,
        template["template_id"],
        priority=2,
        max_retries=0,
        retry_policy="linear",
        timeout_seconds=30,
        retry_on_timeout=True,
        expires_in_seconds=600,
        routing_strategy="least_loaded",
    )
    assert (task["priority"], task["max_retries"], task["retry_policy"]) == (2, 0, "linear")
    assert (task["timeout_seconds"], task["retry_on_timeout"]) == (30, True)
    assert task["expires_at"] is not None and task["routing_strategy"] == "least_loaded"
    assert times_used(app, template["template_id"]) == 2
    got = api.get(f"{BASE}/{template['template_id']}", personas.client).get_json()
    assert got["times_used"] == 2


def test_it_deep_merges_the_input_overrides(api: Api, personas: Personas) -> None:
    defaults = {
        "customer": {"id": 1, "address": {"city": "Leeds", "zip": "LS1"}},
        "tags": ["a", "b"],
        "format": "pdf",
        "keep": True,
    }
    template_id = create(api, personas.client, default_input_data=defaults)["template_id"]
    task = from_template(
        api,
        personas.client,
        template_id,
        input_data={
            "customer": {"address": {"city": "York"}, "tier": "gold"},
            "tags": ["c"],
            "format": None,
            "extra": {"x": 1},
        },
    )
    assert task["input_data"] == {
        "customer": {"id": 1, "address": {"city": "York", "zip": "LS1"}, "tier": "gold"},
        "tags": ["c"],  # lists replace
        "format": None,  # null is a value, not a deletion
        "keep": True,
        "extra": {"x": 1},
    }
    # An object over a scalar (or the reverse) replaces it.
    task = from_template(api, personas.client, template_id, input_data={"format": {"a": 1}})
    assert task["input_data"]["format"] == {"a": 1}
    task = from_template(api, personas.client, template_id, input_data={"customer": 7})
    assert task["input_data"]["customer"] == 7


def test_it_reports_every_schema_violation_by_its_json_pointer(
    app: Flask, api: Api, personas: Personas
) -> None:
    template_id = create(
        api, personas.client, input_schema=SCHEMA, default_input_data={"format": "pdf"}
    )["template_id"]
    response = api.post(
        FROM,
        personas.client,
        json={
            "template_id": template_id,
            "input_data": {
                "customer": {"id": "seven", "tier": "bronze"},
                "tags": ["ok", 3],
                "format": 1,
            },
        },
    )
    error = assert_error(response, 422, "validation_error")
    found = {(d["field"], d["pointer"]) for d in error["details"]}
    assert found == {
        ("input_data/customer/id", "/customer/id"),
        ("input_data/customer/tier", "/customer/tier"),
        ("input_data/format", "/format"),
        ("input_data/tags/1", "/tags/1"),
    }
    assert all(d["message"] for d in error["details"])
    assert "4 violations" in error["message"]
    # A violation of the whole input: the pointer is empty.
    error = assert_error(api.post(FROM, personas.client, json={"template_id": template_id}), 422)
    assert [(d["field"], d["pointer"]) for d in error["details"]] == [("input_data", "")]
    assert "'customer' is a required property" in error["details"][0]["message"]
    # Pointers escape "/" and "~" (RFC 6901).
    odd = create(
        api,
        personas.client,
        name="odd",
        input_schema={"properties": {"a/b~c": {"type": "string"}}},
    )["template_id"]
    response = api.post(
        FROM, personas.client, json={"template_id": odd, "input_data": {"a/b~c": 1}}
    )
    error = assert_error(response, 422)
    assert error["details"][0]["pointer"] == "/a~1b~0c"
    assert row_counts(app)["tasks"] == 0
    assert times_used(app, template_id) == 0  # refused uses are not counted

    task = from_template(api, personas.client, template_id, input_data={"customer": {"id": 7}})
    assert task["input_data"] == {"customer": {"id": 7}, "format": "pdf"}


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        ({"type": "objekt"}, "input_schema/type"),
        ({"properties": {"a": {"minimum": "zero"}}}, "input_schema/properties/a/minimum"),
        ({"properties": {"a": {"pattern": "("}}}, "input_schema/properties/a/pattern"),
        ({"required": "a"}, "input_schema/required"),
        ({"$ref": "https://example.com/schema.json"}, "input_schema/$ref"),
        ({"properties": {"a": {"$ref": "#/$defs/missing"}}}, "input_schema/properties/a/$ref"),
        ({"$ref": "other.json"}, "input_schema/$ref"),
    ],
)
def test_it_refuses_an_invalid_schema_naming_input_schema(
    app: Flask, api: Api, personas: Personas, schema: dict[str, Any], field: str
) -> None:
    error = assert_error(
        api.post(BASE, personas.client, json=template_body(input_schema=schema)), 422
    )
    assert field in [d["field"] for d in error["details"]], error
    assert error["message"].startswith("input_schema")
    assert template_count(app) == 0
    template_id = create(api, personas.client)["template_id"]
    response = api.patch(f"{BASE}/{template_id}", personas.client, json={"input_schema": schema})
    assert_error(response, 422)
    assert load(app, TaskTemplate, template_id).version == 1


def test_it_accepts_references_within_the_schema(api: Api, personas: Personas) -> None:
    schema = {
        "$defs": {"id": {"type": "integer"}},
        "properties": {
            "a": {"$ref": "#/$defs/id"},
            "b": {"$ref": "#anchor"},
            "c": {"$anchor": "anchor", "type": "string"},
            "d": {"$ref": "https://json-schema.org/draft/2020-12/schema"},
            "e": {"const": {"$ref": "https://example.com/not-a-reference"}},
        },
    }
    template_id = create(api, personas.client, input_schema=schema)["template_id"]
    response = api.post(
        FROM,
        personas.client,
        json={"template_id": template_id, "input_data": {"a": "x", "b": 1, "d": {"type": 1}}},
    )
    error = assert_error(response, 422)
    assert {d["pointer"] for d in error["details"]} == {"/a", "/b", "/d/type"}


def test_it_checks_the_defaults_against_the_schema_but_not_for_required_properties(
    api: Api, personas: Personas
) -> None:
    # The tasks supply the customer: defaults without it are fine.
    create(api, personas.client, input_schema=SCHEMA, default_input_data={"format": "pdf"})
    response = api.post(
        BASE,
        personas.client,
        json=template_body(name="bad", input_schema=SCHEMA, default_input_data={"format": 1}),
    )
    error = assert_error(response, 422)
    assert [d["field"] for d in error["details"]] == ["default_input_data/format"]
    # Either side of the pair changing is checked against the other.
    template_id = create(api, personas.client, name="t2", default_input_data={"format": 1})[
        "template_id"
    ]
    response = api.patch(f"{BASE}/{template_id}", personas.client, json={"input_schema": SCHEMA})
    assert_error(response, 422, field="default_input_data/format")
    patch(api, personas.client, template_id, input_schema=SCHEMA, default_input_data={})
    response = api.patch(
        f"{BASE}/{template_id}", personas.client, json={"default_input_data": {"tags": "x"}}
    )
    assert_error(response, 422, field="default_input_data/tags")


def test_it_keeps_tasks_as_they_were_made_when_the_template_changes(
    app: Flask, api: Api, personas: Personas
) -> None:
    template_id = create(api, personas.client, default_input_data={"format": "pdf"})["template_id"]
    before = from_template(api, personas.client, template_id)
    patch(api, personas.client, template_id, default_input_data={"format": "csv"}, task_type="v2")
    after = from_template(api, personas.client, template_id)
    assert (after["template_version"], after["input_data"], after["task_type"]) == (
        2,
        {"format": "csv"},
        "v2",
    )
    old = api.get(f"/ains/tasks/{before['task_id']}", personas.client).get_json()
    assert (old["template_version"], old["input_data"], old["task_type"]) == (
        1,
        {"format": "pdf"},
        "report",
    )
    # Deleting the template leaves its tasks pointing at it; new tasks are refused.
    api.call("DELETE", f"{BASE}/{template_id}", personas.client)
    assert_error(api.post(FROM, personas.client, json={"template_id": template_id}), 404)
    row = load(app, Task, before["task_id"])
    assert (row.template_id, row.template_version) == (template_id, 1)
    assert row_counts(app)["tasks"] == 2


def test_it_makes_an_admins_task_for_the_templates_client(
    app: Flask, api: Api, personas: Personas
) -> None:
    template_id = create(api, personas.client)["template_id"]
    task = from_template(api, personas.admin, template_id)
    assert task["client_id"] == "client-1"
    assert from_template(api, personas.admin, template_id, client_id="client-1")["client_id"]
    response = api.post(FROM, personas.admin, json={"template_id": template_id, "client_id": "x"})
    assert_error(response, 422, field="client_id")
    response = api.post(
        FROM, personas.client, json={"template_id": template_id, "client_id": "client-2"}
    )
    assert_error(response, 403, "forbidden")
    assert times_used(app, template_id) == 2


def test_it_refuses_bad_from_template_bodies(app: Flask, api: Api, personas: Personas) -> None:
    template_id = create(api, personas.client)["template_id"]
    for body, field in [
        ({}, "template_id"),
        ({"template_id": template_id, "priority": 11}, "priority"),
        ({"template_id": template_id, "task_type": "x"}, "task_type"),
        ({"template_id": template_id, "input_data": []}, "input_data"),
    ]:
        assert_error(api.post(FROM, personas.client, json=body), 422, field=field)
    assert_error(api.post(FROM, personas.client, json={"template_id": "tmpl_nope"}), 404)
    assert row_counts(app)["tasks"] == 0


def test_it_replays_an_idempotent_submit_without_counting_it_again(
    app: Flask, api: Api, personas: Personas
) -> None:
    template_id = create(api, personas.client)["template_id"]
    body = {"template_id": template_id, "input_data": {"day": 1}}
    headers = {"Idempotency-Key": "from-t-1"}
    first = api.post(FROM, personas.client, json=body, headers=headers)
    assert first.status_code == 201
    # The template changes in between: the replay still answers with the first task.
    patch(api, personas.client, template_id, default_priority=9)
    again = api.post(FROM, personas.client, json=body, headers=headers)
    assert again.status_code == 200
    assert again.get_json()["task_id"] == first.get_json()["task_id"]
    assert again.get_json()["template_version"] == 1
    assert times_used(app, template_id) == 1 and row_counts(app)["tasks"] == 1
    other = api.post(FROM, personas.client, json={**body, "priority": 2}, headers=headers)
    assert_error(other, 422, field="Idempotency-Key")
    # The key of a plain submit is not a replay of a template submit, and the reverse.
    plain = api.post(
        "/ains/tasks",
        personas.client,
        json={"task_type": "report", "capability_required": "report-v1"},
        headers={"Idempotency-Key": "plain"},
    )
    assert plain.status_code == 201
    assert_error(
        api.post(FROM, personas.client, json=body, headers={"Idempotency-Key": "plain"}), 422
    )
    assert times_used(app, template_id) == 1


def test_it_creates_a_schedule_from_a_template(app: Flask, api: Api, personas: Personas) -> None:
    template_id = create(
        api,
        personas.client,
        task_type="digest",
        capability_required="digest-v1",
        default_priority=8,
        default_timeout_seconds=60,
    )["template_id"]
    response = api.post(
        "/aitp/tasks/schedule",
        personas.client,
        json={"template_id": template_id, "interval_seconds": 60, "max_retries": 0},
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["template_id"] == template_id
    assert (body["task_type"], body["capability_required"]) == ("digest", "digest-v1")
    # Not given: the template's defaults; given: the schedule's own.
    assert (body["priority"], body["timeout_seconds"], body["max_retries"]) == (8, 60, 0)
    assert load(app, Schedule, body["schedule_id"]).template_id == template_id

    run = api.post(f"/aitp/tasks/schedule/{body['schedule_id']}/run-now", personas.client)
    assert run.status_code == 201, run.get_json()
    task = run.get_json()["task"]
    assert (task["template_id"], task["template_version"], task["priority"]) == (template_id, 1, 8)

    for fields, status, field in [
        ({"interval_seconds": 60}, 422, "task_type"),
        ({"template_id": template_id, "interval_seconds": 60, "task_type": "x"}, 422, "task_type"),
        ({"template_id": "tmpl_nope", "interval_seconds": 60}, 404, None),
    ]:
        response = api.post("/aitp/tasks/schedule", personas.client, json=fields)
        assert_error(response, status, field=field)
    response = api.post(
        "/aitp/tasks/schedule",
        personas.other_client,
        json={"template_id": template_id, "interval_seconds": 60},
    )
    assert_error(response, 404)
    response = api.post(
        "/aitp/tasks/schedule",
        personas.admin,
        json={"template_id": template_id, "interval_seconds": 60, "client_id": "client-2"},
    )
    assert_error(response, 422, field="template_id")

    # run-now after the template was deleted: a conflict naming it.
    api.call("DELETE", f"{BASE}/{template_id}", personas.client)
    response = api.post(f"/aitp/tasks/schedule/{body['schedule_id']}/run-now", personas.client)
    error = assert_error(response, 409, "conflict")
    assert template_id in error["message"]


def test_it_replays_a_submit_after_its_template_was_deleted(
    app: Flask, api: Api, personas: Personas
) -> None:
    template_id = create(api, personas.client)["template_id"]
    headers = {"Idempotency-Key": "before-delete"}
    first = api.post(FROM, personas.client, json={"template_id": template_id}, headers=headers)
    api.call("DELETE", f"{BASE}/{template_id}", personas.client)
    again = api.post(FROM, personas.client, json={"template_id": template_id}, headers=headers)
    assert again.status_code == 200
    assert again.get_json()["task_id"] == first.get_json()["task_id"]


def test_it_refuses_an_admins_key_that_the_client_already_used(
    app: Flask, api: Api, personas: Personas
) -> None:
    template_id = create(api, personas.client)["template_id"]
    headers = {"Idempotency-Key": "shared"}
    api.post(
        "/ains/tasks",
        personas.client,
        json={"task_type": "report", "capability_required": "report-v1"},
        headers=headers,
    )
    response = api.post(FROM, personas.admin, json={"template_id": template_id}, headers=headers)
    assert_error(response, 422, field="Idempotency-Key")
    assert times_used(app, template_id) == 0 and row_counts(app)["tasks"] == 1
    # The admin's own replays are found by its own tasks.
    first = api.post(
        FROM, personas.admin, json={"template_id": template_id}, headers={"Idempotency-Key": "adm"}
    )
    again = api.post(
        FROM, personas.admin, json={"template_id": template_id}, headers={"Idempotency-Key": "adm"}
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json()["task_id"] == first.get_json()["task_id"]


def test_it_answers_409_when_two_creates_race_for_one_name(
    app: Flask, api: Api, personas: Personas, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(api, personas.client, name="report")
    # As if the other create committed between this one's check and its insert.
    monkeypatch.setattr(templates, "check_name_free", lambda *args, **kwargs: None)
    response = api.post(BASE, personas.client, json=template_body(name="report"))
    assert_error(response, 409, "conflict", field="name")
    assert template_count(app) == 1


def concurrently(app: Flask, calls: int, send: Callable[[FlaskClient, int], Any]) -> list[Any]:
    """``calls`` requests at once, each from its own thread and test client."""
    start = threading.Barrier(calls)
    results: list[Any] = [None] * calls

    def run(i: int) -> None:
        client = app.test_client()
        start.wait()
        response = send(client, i)
        results[i] = (response.status_code, response.get_json())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    return results


def test_concurrent_uses_are_each_counted(app: Flask, api: Api, personas: Personas) -> None:
    template_id = create(api, personas.client)["template_id"]
    headers = personas.client.headers

    def send(client: FlaskClient, i: int) -> Any:
        return client.post(FROM, json={"template_id": template_id}, headers=headers)

    results = concurrently(app, 8, send)
    assert [status for status, _ in results] == [201] * 8, results
    assert times_used(app, template_id) == 8

    replay = {**headers, "Idempotency-Key": "race"}
    results = concurrently(
        app,
        8,
        lambda client, i: client.post(FROM, json={"template_id": template_id}, headers=replay),
    )
    assert sorted(status for status, _ in results) == [200] * 7 + [201], results
    assert len({body["task_id"] for _, body in results}) == 1
    assert times_used(app, template_id) == 9


def test_it_runs_schema_patterns_in_linear_time_and_refuses_what_re2_cannot_run(
    app: Flask, api: Api, personas: Personas
) -> None:
    # A pattern that backtracks exponentially in Python's re: RE2 answers at once.
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^(a+)+$"}},
        "patternProperties": {"^x-(a+)+$": {"type": "integer"}},
    }
    template_id = create(api, personas.client, input_schema=schema)["template_id"]
    started = time.monotonic()
    response = api.post(
        FROM,
        personas.client,
        json={"template_id": template_id, "input_data": {"code": "a" * 5000 + "!", "x-aa": "n"}},
    )
    assert time.monotonic() - started < 2
    error = assert_error(response, 422)
    assert sorted(d["pointer"] for d in error["details"]) == ["/code", "/x-aa"]
    assert from_template(api, personas.client, template_id, input_data={"code": "aaa"})

    # Backreferences and lookaround have no linear-time engine: refused when saved.
    for pattern in ("^(a)\\1$", "^(?=a)a$"):
        bad = {"type": "object", "properties": {"p": {"type": "string", "pattern": pattern}}}
        refused = assert_error(
            api.post(BASE, personas.client, json=template_body(name="x", input_schema=bad)), 422
        )
        assert refused["details"][0]["pointer"] == "/properties/p/pattern"
        assert "RE2" in refused["details"][0]["message"]


def test_it_checks_unique_items_of_a_long_array_quickly(api: Api, personas: Personas) -> None:
    schema = {"type": "object", "properties": {"rows": {"type": "array", "uniqueItems": True}}}
    template_id = create(api, personas.client, input_schema=schema)["template_id"]
    rows: list[Any] = [{"n": n} for n in range(20_000)]
    started = time.monotonic()
    assert from_template(api, personas.client, template_id, input_data={"rows": rows})
    duplicated = [*rows, {"n": 7.0}]  # 7.0 equals 7 in JSON Schema
    response = api.post(
        FROM, personas.client, json={"template_id": template_id, "input_data": {"rows": duplicated}}
    )
    assert time.monotonic() - started < 5
    assert assert_error(response, 422)["details"][0]["pointer"] == "/rows"


def test_it_refuses_a_schema_over_64_kb(api: Api, personas: Personas) -> None:
    schema = {"type": "object", "description": "x" * (64 * 1024)}
    error = assert_error(
        api.post(BASE, personas.client, json=template_body(input_schema=schema)), 422
    )
    assert error["details"][0]["field"] == "input_schema"
