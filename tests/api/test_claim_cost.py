"""What a claim, a completion and a heartbeat cost: statements per call, and answers without
read-backs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event

from app.extensions import db
from tests.api.support import set_active_tasks, sql_sent
from tests.conftest import IS_POSTGRES, Api, Personas


@contextmanager
def sql_and_events(app: Flask, *names: str) -> Iterator[list[tuple[str, Any]]]:
    """``sql_sent``, with a ("COMMIT", None) entry (or "BEGIN"...) where each named engine
    event fired among the statements."""
    with app.app_context():
        engine = db.engine
    with sql_sent(app) as seen:

        def marker(mark: str) -> Any:
            return lambda _conn: seen.append((mark, None))

        listeners = [(name, marker(name.upper())) for name in names]
        for name, listener in listeners:
            event.listen(engine, name, listener)
        try:
            yield seen
        finally:
            for name, listener in listeners:
                event.remove(engine, name, listener)


def rows_written(seen: list[tuple[str, Any]], prefix: str) -> int:
    """Rows that statements starting with ``prefix`` were sent for."""
    total = 0
    for sql, parameters in seen:
        if sql.startswith(prefix):
            total += len(parameters) if isinstance(parameters, list | tuple) else 1
    return total


def test_an_idle_long_poll_looks_at_the_queue_once(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    started = time.monotonic()
    with sql_sent(app) as seen:
        assert api.claim(agent_id, agent, max_tasks=1, wait_seconds=1) == []
    assert time.monotonic() - started >= 0.9  # it did wait
    # lock_assigned is the statement reading whole task rows.
    looks = [sql for sql, _ in seen if sql.startswith("SELECT tasks.id, tasks.client_id")]
    # One look for reservations when the poll starts; none when it times out with no token.
    assert len(looks) == 1, looks


def test_a_long_poll_takes_a_task_routed_while_it_waits(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    results: list[Any] = []

    def poll() -> None:
        client = app.test_client()  # a client per thread
        response = client.post(
            f"/ains/agents/{agent_id}/tasks/claim",
            headers=agent.headers,
            json={"max_tasks": 1, "wait_seconds": 10},
        )
        results.append(response)

    thread = threading.Thread(target=poll)
    started = time.monotonic()
    thread.start()
    time.sleep(0.5)  # the poll is waiting
    created = api.submit(personas.client)
    thread.join(15)
    assert not thread.is_alive()
    assert time.monotonic() - started < 8  # woken, not timed out
    [response] = results
    assert response.status_code == 200, response.get_json()
    assert [t["task_id"] for t in response.get_json()["tasks"]] == [created["task_id"]]


def test_a_full_agent_long_poll_answers_at_once(app: Flask, api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    api.submit(personas.client)
    assert len(api.claim(agent_id, agent, max_tasks=1)) == 1
    started = time.monotonic()
    assert api.claim(agent_id, agent, max_tasks=1, wait_seconds=5) == []
    assert time.monotonic() - started < 2  # nothing can be routed to it: no wait


def test_a_claim_answers_what_it_wrote(app: Flask, api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet, slots=3)
    ids = [api.submit(personas.client, input_data={"n": n})["task_id"] for n in range(3)]
    with sql_sent(app) as seen:
        claimed = api.claim(agent_id, agent, max_tasks=3)
    assert sorted(t["task_id"] for t in claimed) == sorted(ids)
    last_write = max(i for i, (sql, _) in enumerate(seen) if sql.startswith("UPDATE tasks"))
    # No task row is read back once written (the stop notices read ids only).
    read_back = [s for s, _ in seen[last_write:] if s.startswith("SELECT tasks.id, tasks.client")]
    assert not read_back, read_back
    for task in claimed:
        shown = api.get(f"/ains/tasks/{task['task_id']}", personas.client).get_json()
        assert {k: shown[k] for k in task} == task
        assert task["status"] == "ACTIVE" and task["attempt"] == 1


def test_a_claim_routes_waiting_work_in_a_transaction_of_its_own(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet, slots=2)
    # No free slot: the submits leave the tasks waiting unassigned.
    set_active_tasks(app, agent_id, 2)
    ids = [api.submit(personas.client)["task_id"] for _ in range(2)]
    set_active_tasks(app, agent_id, 0)
    with sql_and_events(app, "commit") as seen:
        claimed = api.claim(agent_id, agent, max_tasks=2)
    assert sorted(t["task_id"] for t in claimed) == sorted(ids)
    sql = [s for s, _ in seen]

    def first(test: Any, start: int = 0) -> int:
        return next(i for i in range(start, len(sql)) if test(sql[i]))

    routing_lock = first(lambda s: s.startswith("SELECT capability_routing."))
    assigned = first(lambda s: s.startswith("UPDATE tasks") and "assigned_agent_id" in s)
    routed = first(lambda s: s == "COMMIT", assigned)
    started = first(lambda s: s.startswith("UPDATE tasks") and "claimed_at" in s, routed)
    # The routing pass (the capability's lock, the assignments) commits before the claim
    # locks its agent and starts the tasks: the lock every router of the capability waits
    # for is not held through the claim's own writes.
    assert routing_lock < assigned < routed < started, sql
    if IS_POSTGRES:  # SQLite renders no FOR UPDATE (its writers take the database's lock)
        agent_lock = first(lambda s: s.startswith("SELECT agents.") and "FOR NO KEY UPDATE" in s)
        assert routed < agent_lock < started, sql
    assert not [s for s in sql[routed:] if s.startswith("SELECT capability_routing.")], sql
    assert rows_written(seen, "UPDATE tasks") == 4  # ASSIGNED, then ACTIVE
    for task_id in ids:
        shown = api.get(f"/ains/tasks/{task_id}", personas.client).get_json()
        assert [e["to_status"] for e in shown["events"]] == ["PENDING", "ASSIGNED", "ACTIVE"]
        assert shown["status"] == "ACTIVE" and shown["assigned_agent_id"] == agent_id


def test_a_claim_leaves_a_reservation_routed_beyond_its_slots(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet, slots=3)
    set_active_tasks(app, agent_id, 3)
    ids = [api.submit(personas.client, priority=5 - n)["task_id"] for n in range(3)]
    set_active_tasks(app, agent_id, 0)
    # Asks for one: routing reserves all three for it (it has three slots), the best starts.
    [first] = api.claim(agent_id, agent, max_tasks=1)
    assert first["task_id"] == ids[0]
    statuses = [api.get(f"/ains/tasks/{i}", personas.client).get_json()["status"] for i in ids]
    assert statuses == ["ACTIVE", "ASSIGNED", "ASSIGNED"]
    assert [t["task_id"] for t in api.claim(agent_id, agent, max_tasks=2)] == ids[1:]


def test_a_heartbeat_answers_without_reading_the_agent_back(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    url = f"/ains/agents/{agent_id}/heartbeat"
    with sql_sent(app) as seen:
        response = api.post(url, agent, json={"status": "ACTIVE"})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    written = max(i for i, (sql, _) in enumerate(seen) if sql.startswith("UPDATE agents"))
    assert not [sql for sql, _ in seen[written:] if sql.startswith("SELECT agents.")], seen
    shown = api.get(f"/ains/agents/{agent_id}", agent).get_json()
    assert body["last_heartbeat"] == shown["last_heartbeat"]
    assert body["agent_status"] == shown["status"] == "AVAILABLE"


@pytest.mark.skipif(not IS_POSTGRES, reason="PostgreSQL only (set TEST_DATABASE_URL)")
def test_a_drained_batch_is_not_converted_again(
    app: Flask, api: Api, personas: Personas, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psycopg's conversion of the multi-row INSERTs of a claim and a batch completion of 32
    tasks is cached (app.extensions.tune_psycopg): the second batch converts nothing."""
    from psycopg import _queries

    agent_id, agent = api.register_agent(personas.fleet, slots=32)
    items = [{"task_type": "report", "capability_required": "report-v1"} for _ in range(32)]
    uncached: list[bytes] = []
    convert = _queries._query2pg_nocache

    def counting(query: bytes, *args: Any) -> Any:
        uncached.append(query)
        return convert(query, *args)

    for batch in range(2):
        response = api.post("/ains/tasks/batch", personas.client, json={"tasks": items})
        assert response.status_code == 201
        if batch == 1:
            monkeypatch.setattr(_queries, "_query2pg_nocache", counting)
        claimed = api.claim(agent_id, agent, max_tasks=32)
        assert len(claimed) == 32
        results = [
            {"task_id": t["task_id"], "result": {}, "attempt": t["attempt"]} for t in claimed
        ]
        response = api.post(
            f"/ains/agents/{agent_id}/tasks/complete", agent, json={"results": results}
        )
        assert response.status_code == 200
        assert all(item["ok"] for item in response.get_json()["results"])
    assert uncached == [], [q[:80] for q in uncached]


