"""The dead-letter view: GET /ains/dead-letter lists FAILED tasks; bulk requeue and bulk
cancel act by ids or by filter, skip what they may not touch, and keep the history."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask

from app.api.schemas import BulkOut, TaskPageOut
from app.models import Task
from app.services.settings import settings
from tests.api.lifecycle_support import beat, detail, fail, report, sweep_at
from tests.api.support import T0, assert_error, load, parse_time, unchanged
from tests.conftest import Api, Persona, Personas

REQUEUE = "/ains/dead-letter/requeue"
DISCARD = "/ains/dead-letter/cancel"


@pytest.fixture(autouse=True)
def no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "retry_jitter", "none")


def failed_tasks(
    api: Api, persona: Persona, agent: tuple[str, Persona], count: int, **fields: Any
) -> list[str]:
    """``count`` tasks of ``persona`` that end FAILED (not retryable), oldest first."""
    agent_id, key = agent
    ids = []
    for n in range(count):
        task_id = api.submit(persona, input_data={"n": n}, **fields)["task_id"]
        [claimed] = api.claim(agent_id, key)
        assert claimed["task_id"] == task_id
        fail(api, key, task_id, error_message=f"broken {n}", retryable=False)
        ids.append(task_id)
    return ids


def dead_ids(api: Api, persona: Persona, query: str = "") -> list[str]:
    response = api.get(f"/ains/dead-letter{query}", persona)
    assert response.status_code == 200, response.get_json()
    TaskPageOut.model_validate(response.get_json())
    return [t["task_id"] for t in response.get_json()["tasks"]]


def bulk(api: Api, persona: Persona, url: str, **body: Any) -> dict[str, Any]:
    response = api.post(url, persona, json=body)
    assert response.status_code == 200, response.get_json()
    BulkOut.model_validate(response.get_json())
    return response.get_json()


@pytest.fixture
def agent(api: Api, personas: Personas) -> tuple[str, Persona]:
    return api.register_agent(personas.fleet, capabilities=("report-v1", "resize-v1"))


def test_it_lists_only_failed_tasks_newest_first_with_filters(
    app: Flask, api: Api, personas: Personas, agent: tuple[str, Persona]
) -> None:
    with time_machine.travel(T0, tick=True):
        reports = failed_tasks(api, personas.client, agent, 2)
        resizes = failed_tasks(api, personas.client, agent, 1, capability_required="resize-v1")
        urgent = failed_tasks(api, personas.client, agent, 1, priority=9)
        api.submit(personas.client, capability_required="idle-v1")  # PENDING
        done = api.submit(personas.client)["task_id"]
        api.claim(agent[0], agent[1])
        report(api, agent[1], done, "complete")
        mine = reports + resizes + urgent
        theirs = failed_tasks(api, personas.other_client, agent, 1)
    assert dead_ids(api, personas.client) == list(reversed(mine))
    assert dead_ids(api, personas.client, "?capability=resize-v1") == resizes
    assert dead_ids(api, personas.client, "?priority=9") == urgent
    assert dead_ids(api, personas.client, f"?agent_id={agent[0]}") == list(reversed(mine))
    assert dead_ids(api, personas.other_client) == theirs
    assert set(dead_ids(api, personas.admin)) == {*mine, *theirs}
    assert dead_ids(api, personas.admin, "?client_id=client-2") == theirs
    first = api.get("/ains/dead-letter?limit=2", personas.client).get_json()
    assert [t["task_id"] for t in first["tasks"]] == list(reversed(mine))[:2]
    rest = dead_ids(api, personas.client, f"?limit=2&cursor={first['next_cursor']}")
    assert rest == list(reversed(mine))[2:]
    row = api.get("/ains/dead-letter?limit=1", personas.client).get_json()["tasks"][0]
    assert row["status"] == "FAILED" and row["last_error"] == "broken 0"


@pytest.mark.parametrize(
    "query", ["?status=PENDING", "?limit=0", "?limit=501", "?priority=11", "?colour=red"]
)
def test_it_refuses_bad_list_queries(api: Api, personas: Personas, query: str) -> None:
    assert_error(api.get(f"/ains/dead-letter{query}", personas.client), 422)


def test_requeue_by_ids_resets_retries_and_keeps_the_history(
    app: Flask, api: Api, personas: Personas, agent: tuple[str, Persona]
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        agent_id, key = agent
        task_id = api.submit(personas.client, max_retries=1, retry_policy="fixed")["task_id"]
        api.claim(agent_id, key)
        fail(api, key, task_id, error_message="first")
        clock.shift(timedelta(seconds=10))
        api.claim(agent_id, key)
        assert fail(api, key, task_id, error_message="second")["status"] == "FAILED"
        clock.shift(timedelta(minutes=5))
        beat(api, agent_id, key)
        result = bulk(api, personas.client, REQUEUE, task_ids=[task_id])
        assert result == {
            "action": "requeue",
            "count": 1,
            "task_ids": [task_id],
            "skipped": [],
            "remaining": 0,
        }
        shown = detail(api, personas.client, task_id)
        # Back in the queue, and routed at once to the only agent that can take it.
        assert shown["status"] == "ASSIGNED"
        assert shown["retry_count"] == 0 and shown["next_retry_at"] is None
        assert shown["completed_at"] is None and shown["assigned_agent_id"] == agent_id
        assert shown["last_error"] == "second"
        assert [a["error"] for a in shown["attempts"]] == ["first", "second"]
        requeued, routed = shown["events"][-2:]
        assert (requeued["from_status"], requeued["to_status"]) == ("FAILED", "PENDING")
        assert requeued["actor"] == "client:client-1"
        assert requeued["data"] == {"last_error": "second"}
        assert (routed["from_status"], routed["to_status"]) == ("PENDING", "ASSIGNED")
        assert routed["actor"] == "system:router"
        assert routed["data"]["routing"]["winner"] == agent_id
        assert dead_ids(api, personas.client) == []
        # Claimable at once, as attempt 3, with a fresh retry to spend.
        [again] = api.claim(agent_id, key)
        assert (again["task_id"], again["attempt"]) == (task_id, 3)
        assert fail(api, key, task_id, error_message="third")["status"] == "PENDING"


def test_requeue_puts_the_task_at_the_back_of_its_priority(
    app: Flask, api: Api, personas: Personas, agent: tuple[str, Persona]
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        [old] = failed_tasks(api, personas.client, agent, 1)
        clock.shift(timedelta(seconds=1))
        waiting = api.submit(personas.client)["task_id"]
        clock.shift(timedelta(seconds=1))
        bulk(api, personas.client, REQUEUE, task_ids=[old])
        order = [api.claim(agent[0], agent[1])[0]["task_id"]]
        report(api, agent[1], order[0], "complete")
        order.append(api.claim(agent[0], agent[1])[0]["task_id"])
    assert order == [waiting, old]


def test_a_requeued_task_keeps_an_expiry_still_ahead(
    app: Flask, api: Api, personas: Personas, agent: tuple[str, Persona]
) -> None:
    with time_machine.travel(T0, tick=False):
        [task_id] = failed_tasks(api, personas.client, agent, 1, expires_in_seconds=600)
        bulk(api, personas.client, REQUEUE, task_ids=[task_id])
    assert parse_time(detail(api, personas.client, task_id)["expires_at"]) == T0 + timedelta(
        seconds=600
    )
    assert sweep_at(app, T0 + timedelta(seconds=601))["expired"] == 1


def test_a_requeued_task_past_its_expiry_is_claimable(
    app: Flask, api: Api, personas: Personas, agent: tuple[str, Persona]
) -> None:
    # Requeueing is an explicit decision to run the task again: an expiry that passed while
    # it sat in the dead-letter view must not end it EXPIRED straight away.
    with time_machine.travel(T0, tick=False) as clock:
        [task_id] = failed_tasks(api, personas.client, agent, 1, expires_in_seconds=60)
        clock.shift(timedelta(minutes=10))
        beat(api, agent[0], agent[1])
        bulk(api, personas.client, REQUEUE, task_ids=[task_id])
        assert sweep_at(app, T0 + timedelta(minutes=10, seconds=1))["expired"] == 0
        assert [t["task_id"] for t in api.claim(agent[0], agent[1])] == [task_id]


def test_requeue_by_filter_takes_only_matching_failed_tasks(
    app: Flask, api: Api, personas: Personas, agent: tuple[str, Persona]
) -> None:
    reports = failed_tasks(api, personas.client, agent, 2)
    resizes = failed_tasks(api, personas.client, agent, 2, capability_required="resize-v1")
    theirs = failed_tasks(api, personas.other_client, agent, 1, capability_required="resize-v1")
    result = bulk(api, personas.client, REQUEUE, filter={"capability": "resize-v1"})
    assert result["action"] == "requeue"
    assert sorted(result["task_ids"]) == sorted(resizes)
    assert result["count"] == 2 and result["remaining"] == 0 and result["skipped"] == []
    # Back in the queue: the agent's one slot takes one of them, the other waits for it.
    requeued = sorted((load(app, Task, t) for t in resizes), key=lambda t: t.status)
    assert [(t.status, t.assigned_agent_id) for t in requeued] == [
        ("ASSIGNED", agent[0]),
        ("PENDING", None),
    ]
    assert {load(app, Task, t).status for t in reports + theirs} == {"FAILED"}


def test_cancel_by_filter_with_a_limit_reports_what_remains(
    app: Flask, api: Api, personas: Personas, agent: tuple[str, Persona]
) -> None:
    with time_machine.travel(T0, tick=True):
        ids = failed_tasks(api, personas.client, agent, 5)
        theirs = failed_tasks(api, personas.other_client, agent, 1)
    result = bulk(
        api, personas.client, DISCARD, filter={"client_id": "client-1"}, limit=3, reason="junk"
    )
    assert result["action"] == "cancel"
    assert result["task_ids"] == ids[:3]  # oldest first
    assert result["count"] == 3 and result["remaining"] == 2
    for task_id in ids[:3]:
        shown = detail(api, personas.client, task_id)
        assert shown["status"] == "CANCELLED"
        assert shown["cancellation_reason"] == "junk"
        assert shown["cancelled_by"] == "client:client-1"
        assert shown["events"][-1]["from_status"] == "FAILED"
        assert shown["attempts"][0]["outcome"] == "failed"  # the attempt's story is kept
    assert dead_ids(api, personas.client) == list(reversed(ids[3:]))
    rest = bulk(api, personas.client, DISCARD, filter={})
    assert rest["task_ids"] == ids[3:] and rest["remaining"] == 0
    assert rest["count"] == 2
    assert dead_ids(api, personas.client) == []
    assert dead_ids(api, personas.other_client) == theirs
    shown = detail(api, personas.client, ids[3])
    assert shown["cancellation_reason"] == "discarded from the dead-letter view"


def test_cancel_by_ids_skips_what_it_may_not_touch(
    app: Flask, api: Api, personas: Personas, agent: tuple[str, Persona]
) -> None:
    ids = failed_tasks(api, personas.client, agent, 2)
    pending = api.submit(personas.client, capability_required="idle-v1")["task_id"]
    [theirs] = failed_tasks(api, personas.other_client, agent, 1)
    asked = [ids[0], pending, "task_nope", theirs, ids[1], ids[0]]
    result = bulk(api, personas.client, DISCARD, task_ids=asked)
    assert result["task_ids"] == ids and result["count"] == 2
    assert result["skipped"] == [
        {"task_id": pending, "reason": "is PENDING, not FAILED"},
        {"task_id": "task_nope", "reason": "not found"},
        {"task_id": theirs, "reason": "not found"},
    ]
    assert load(app, Task, pending).status == "PENDING"
    assert load(app, Task, theirs).status == "FAILED"
    # Acting again on the same ids does nothing and says why.
    with unchanged(app):
        again = bulk(api, personas.client, DISCARD, task_ids=ids)
    assert again["count"] == 0
    assert [s["reason"] for s in again["skipped"]] == ["is CANCELLED, not FAILED"] * 2


def test_an_admin_may_act_on_any_clients_tasks(
    app: Flask, api: Api, personas: Personas, agent: tuple[str, Persona]
) -> None:
    mine = failed_tasks(api, personas.client, agent, 1)
    theirs = failed_tasks(api, personas.other_client, agent, 1)
    result = bulk(api, personas.admin, REQUEUE, task_ids=mine + theirs)
    assert result["count"] == 2 and result["skipped"] == []
    # The requeue event (routing may have assigned the task since, in another event).
    [event] = [
        e
        for e in detail(api, personas.admin, theirs[0])["events"]
        if (e["from_status"], e["to_status"]) == ("FAILED", "PENDING")
    ]
    assert event["actor"].startswith("admin:")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task_ids": ["task_x"], "filter": {}}, "task_ids"),
        ({}, "task_ids"),
        ({"task_ids": [f"task_{n}" for n in range(501)]}, "task_ids"),
        ({"task_ids": []}, "task_ids"),
        ({"task_ids": [""]}, "task_ids"),
        ({"task_ids": ["x" * 41]}, "task_ids"),
        ({"task_ids": "task_x"}, "task_ids"),
        ({"task_ids": [1]}, "task_ids"),
        ({"filter": {"status": "PENDING"}}, "filter"),
        ({"filter": {"priority": 0}}, "filter"),
        ({"filter": {"created_after": "yesterday"}}, "filter"),
        ({"filter": "all"}, "filter"),
        ({"filter": {}, "limit": 0}, "limit"),
        ({"filter": {}, "limit": 1001}, "limit"),
        ({"filter": {}, "reason": "x" * 2001}, "reason"),
        ({"filter": {}, "everything": True}, "everything"),
    ],
)
def test_it_refuses_a_malformed_bulk_request_and_changes_nothing(
    app: Flask,
    api: Api,
    personas: Personas,
    agent: tuple[str, Persona],
    body: dict[str, Any],
    field: str,
) -> None:
    failed_tasks(api, personas.client, agent, 1)
    with unchanged(app):
        for url in (REQUEUE, DISCARD):
            assert_error(api.post(url, personas.client, json=body), 422, "validation_error", field)


def test_500_ids_are_accepted(app: Flask, api: Api, personas: Personas) -> None:
    ids = [f"task_{n}" for n in range(500)]
    result = bulk(api, personas.client, DISCARD, task_ids=ids)
    assert result["count"] == 0 and len(result["skipped"]) == 500


def test_agents_and_strangers_cannot_use_the_bulk_actions(
    app: Flask, api: Api, personas: Personas, agent: tuple[str, Persona]
) -> None:
    ids = failed_tasks(api, personas.client, agent, 1)
    with unchanged(app):
        for url in (REQUEUE, DISCARD):
            assert_error(api.post(url, agent[1], json={"task_ids": ids}), 403, "forbidden")
            assert_error(api.post(url, personas.fleet, json={"filter": {}}), 403, "forbidden")
            assert_error(api.post(url, json={"task_ids": ids}), 401)
        result = bulk(api, personas.other_client, REQUEUE, filter={"client_id": "client-1"})
        assert result["count"] == 0 and result["remaining"] == 0


def test_a_filter_by_creation_time_picks_the_window(
    app: Flask, api: Api, personas: Personas, agent: tuple[str, Persona]
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        early = failed_tasks(api, personas.client, agent, 1)
        clock.shift(timedelta(hours=1))
        late = failed_tasks(api, personas.client, agent, 1)
    cutoff = (T0 + timedelta(minutes=30)).isoformat()
    result = bulk(api, personas.client, REQUEUE, filter={"created_after": cutoff})
    assert result["task_ids"] == late
    assert load(app, Task, early[0]).status == "FAILED"
    assert parse_time(cutoff) > T0
