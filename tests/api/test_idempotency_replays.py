"""Idempotency-Key on submit and batch: replays within the TTL return the original task(s),
a reused key with another body is refused, the key is free again after the TTL, and
concurrent replays create one set."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask

from app.extensions import db
from app.models import Task
from app.services.settings import settings
from tests.api.support import T0, assert_error, row_counts, unchanged
from tests.conftest import Api, Persona, Personas

BODY: dict[str, Any] = {"task_type": "report", "capability_required": "report-v1"}
TTL = 600


@pytest.fixture(autouse=True)
def short_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "idempotency_ttl_seconds", TTL)


def submit(api: Api, persona: Persona, key: str, body: dict[str, Any] | None = None) -> Any:
    return api.post("/ains/tasks", persona, json=body or BODY, headers={"Idempotency-Key": key})


def batch(api: Api, persona: Persona, key: str, body: dict[str, Any]) -> Any:
    return api.post("/ains/tasks/batch", persona, json=body, headers={"Idempotency-Key": key})


def test_a_replay_returns_the_task_as_it_is_now_with_200(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        first = submit(api, personas.client, "order-17")
        assert first.status_code == 201
        task_id = first.get_json()["task_id"]
        agent_id, agent = api.register_agent(personas.fleet)
        api.claim(agent_id, agent)
        api.post(f"/ains/tasks/{task_id}/complete", agent, json={"result_data": {"ok": 1}})
        clock.shift(timedelta(seconds=TTL))
        with unchanged(app):
            again = submit(api, personas.client, "order-17")
    assert again.status_code == 200
    body = again.get_json()
    assert body["task_id"] == task_id
    assert body["status"] == "COMPLETED" and body["result_data"] == {"ok": 1}


def test_a_reused_key_with_another_body_is_refused(
    app: Flask, api: Api, personas: Personas
) -> None:
    submit(api, personas.client, "k")
    with unchanged(app):
        for other in (
            {**BODY, "input_data": {"x": 1}},
            {**BODY, "timeout_seconds": 30},
            {**BODY, "expires_in_seconds": 30},
            {**BODY, "retry_on_timeout": True},
        ):
            error = assert_error(
                submit(api, personas.client, "k", other), 422, field="Idempotency-Key"
            )
            assert "different request body" in error["message"]


def test_after_the_ttl_the_key_makes_a_new_task(app: Flask, api: Api, personas: Personas) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        old = submit(api, personas.client, "nightly").get_json()["task_id"]
        clock.shift(timedelta(seconds=TTL + 1))
        # Past the TTL even another body is accepted: the key is free.
        fresh = submit(api, personas.client, "nightly", {**BODY, "priority": 9})
        assert fresh.status_code == 201
        new = fresh.get_json()["task_id"]
        assert new != old
        again = submit(api, personas.client, "nightly", {**BODY, "priority": 9})
        assert (again.status_code, again.get_json()["task_id"]) == (200, new)
        assert_error(submit(api, personas.client, "nightly"), 422, field="Idempotency-Key")
    # The old task is kept, only its key was released.
    assert row_counts(app)["tasks"] == 2
    assert api.get(f"/ains/tasks/{old}", personas.client).get_json()["status"] == "PENDING"


def test_a_batch_replay_returns_the_same_ids_and_the_same_failures(
    app: Flask, api: Api, personas: Personas
) -> None:
    items = [
        {**BODY, "input_data": {"n": 0}},
        {**BODY, "priority": 0},
        {**BODY, "client_id": "client-2"},
        "not an object",
        {**BODY, "input_data": {"n": 4}},
    ]
    with time_machine.travel(T0, tick=False) as clock:
        first = batch(api, personas.client, "b-1", {"tasks": items})
        assert first.status_code == 201
        clock.shift(timedelta(seconds=TTL - 1))
        with unchanged(app):
            again = batch(api, personas.client, "b-1", {"tasks": items})
    assert again.status_code == 200
    assert again.get_json() == first.get_json()
    body = first.get_json()
    assert [s["index"] for s in body["submitted"]] == [0, 4]
    assert [f["index"] for f in body["failed"]] == [1, 2, 3]
    assert row_counts(app)["tasks"] == 2


def test_a_batch_key_reused_with_another_body_is_refused(
    app: Flask, api: Api, personas: Personas
) -> None:
    items = [BODY, {**BODY, "priority": 8}]
    batch(api, personas.client, "b-1", {"tasks": items})
    with unchanged(app):
        for other in (
            {"tasks": [BODY, {**BODY, "priority": 9}]},
            {"tasks": items, "atomic": True},
            {"tasks": [BODY]},
            {"tasks": [*items, BODY]},
        ):
            assert_error(batch(api, personas.client, "b-1", other), 422, field="Idempotency-Key")


def test_a_batch_key_is_free_again_after_the_ttl(app: Flask, api: Api, personas: Personas) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        first = batch(api, personas.client, "b-1", {"tasks": [BODY, BODY]}).get_json()
        clock.shift(timedelta(seconds=TTL + 1))
        second = batch(api, personas.client, "b-1", {"tasks": [BODY, BODY]})
    assert second.status_code == 201
    old = {s["task_id"] for s in first["submitted"]}
    new = {s["task_id"] for s in second.get_json()["submitted"]}
    assert len(new) == 2 and not old & new
    assert row_counts(app)["tasks"] == 4


def test_an_atomic_batch_refused_once_is_refused_again_and_creates_nothing(
    app: Flask, api: Api, personas: Personas
) -> None:
    body = {"tasks": [BODY, {**BODY, "priority": 11}], "atomic": True}
    with unchanged(app):
        assert_error(batch(api, personas.client, "b-1", body), 422, field="tasks[1]")
        assert_error(batch(api, personas.client, "b-1", body), 422, field="tasks[1]")


def test_batch_and_single_keys_do_not_collide(app: Flask, api: Api, personas: Personas) -> None:
    single = submit(api, personas.client, "same")
    many = batch(api, personas.client, "same", {"tasks": [BODY]})
    assert single.status_code == many.status_code == 201
    assert many.get_json()["submitted"][0]["task_id"] != single.get_json()["task_id"]


def test_another_client_replaying_my_batch_key_gets_its_own_tasks(
    app: Flask, api: Api, personas: Personas
) -> None:
    mine = batch(api, personas.client, "b", {"tasks": [BODY]}).get_json()
    theirs = batch(api, personas.other_client, "b", {"tasks": [BODY]})
    assert theirs.status_code == 201
    [item] = theirs.get_json()["submitted"]
    assert item["client_id"] == "client-2"
    assert item["task_id"] != mine["submitted"][0]["task_id"]


@pytest.mark.parametrize(
    "key",
    ["x" * 181, "\x00abc", "abc\x01", "del\x7f", "tab\there", "\x1b[31mred"],
    ids=["too-long", "nul", "soh", "del", "tab", "escape"],
)
def test_it_refuses_an_unusable_key_on_submit_and_batch(
    app: Flask, api: Api, personas: Personas, key: str
) -> None:
    with unchanged(app):
        assert_error(submit(api, personas.client, key), 422, "validation_error", "Idempotency-Key")
        response = batch(api, personas.client, key, {"tasks": [BODY]})
        assert_error(response, 422, "validation_error", "Idempotency-Key")


def test_it_accepts_a_key_of_180_printable_characters(api: Api, personas: Personas) -> None:
    key = "k" * 179 + "é"
    first = submit(api, personas.client, key)
    assert first.status_code == 201
    again = submit(api, personas.client, key)
    assert (again.status_code, again.get_json()["task_id"]) == (200, first.get_json()["task_id"])
    assert batch(api, personas.client, key, {"tasks": [BODY]}).status_code == 201


def concurrently(app: Flask, calls: int, send: Any) -> list[Any]:
    """Run ``send(client)`` from ``calls`` threads released together.

    On PostgreSQL the submits really race (the unique key settles it); on SQLite they are
    serialised by the single writer. Both must end with one set of tasks.
    """
    start = threading.Barrier(calls)
    results: list[Any] = [None] * calls

    def run(i: int) -> None:
        client = app.test_client()
        start.wait()
        response = send(client)
        results[i] = (response.status_code, response.get_json())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    return results


def stored_tasks(app: Flask) -> list[str]:
    with app.app_context():
        ids = list(db.session.scalars(db.select(Task.id)))
        db.session.remove()
    return ids


def test_concurrent_replays_of_one_submit_create_one_task(app: Flask, personas: Personas) -> None:
    headers = {**personas.client.headers, "Idempotency-Key": "race"}
    results = concurrently(app, 8, lambda c: c.post("/ains/tasks", json=BODY, headers=headers))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 7 + [201], results
    ids = {body["task_id"] for _, body in results}
    assert len(ids) == 1
    assert stored_tasks(app) == list(ids)


def test_concurrent_replays_of_one_batch_create_one_set(app: Flask, personas: Personas) -> None:
    headers = {**personas.client.headers, "Idempotency-Key": "race"}
    items = [{**BODY, "input_data": {"n": n}} for n in range(5)] + [{**BODY, "priority": 0}]
    results = concurrently(
        app, 8, lambda c: c.post("/ains/tasks/batch", json={"tasks": items}, headers=headers)
    )
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 7 + [201], results
    bodies = [body for _, body in results]
    assert all(body == bodies[0] for body in bodies)
    ids = [s["task_id"] for s in bodies[0]["submitted"]]
    assert len(ids) == 5 and [f["index"] for f in bodies[0]["failed"]] == [5]
    assert sorted(stored_tasks(app)) == sorted(ids)


def test_a_replayed_submit_leaves_one_task_to_claim(api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet, slots=3)
    first = submit(api, personas.client, "once")
    submit(api, personas.client, "once")
    batch(api, personas.client, "twice", {"tasks": [BODY]})
    batch(api, personas.client, "twice", {"tasks": [BODY]})
    claimed = [t["task_id"] for t in api.claim(agent_id, agent, max_tasks=3)]
    assert len(claimed) == 2 and first.get_json()["task_id"] in claimed