def test_a_claim_reads_its_stop_notices_before_it_commits(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet, slots=2)
    running = api.submit(personas.client)["task_id"]
    assert [t["task_id"] for t in api.claim(agent_id, agent, max_tasks=1)] == [running]
    asked = api.post(f"/ains/tasks/{running}/cancel", personas.client, json={"reason": "stop"})
    assert asked.status_code < 300, asked.get_json()
    fresh = api.submit(personas.client)["task_id"]
    with sql_and_events(app, "commit") as seen:
        response = api.post(f"/ains/agents/{agent_id}/tasks/claim", agent, json={"max_tasks": 1})
    body = response.get_json()
    assert response.status_code == 200, body
    assert [t["task_id"] for t in body["tasks"]] == [fresh]
    assert body["cancelled_task_ids"] == [running] and body["stop_task_ids"] == [running]
    sql = [s for s, _ in seen]
    notices = [i for i, s in enumerate(sql) if "UNION ALL" in s]
    claim_commit = sql.index("COMMIT", max(i for i, s in enumerate(sql) if s.startswith("UPDATE")))
    # One read of the notices, inside the claim's transaction (no second one after it).
    assert len(notices) == 1 and notices[0] < claim_commit, sql


def test_a_heartbeat_names_capabilities_only_when_work_waits(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    url = f"/ains/agents/{agent_id}/heartbeat"
    with sql_sent(app) as seen:
        assert api.post(url, agent, json={"status": "ACTIVE"}).status_code == 200
    # Nothing waits: one read of the queue (capabilities named inside it), no names read.
    assert not [s for s, _ in seen if s.startswith("SELECT capabilities.")], seen
    # A task waits unassigned (submitted while the agent was full); the slot frees and the
    # next heartbeat routes it.
    set_active_tasks(app, agent_id, 1)
    waiting = api.submit(personas.client)
    assert waiting["status"] == "PENDING"
    set_active_tasks(app, agent_id, 0)
    assert api.post(url, agent, json={"status": "ACTIVE"}).status_code == 200
    shown = api.get(f"/ains/tasks/{waiting['task_id']}", personas.client).get_json()
    assert shown["status"] == "ASSIGNED" and shown["assigned_agent_id"] == agent_id


def test_a_completion_answers_what_it_wrote(app: Flask, api: Api, personas: Personas) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    first = api.submit(personas.client, input_data={"n": 1})
    then = api.submit(personas.client, depends_on=[first["task_id"]])
    assert [t["task_id"] for t in api.claim(agent_id, agent)] == [first["task_id"]]
    with sql_sent(app) as seen:
        response = api.post(
            f"/ains/tasks/{first['task_id']}/complete", agent, json={"result_data": {"ok": 1}}
        )
    answer = response.get_json()
    assert response.status_code == 200, answer
    last_write = max(i for i, (sql, _) in enumerate(seen) if sql.startswith("UPDATE tasks"))
    # The task is not read back after the commit: the answer is the row as written, even
    # with the completion's cascade (its dependent released and routed) in the transaction.
    read_back = [s for s, _ in seen[last_write:] if s.startswith("SELECT tasks.id, tasks.client")]
    assert not read_back, read_back
    shown = api.get(f"/ains/tasks/{first['task_id']}", personas.client).get_json()
    assert {k: shown[k] for k in answer} == answer
    assert answer["status"] == "COMPLETED" and answer["result_data"] == {"ok": 1}
    released = api.get(f"/ains/tasks/{then['task_id']}", personas.client).get_json()
    assert released["status"] == "ASSIGNED" and released["assigned_agent_id"] == agent_id


def test_an_empty_claim_without_a_wait_is_one_transaction(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    running = api.submit(personas.client)["task_id"]
    assert [t["task_id"] for t in api.claim(agent_id, agent)] == [running]
    asked = api.post(f"/ains/tasks/{running}/cancel", personas.client, json={"reason": "stop"})
    assert asked.status_code < 300, asked.get_json()
    set_active_tasks(app, agent_id, 0)  # a free slot, and nothing to route to it
    with sql_and_events(app, "begin") as seen:
        response = api.post(f"/ains/agents/{agent_id}/tasks/claim", agent, json={"wait_seconds": 0})
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["tasks"] == [] and body["cancelled_task_ids"] == [running]
    # The look and its stop notices in one transaction: no second one for the notices.
    assert len([s for s, _ in seen if "UNION ALL" in s]) == 1
    assert len([s for s, _ in seen if s == "BEGIN"]) == 1, [s for s, _ in seen]


def test_a_claim_routes_when_a_slot_frees_between_its_two_looks(
    app: Flask, api: Api, personas: Personas, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.services import dispatch

    agent_id, agent = api.register_agent(personas.fleet)
    set_active_tasks(app, agent_id, 1)  # full: the submit leaves its task waiting
    waiting = api.submit(personas.client)
    assert waiting["status"] == "PENDING"
    real = dispatch.route_for_claim
    seen: list[bool] = []

    def report_lands_meanwhile(*args: Any) -> bool:
        unseen = real(*args)
        seen.append(unseen)
        if len(seen) == 1:
            # The agent's running task is reported between the unlocked look, which saw
            # no free slot and so routed nothing, and the claim's locked one.
            db.session.rollback()
            set_active_tasks(app, agent_id, 0)
        return unseen

    monkeypatch.setattr(dispatch, "route_for_claim", report_lands_meanwhile)
    claimed = api.claim(agent_id, agent, wait_seconds=0)
    assert [t["task_id"] for t in claimed] == [waiting["task_id"]]
    assert seen == [True, False]  # skipped, then routed on the second look


# How another router holds the capability's routing row: locked, or also written (a
# router's round_robin_after), which an INSERT's conflict check would wait for.
HOLDS = {
    "locked": "SELECT capability FROM capability_routing WHERE capability = %s FOR UPDATE",
    "written": "UPDATE capability_routing SET updated_at = now() WHERE capability = %s",
}


@pytest.mark.skipif(not IS_POSTGRES, reason="SQLite has no row locks to hold")
@pytest.mark.parametrize("hold", sorted(HOLDS))
def test_a_submit_does_not_wait_for_a_busy_router_and_the_woken_claim_routes_it(
    app: Flask, api: Api, personas: Personas, hold: str
) -> None:
    agent_id, agent = api.register_agent(personas.fleet)
    first = api.submit(personas.client)  # creates the capability's routing row
    assert first["status"] == "ASSIGNED"
    assert [t["task_id"] for t in api.claim(agent_id, agent)] == [first["task_id"]]
    done = api.post(
        f"/ains/tasks/{first['task_id']}/complete", agent, json={"result_data": {"ok": 1}}
    )
    assert done.status_code == 200, done.get_json()
    out: dict[str, Any] = {}

    def long_poll() -> None:
        started = time.monotonic()
        response = app.test_client().post(
            f"/ains/agents/{agent_id}/tasks/claim",
            json={"max_tasks": 1, "wait_seconds": 10},
            headers=agent.headers,
        )
        out["status"], out["body"] = response.status_code, response.get_json()
        out["elapsed"] = time.monotonic() - started

    with app.app_context():
        engine = db.engine
    poller = threading.Thread(target=long_poll)
    with engine.connect() as router:
        # Another router (a claim, the sweep) holds the capability's routing row.
        router.exec_driver_sql(HOLDS[hold], ("report-v1",))
        poller.start()
        time.sleep(0.5)  # the poll looked at the empty queue and waits
        submitted: dict[str, Any] = {}

        def submit() -> None:
            response = app.test_client().post(
                "/ains/tasks",
                json={"task_type": "report", "capability_required": "report-v1"},
                headers=personas.client.headers,
            )
            submitted.update(response.get_json(), code=response.status_code)

        submitter = threading.Thread(target=submit, daemon=True)
        submitter.start()
        submitter.join(timeout=2)
        # Answered without waiting for the row: committed unrouted, the agent woken.
        assert not submitter.is_alive(), "the submit waited for the routing row"
        task = submitted
        assert task["code"] == 201, task
        assert task["status"] == "PENDING" and task["assigned_agent_id"] is None
        time.sleep(0.5)
        # The woken claim routes what waits: it waits for the row, as routers do.
        assert poller.is_alive()
        router.rollback()
        released = time.monotonic()
    poller.join(timeout=10)
    assert out["status"] == 200, out
    assert [t["task_id"] for t in out["body"]["tasks"]] == [task["task_id"]]
    assert time.monotonic() - released < 3 and out["elapsed"] < 8, out["elapsed"]
    shown = api.get(f"/ains/tasks/{task['task_id']}", personas.client).get_json()
    assert [e["to_status"] for e in shown["events"]] == ["PENDING", "ASSIGNED", "ACTIVE"]
