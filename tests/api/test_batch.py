"""POST /ains/tasks/batch: per-item outcomes, atomic all-or-nothing, client scoping."""

from __future__ import annotations

from typing import Any

from flask import Flask

from app.api.schemas import BatchOut
from tests.api.support import assert_error, row_counts, unchanged
from tests.conftest import Api, Personas

VALID: dict[str, Any] = {"task_type": "report", "capability_required": "report-v1"}


def test_it_submits_the_valid_items_and_reports_the_invalid_ones_by_index(
    app: Flask, api: Api, personas: Personas
) -> None:
    items = [
        {**VALID, "priority": 7},
        {**VALID, "priority": 0},
        "not an object",
        {**VALID, "input_data": {"n": 3}},
        {"task_type": "report"},
        {**VALID, "colour": "red"},
    ]
    response = api.post("/ains/tasks/batch", personas.client, json={"tasks": items})
    assert response.status_code == 201
    body = response.get_json()
    BatchOut.model_validate(body)
    assert [s["index"] for s in body["submitted"]] == [0, 3]
    for item in body["submitted"]:
        assert item["task_id"].startswith("task_")
        assert item["status"] == "PENDING" and item["client_id"] == "client-1"
    failed = {f["index"]: f for f in body["failed"]}
    assert sorted(failed) == [1, 2, 4, 5]
    assert all(f["error"] for f in failed.values())
    assert [d["field"] for d in failed[1]["details"]] == ["tasks[1].priority"]
    assert [d["field"] for d in failed[2]["details"]] == ["tasks[2]"]
    assert [d["field"] for d in failed[4]["details"]] == ["tasks[4].capability_required"]
    assert [d["field"] for d in failed[5]["details"]] == ["tasks[5].colour"]

    counts = row_counts(app)
    assert counts["tasks"] == 2 and counts["task_events"] == 2
    stored = api.get(f"/ains/tasks/{body['submitted'][1]['task_id']}", personas.client).get_json()
    assert stored["input_data"] == {"n": 3}


def test_it_creates_nothing_when_an_atomic_batch_has_one_bad_item(
    app: Flask, api: Api, personas: Personas
) -> None:
    items = [VALID, VALID, {**VALID, "timeout_seconds": 0}, VALID]
    with unchanged(app):
        response = api.post(
            "/ains/tasks/batch", personas.client, json={"tasks": items, "atomic": True}
        )
        error = assert_error(response, 422, "validation_error", field="tasks[2]")
    assert "nothing was created" in error["message"]
    assert row_counts(app)["tasks"] == 0


def test_it_creates_every_item_of_a_valid_atomic_batch(
    app: Flask, api: Api, personas: Personas
) -> None:
    response = api.post(
        "/ains/tasks/batch", personas.client, json={"tasks": [VALID] * 3, "atomic": True}
    )
    assert response.status_code == 201
    body = response.get_json()
    assert [s["index"] for s in body["submitted"]] == [0, 1, 2]
    assert body["failed"] == []
    assert row_counts(app)["tasks"] == 3


def test_it_fails_the_item_a_client_key_submits_for_another_client(
    app: Flask, api: Api, personas: Personas
) -> None:
    items = [VALID, {**VALID, "client_id": "client-2"}, {**VALID, "client_id": "client-1"}]
    response = api.post("/ains/tasks/batch", personas.client, json={"tasks": items})
    assert response.status_code == 201
    body = response.get_json()
    assert [s["index"] for s in body["submitted"]] == [0, 2]
    [failed] = body["failed"]
    assert failed["index"] == 1 and "client-2" in failed["error"]
    assert api.get("/ains/tasks", personas.other_client).get_json()["tasks"] == []

    with unchanged(app):
        atomic = api.post(
            "/ains/tasks/batch", personas.client, json={"tasks": items, "atomic": True}
        )
        assert_error(atomic, 422, field="tasks[1]")


def test_it_lets_an_admin_submit_for_several_clients_and_needs_each_client_id(
    api: Api, personas: Personas
) -> None:
    items = [{**VALID, "client_id": "client-1"}, {**VALID, "client_id": "client-2"}, VALID]
    body = api.post("/ains/tasks/batch", personas.admin, json={"tasks": items}).get_json()
    assert [(s["index"], s["client_id"]) for s in body["submitted"]] == [
        (0, "client-1"),
        (1, "client-2"),
    ]
    [failed] = body["failed"]
    assert failed["index"] == 2
    assert [d["field"] for d in failed["details"]] == ["client_id"] or "client_id" in failed[
        "error"
    ]


def test_it_accepts_100_items_and_refuses_101(app: Flask, api: Api, personas: Personas) -> None:
    with unchanged(app):
        too_many = api.post("/ains/tasks/batch", personas.client, json={"tasks": [VALID] * 101})
        assert_error(too_many, 422, field="tasks")
    response = api.post("/ains/tasks/batch", personas.client, json={"tasks": [VALID] * 100})
    assert response.status_code == 201
    assert len(response.get_json()["submitted"]) == 100
    assert row_counts(app)["tasks"] == 100


def test_it_wakes_claimers_for_batch_items(api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet, slots=5)
    api.post("/ains/tasks/batch", personas.client, json={"tasks": [VALID] * 2})
    assert len(api.claim(agent_id, agent, max_tasks=5)) == 2
