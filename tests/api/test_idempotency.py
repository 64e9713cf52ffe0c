"""Idempotency-Key on POST /ains/tasks: a replay returns the original task."""

from __future__ import annotations

from typing import Any

from flask import Flask

from tests.api.support import assert_error, row_counts, unchanged
from tests.conftest import Api, Personas

BODY: dict[str, Any] = {
    "task_type": "report",
    "capability_required": "report-v1",
    "input_data": {"day": "2026-11-21"},
    "priority": 7,
}


def submit(api: Api, persona: Any, key: str, body: dict[str, Any]) -> Any:
    return api.post("/ains/tasks", persona, json=body, headers={"Idempotency-Key": key})


def test_it_returns_the_same_task_with_200_for_a_replay(
    app: Flask, api: Api, personas: Personas
) -> None:
    first = submit(api, personas.client, "k-1", BODY)
    assert first.status_code == 201
    with unchanged(app):
        again = submit(api, personas.client, "k-1", BODY)
        assert again.status_code == 200
    assert again.get_json()["task_id"] == first.get_json()["task_id"]
    assert again.get_json()["created_at"] == first.get_json()["created_at"]
    assert row_counts(app)["tasks"] == 1 and row_counts(app)["task_events"] == 1


def test_it_treats_an_equivalent_body_as_the_same_request(
    app: Flask, api: Api, personas: Personas
) -> None:
    first = submit(api, personas.client, "k-1", BODY)
    # Same fields in another order, with defaults spelt out.
    equivalent = {
        "priority": 7,
        "input_data": {"day": "2026-11-21"},
        "max_retries": 3,
        "capability_required": "report-v1",
        "task_type": "report",
        "retry_policy": "exponential",
        "timeout_seconds": 300,
    }
    again = submit(api, personas.client, "k-1", equivalent)
    assert again.status_code == 200
    assert again.get_json()["task_id"] == first.get_json()["task_id"]


def test_it_refuses_the_same_key_with_a_different_body(
    app: Flask, api: Api, personas: Personas
) -> None:
    submit(api, personas.client, "k-1", BODY)
    with unchanged(app):
        response = submit(api, personas.client, "k-1", {**BODY, "priority": 8})
        assert_error(response, 422, "validation_error", field="Idempotency-Key")


def test_it_scopes_keys_to_the_client(app: Flask, api: Api, personas: Personas) -> None:
    mine = submit(api, personas.client, "shared", BODY)
    theirs = submit(api, personas.other_client, "shared", BODY)
    assert mine.status_code == theirs.status_code == 201
    assert mine.get_json()["task_id"] != theirs.get_json()["task_id"]
    assert theirs.get_json()["client_id"] == "client-2"


def test_it_creates_a_new_task_for_a_new_key_or_no_key(
    app: Flask, api: Api, personas: Personas
) -> None:
    submit(api, personas.client, "k-1", BODY)
    assert submit(api, personas.client, "k-2", BODY).status_code == 201
    assert api.post("/ains/tasks", personas.client, json=BODY).status_code == 201
    assert api.post("/ains/tasks", personas.client, json=BODY).status_code == 201
    assert row_counts(app)["tasks"] == 4


def test_it_refuses_an_empty_key(app: Flask, api: Api, personas: Personas) -> None:
    with unchanged(app):
        assert_error(submit(api, personas.client, "", BODY), 422, field="Idempotency-Key")
