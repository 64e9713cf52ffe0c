"""POST /ains/agents/{id}/tasks/complete: several results in one call and one transaction.

Each item is applied or refused on its own, with the single complete route's checks and
effects (fencing, cancel confirmation, timeouts, trust, counters, events, webhooks), and
the answers come back in request order.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from werkzeug.test import TestResponse

from app.extensions import db
from app.lib.clock import utcnow
from app.models import (
    Agent,
    Task,
    TaskAttempt,
    TaskEvent,
    TaskStatus,
    TrustRecord,
    WebhookEvent,
)
from app.services.lifecycle import sweep
from tests.api.support import T0, assert_error, load, unchanged
from tests.conftest import Api, Persona, Personas


def batch_url(agent_id: str) -> str:
    return f"/ains/agents/{agent_id}/tasks/complete"


def complete_many(
    api: Api, agent_id: str, persona: Persona, results: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """A batch the API must answer with 200; its per-item answers."""
    response = api.post(batch_url(agent_id), persona, json={"results": results})
    assert response.status_code == 200, response.get_json()
    answers = response.get_json()["results"]
    assert [a["task_id"] for a in answers] == [r["task_id"] for r in results]
    return answers


def claimed(
    api: Api, personas: Personas, count: int, *, slots: int | None = None, **fields: Any
) -> tuple[str, Persona, list[dict[str, Any]]]:
    """``count`` tasks ACTIVE for a fresh agent of the fleet: (agent id, key, claimed tasks).

    The agent has a capability of its own, so no other agent is routed its tasks.
    """
    capability = f"report-{uuid.uuid4().hex[:8]}"
    agent_id, agent = api.register_agent(
        personas.fleet, capabilities=(capability,), slots=slots or count
    )
    ids = [
        api.submit(personas.client, capability_required=capability, **fields)["task_id"]
        for _ in range(count)
    ]
    tasks = api.claim(agent_id, agent, max_tasks=count)
    assert sorted(t["task_id"] for t in tasks) == sorted(ids)
    return agent_id, agent, tasks


def item(task: dict[str, Any], **result: Any) -> dict[str, Any]:
    return {"task_id": task["task_id"], "result": result, "attempt": task["attempt"]}


def rows(app: Flask, model: type[Any], *where: Any, order: Any = None) -> list[Any]:
    with app.app_context():
        query = db.select(model).where(*where)
        if order is not None:
            query = query.order_by(order)
        found = list(db.session.scalars(query))
        for row in found:
            db.session.expunge(row)
        db.session.remove()
    return found


def ok(answer: dict[str, Any]) -> bool:
    if answer["ok"]:
        assert answer == {"task_id": answer["task_id"], "ok": True, "status": "COMPLETED"}
        return True
    assert set(answer) == {"task_id", "ok", "error"} and set(answer["error"]) == {
        "code",
        "message",
    }
    return False


def test_it_completes_several_tasks_as_the_single_route_does(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent, tasks = claimed(api, personas, 3)
    answers = complete_many(api, agent_id, agent, [item(t, n=i) for i, t in enumerate(tasks)])
    assert all(ok(a) for a in answers)
    for i, task in enumerate(tasks):
        shown = api.get(f"/ains/tasks/{task['task_id']}", personas.client).get_json()
        assert shown["status"] == "COMPLETED" and shown["result_data"] == {"n": i}
        assert shown["progress"] == 100 and shown["lease_expires_at"] is None
        assert shown["timeout_at"] is None and shown["completed_at"] is not None
        [attempt] = shown["attempts"]
        assert attempt["outcome"] == "completed" and attempt["ended_by"] == f"agent:{agent_id}"
        last = shown["events"][-1]
        assert (last["from_status"], last["to_status"], last["actor"]) == (
            "ACTIVE",
            "COMPLETED",
            f"agent:{agent_id}",
        )
        assert last["data"]["attempt"] == 1 and last["data"]["run_seconds"] >= 0
    stored = load(app, Agent, agent_id)
    assert stored.active_tasks == 0
    assert stored.total_tasks_completed == 3 and stored.total_tasks_failed == 0
    assert stored.avg_completion_time_seconds is not None
    assert stored.last_task_completed_at is not None
    assert stored.trust_score == pytest.approx(0.56)
    records = rows(app, TrustRecord, TrustRecord.agent_id == agent_id, order=TrustRecord.id)
    assert [r.task_id for r in records] == [t["task_id"] for t in tasks]
    assert [(r.trust_score_before, r.trust_score_after) for r in records] == [
        (0.5, 0.52),
        (0.52, 0.54),
        (0.54, 0.56),
    ]


def test_its_effects_equal_those_of_single_completes(
    app: Flask, api: Api, personas: Personas
) -> None:
    """Trust (clamped at 1), counters, events and attempts: the same rows, either way."""
    effects = []
    for batched in (False, True):
        agent_id, agent, tasks = claimed(api, personas, 3)
        adjust = api.post(
            f"/ains/agents/{agent_id}/trust/adjust",
            personas.admin,
            json={"delta": 0.47, "reason": "near the top"},
        )
        assert adjust.status_code == 201, adjust.get_json()
        if batched:
            answers = complete_many(api, agent_id, agent, [item(t, v=1) for t in tasks])
            assert all(a["ok"] for a in answers)
        else:
            for task in tasks:
                body = {"result_data": {"v": 1}, "attempt": task["attempt"]}
                response = api.post(f"/ains/tasks/{task['task_id']}/complete", agent, json=body)
                assert response.status_code == 200
        ids = [t["task_id"] for t in tasks]
        stored = load(app, Agent, agent_id)
        records = rows(
            app,
            TrustRecord,
            TrustRecord.agent_id == agent_id,
            TrustRecord.event_type == "task_completed",
            order=TrustRecord.id,
        )
        events = rows(app, TaskEvent, TaskEvent.task_id.in_(ids), order=TaskEvent.id)
        attempts = rows(app, TaskAttempt, TaskAttempt.task_id.in_(ids))
        effects.append(
            {
                "agent": (
                    stored.active_tasks,
                    stored.total_tasks_completed,
                    stored.total_tasks_failed,
                    stored.trust_score,
                ),
                "trust": [
                    (r.trust_score_before, r.trust_score_after, r.trust_delta) for r in records
                ],
                "ends": sorted(
                    (e.from_status, e.to_status, e.reason, sorted(e.data or {}))
                    for e in events
                    if e.to_status == TaskStatus.COMPLETED
                ),
                "attempts": sorted((a.number, a.outcome) for a in attempts),
            }
        )
    single, batched_effects = effects
    assert batched_effects == single
    assert single["trust"] == [(0.97, 0.99, 0.02), (0.99, 1.0, 0.01), (1.0, 1.0, 0.0)]


def test_it_answers_each_item_on_its_own_in_request_order(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent, tasks = claimed(api, personas, 4)
    other_id, other, [foreign] = claimed(api, personas, 1)
    cancel = api.post(f"/ains/tasks/{tasks[1]['task_id']}/cancel", personas.client, json={})
    assert cancel.status_code == 202
    results = [
        item(tasks[0], a=1),
        item(tasks[1], b=1),  # cancelled meanwhile
        {"task_id": "task_nope", "result": {}},  # unknown
        {**item(tasks[2]), "attempt": 2},  # not its attempt
        item(foreign),  # held by another agent
        item(tasks[0], again=1),  # twice in one batch
        {"task_id": tasks[3]["task_id"], "result": {"d": 1}},  # no attempt: the current one
    ]
    answers = complete_many(api, agent_id, agent, results)
    codes = [None if ok(a) else a["error"]["code"] for a in answers]
    assert codes == [
        None,
        "cancel_requested",
        "not_found",
        "stale_attempt",
        "not_found",
        "validation_error",
        None,
    ]
    assert "results[0]" in answers[5]["error"]["message"]
    assert "attempt 2" in answers[3]["error"]["message"]
    statuses = {
        t.id: (t.status, t.result_data)
        for t in rows(app, Task, Task.id.in_([t["task_id"] for t in [*tasks, foreign]]))
    }
    assert statuses == {
        tasks[0]["task_id"]: ("COMPLETED", {"a": 1}),
        tasks[1]["task_id"]: ("CANCELLED", None),
        tasks[2]["task_id"]: ("ACTIVE", None),
        tasks[3]["task_id"]: ("COMPLETED", {"d": 1}),
        foreign["task_id"]: ("ACTIVE", None),
    }
    stored = load(app, Agent, agent_id)
    assert (stored.active_tasks, stored.total_tasks_completed) == (1, 2)
    assert load(app, Agent, other_id).active_tasks == 1
    # The refused items changed nothing: the untouched task completes afterwards.
    [later] = complete_many(api, agent_id, agent, [item(tasks[2], c=1)])
    assert ok(later)
    [late_foreign] = complete_many(api, other_id, other, [item(foreign)])
    assert ok(late_foreign)


def test_a_task_completed_already_is_a_conflict_and_changes_nothing(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent, tasks = claimed(api, personas, 2)
    assert all(ok(a) for a in complete_many(api, agent_id, agent, [item(t) for t in tasks]))
    with unchanged(app):
        answers = complete_many(api, agent_id, agent, [item(t, second=True) for t in tasks])
    assert [a["error"]["code"] for a in answers] == ["conflict", "conflict"]
    assert "COMPLETED" in answers[0]["error"]["message"]
    assert len(rows(app, TrustRecord, TrustRecord.agent_id == agent_id)) == 2


def test_a_fleet_key_and_an_admin_report_for_the_agent(api: Api, personas: Personas) -> None:
    agent_id, _, tasks = claimed(api, personas, 2)
    [first] = complete_many(api, agent_id, personas.fleet, [item(tasks[0])])
    [second] = complete_many(api, agent_id, personas.admin, [item(tasks[1])])
    assert ok(first) and ok(second)


def test_a_task_of_a_sibling_agent_runs_on_another_agent(
    app: Flask, api: Api, personas: Personas
) -> None:
    """The fleet key acts for both agents, but a batch speaks for the agent it names."""
    agent_id, _, _ = claimed(api, personas, 1)
    _, _, [theirs] = claimed(api, personas, 1)
    with unchanged(app):
        [answer] = complete_many(api, agent_id, personas.fleet, [item(theirs)])
    assert answer["error"]["code"] == "stale_attempt"
    assert "another agent" in answer["error"]["message"]


def test_it_refuses_callers_who_do_not_act_for_the_agent(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, _, [task] = claimed(api, personas, 1)
    other_id, other = api.register_agent(personas.fleet, name="other")
    body = {"results": [item(task)]}
    with unchanged(app):
        assert_error(api.post(batch_url(agent_id), personas.other_fleet, json=body), 404)
        assert_error(api.post(batch_url(agent_id), other, json=body), 404)
        assert_error(api.post(batch_url("agent_nope"), personas.fleet, json=body), 404)
        assert_error(api.post(batch_url(agent_id), personas.client, json=body), 403)
        assert_error(api.post(batch_url(agent_id), None, json=body), 401)
        # The other agent's own key, on its own URL: the task is not its to report.
        [answer] = complete_many(api, other_id, other, [item(task)])
        assert answer["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"results": []}, "results"),
        ({}, "results"),
        ({"results": "x"}, "results"),
        ({"results": [{"task_id": "t", "result": {}}] * 101}, "results"),
        ({"results": [{"task_id": "t", "result": []}]}, "results"),
        ({"results": [{"task_id": "t", "result": "done"}]}, "results"),
        ({"results": [{"task_id": "", "result": {}}]}, "results"),
        ({"results": [{"task_id": "t" * 41, "result": {}}]}, "results"),
        ({"results": [{"task_id": "t", "result": {}, "attempt": 0}]}, "results"),
        ({"results": [{"task_id": "t", "result": {}, "attempt": "1"}]}, "results"),
        ({"results": [{"task_id": 7, "result": {}}]}, "results"),
        ({"results": [{"task_id": "t", "result_data": {}}]}, "results"),
        ({"results": [{"task_id": "t", "result": {}}], "extra": 1}, "extra"),
        ({"results": [{"task_id": "t", "result": {"s": "nul\x00"}}]}, None),
    ],
)
def test_it_refuses_bad_bodies_whole_and_changes_nothing(
    app: Flask, api: Api, personas: Personas, body: dict[str, Any], field: str | None
) -> None:
    agent_id, agent, [task] = claimed(api, personas, 1)
    body = _with_task(body, task["task_id"])
    with unchanged(app):
        assert_error(
            api.post(batch_url(agent_id), agent, json=body), 422, "validation_error", field
        )


def _with_task(body: dict[str, Any], task_id: str) -> dict[str, Any]:
    """The body with its placeholder id "t" replaced by a real task id."""
    results = body.get("results")
    if not isinstance(results, list):
        return body
    return {
        **body,
        "results": [
            {**r, "task_id": task_id} if isinstance(r, dict) and r.get("task_id") == "t" else r
            for r in results
        ],
    }


def test_it_refuses_what_is_not_json_and_changes_nothing(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent, _ = claimed(api, personas, 1)
    with unchanged(app):
        for raw in (b"{", b'{"results": [NaN]}', b"[1, 2]", b'"results"'):
            response = api.post(
                batch_url(agent_id), agent, data=raw, content_type="application/json"
            )
            assert_error(response, 400)
        deep = {"results": [{"task_id": "t", "result": {}}]}
        nested: Any = {}
        for _ in range(80):
            nested = {"x": nested}
        deep["results"][0]["result"] = nested
        assert_error(api.post(batch_url(agent_id), agent, json=deep), 422)


def test_a_hundred_results_fit_in_one_batch(app: Flask, api: Api, personas: Personas) -> None:
    agent_id, agent, tasks = claimed(api, personas, 100, slots=100)
    answers = complete_many(api, agent_id, agent, [item(t, i=i) for i, t in enumerate(tasks)])
    assert all(ok(a) for a in answers)
    stored = load(app, Agent, agent_id)
    assert (stored.active_tasks, stored.total_tasks_completed) == (0, 100)
    assert stored.trust_score == 1.0


def test_a_task_past_its_deadline_times_out_and_the_rest_complete(
    app: Flask, api: Api, personas: Personas
) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        agent_id, agent = api.register_agent(personas.fleet, slots=2)
        short = api.submit(personas.client, timeout_seconds=5, max_retries=0)["task_id"]
        long = api.submit(personas.client, timeout_seconds=600)["task_id"]
        tasks = {t["task_id"]: t for t in api.claim(agent_id, agent, max_tasks=2)}
        clock.move_to(T0 + timedelta(seconds=30))
        answers = complete_many(
            api, agent_id, agent, [item(tasks[short]), item(tasks[long], fine=True)]
        )
    assert answers[0]["error"]["code"] == "conflict"
    assert "timed out" in answers[0]["error"]["message"]
    assert ok(answers[1])
    timed_out = load(app, Task, short)
    assert timed_out.status == "FAILED" and timed_out.result_data is None
    [attempt] = rows(app, TaskAttempt, TaskAttempt.task_id == short)
    assert attempt.outcome == "timed_out"
    stored = load(app, Agent, agent_id)
    assert (stored.active_tasks, stored.total_tasks_completed, stored.total_tasks_failed) == (
        0,
        1,
        1,
    )
    kinds = [r.event_type for r in rows(app, TrustRecord, order=TrustRecord.id)]
    assert sorted(kinds) == ["task_completed", "task_timed_out"]


def test_the_cancelled_task_ends_cancelled_and_frees_its_slot(
    app: Flask, api: Api, personas: Personas
) -> None:
    agent_id, agent, tasks = claimed(api, personas, 2)
    api.post(f"/ains/tasks/{tasks[0]['task_id']}/cancel", personas.client, json={"reason": "no"})
    answers = complete_many(api, agent_id, agent, [item(t, r=1) for t in tasks])
    assert answers[0]["error"]["code"] == "cancel_requested" and ok(answers[1])
    shown = api.get(f"/ains/tasks/{tasks[0]['task_id']}", personas.client).get_json()
    assert shown["status"] == "CANCELLED" and shown["result_data"] is None
    assert "result refused" in shown["cancellation_reason"] or "result refused" in (
        shown["events"][-1]["reason"] or ""
    )
    assert shown["attempts"][0]["outcome"] == "cancelled"
    stored = load(app, Agent, agent_id)
    assert (stored.active_tasks, stored.total_tasks_completed, stored.total_tasks_failed) == (
        0,
        1,
        0,
    )


def test_dependents_chains_webhooks_and_metrics_follow_each_completion(
    app: Flask, api: Api, personas: Personas
) -> None:
    hook = api.post(
        "/ains/webhooks",
        personas.client,
        json={"url": "http://127.0.0.1:9/hook", "events": ["task.completed"]},
    )
    assert hook.status_code == 201, hook.get_json()
    agent_id, agent, tasks = claimed(api, personas, 2, slots=3)
    dependent = api.submit(
        personas.client,
        depends_on=[t["task_id"] for t in tasks],
        input_data={"first": {"$from": tasks[0]["task_id"], "path": "v"}},
    )
    assert dependent["status"] == "BLOCKED"
    answers = complete_many(api, agent_id, agent, [item(t, v=i) for i, t in enumerate(tasks)])
    assert all(ok(a) for a in answers)
    released = api.get(f"/ains/tasks/{dependent['task_id']}", personas.client).get_json()
    assert released["status"] in ("PENDING", "ASSIGNED")
    assert released["input_data"] == {"first": 0}
    events = rows(app, WebhookEvent, WebhookEvent.event == "task.completed")
    assert sorted(e.task_id for e in events) == sorted(t["task_id"] for t in tasks)
    scrape = api.get("/metrics").get_data(as_text=True)
    capability = tasks[0]["capability_required"]
    assert f'ains_tasks_completed_total{{capability="{capability}"}} 2.0' in scrape


def concurrently(*calls: Any) -> list[Any]:
    """Run each call on its own thread, released together; their return values."""
    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        start.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    return results


@pytest.mark.parametrize("sweep_after", [0.0, 0.1, 0.3])
def test_batches_racing_a_timeout_sweep_and_cancels_end_each_task_once(
    app: Flask, personas: Personas, sweep_after: float
) -> None:
    """Two overlapping batches, the sweep (which times every task out) and client cancels,
    all at once: every task ends exactly once, and an item is ok only if its result stood.

    The sweep starts ``sweep_after`` seconds late, so it meets the batches at different
    points of their work (before, amid, after).
    """
    api = Api(app.test_client())
    agent_id, agent, tasks = claimed(api, personas, 20, timeout_seconds=60, max_retries=0)
    ids = [t["task_id"] for t in tasks]
    first = [item(t, by="first") for t in tasks[:12]]
    second = [item(t, by="second") for t in tasks[8:]]

    def post(results: list[dict[str, Any]]) -> TestResponse:
        return app.test_client().post(
            batch_url(agent_id), json={"results": results}, headers=agent.headers
        )

    def sweep_late() -> dict[str, int]:
        time.sleep(sweep_after)
        with app.app_context():
            counts = sweep(now=utcnow() + timedelta(seconds=120))
            db.session.remove()
        return counts

    def cancel_some() -> list[int]:
        client = app.test_client()
        return [
            client.post(
                f"/ains/tasks/{task_id}/cancel", json={}, headers=personas.client.headers
            ).status_code
            for task_id in ids[4:16:2]
        ]

    one, two, _, cancels = concurrently(
        lambda: post(first), lambda: post(second), sweep_late, cancel_some
    )
    assert one.status_code == 200, one.get_json()
    assert two.status_code == 200, two.get_json()
    assert all(status in (200, 202, 409) for status in cancels), cancels
    answers: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for by, response in (("first", one), ("second", two)):
        for answer in response.get_json()["results"]:
            answers.setdefault(answer["task_id"], []).append((by, answer))
    stored = {t.id: t for t in rows(app, Task, Task.id.in_(ids))}
    events = rows(app, TaskEvent, TaskEvent.task_id.in_(ids))
    attempts = rows(app, TaskAttempt, TaskAttempt.task_id.in_(ids))
    completed = 0
    for task_id in ids:
        task = stored[task_id]
        assert task.status in TaskStatus.TERMINAL, (task_id, task.status)
        ends = [e for e in events if e.task_id == task_id and e.to_status in TaskStatus.TERMINAL]
        assert len(ends) == 1, (task_id, [(e.from_status, e.to_status) for e in ends])
        [attempt] = [a for a in attempts if a.task_id == task_id]
        assert attempt.outcome != "running"
        oks = [by for by, answer in answers[task_id] if answer["ok"]]
        assert len(oks) <= 1, answers[task_id]
        if task.status == TaskStatus.COMPLETED:
            completed += 1
            assert attempt.outcome == "completed"
            assert task.result_data == {"by": oks[0]}
        else:
            assert not oks and task.result_data is None
    agent_row = load(app, Agent, agent_id)
    assert agent_row.active_tasks == 0
    assert agent_row.total_tasks_completed == completed
    assert agent_row.total_tasks_completed + agent_row.total_tasks_failed <= len(ids)
    records = rows(app, TrustRecord, TrustRecord.agent_id == agent_id)
    assert sum(r.event_type == "task_completed" for r in records) == completed


@pytest.mark.postgres_only
def test_it_does_not_lock_tasks_it_will_not_complete(
    app: Flask, api: Api, personas: Personas
) -> None:
    """A batch naming another agent's task (a stale or guessed id) answers for it without
    waiting on its row lock, and holds none on it: another writer holding that task is
    not blocked behind the batch, nor the batch behind it."""
    agent_id, agent, [mine] = claimed(api, personas, 1)
    _, _, [foreign] = claimed(api, personas, 1)
    answers: list[list[dict[str, Any]]] = []
    with app.app_context(), db.engine.connect() as other_writer:
        with other_writer.begin():
            other_writer.execute(
                db.select(Task.id).where(Task.id == foreign["task_id"]).with_for_update()
            )

            def send() -> None:
                response = app.test_client().post(
                    batch_url(agent_id),
                    json={"results": [item(mine), item(foreign)]},
                    headers=agent.headers,
                )
                answers.append(response.get_json()["results"])

            batch = threading.Thread(target=send)
            batch.start()
            batch.join(timeout=10)
            finished_while_locked = not batch.is_alive()
        batch.join(timeout=30)
    assert finished_while_locked, "the batch waited on a task it does not hold"
    [[done, refused]] = answers
    assert ok(done) and refused["error"]["code"] == "not_found"
