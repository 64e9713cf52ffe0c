"""Task dependencies in the services: blocking, unblocking, output passing, cascades, and
a 1,000-task DAG whose completions cost a bounded number of SQL statements."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event

from app.extensions import db
from app.lib.clock import utcnow
from app.models import Agent, Task, TaskDependency, TaskEvent, TaskStatus
from app.services import cancellation, dead_letter, dispatch, lifecycle, reports, routing
from app.services.attempts import record_completion
from app.services.errors import InvalidInput
from app.services.settings import settings
from tests.services.conftest import Actors
from tests.services.factories import make_agent, make_task, task_fields


def fresh(task_id: str) -> Task:
    db.session.expire_all()
    task = db.session.get(Task, task_id)
    assert task is not None
    return task


def status(task_id: str) -> str:
    return fresh(task_id).status


def events(task_id: str) -> list[TaskEvent]:
    return list(
        db.session.scalars(
            db.select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(TaskEvent.id)
        )
    )


def run(actors: Actors, agent: Agent, task_id: str, now: datetime, **result: Any) -> Task:
    """Claim ``task_id`` (it must be the next claimable task) and complete it."""
    claimed = dispatch.claim_tasks(actors.fleet, agent.id, 1, now=now)
    assert [t.id for t in claimed] == [task_id]
    return reports.complete_task(actors.fleet, task_id, result, now=now)


def fail(
    actors: Actors, agent: Agent, task_id: str, now: datetime, retryable: bool = False
) -> None:
    claimed = dispatch.claim_tasks(actors.fleet, agent.id, 1, now=now)
    assert [t.id for t in claimed] == [task_id]
    reports.fail_task(actors.fleet, task_id, "boom", retryable=retryable, now=now)


def claimable_ids(now: datetime) -> set[str]:
    """report-v1 tasks an agent could start now: routed to one (ASSIGNED), or waiting to be."""
    waiting = routing.routable("report-v1", now).with_only_columns(Task.id)
    assigned = db.select(Task.id).where(
        Task.status == TaskStatus.ASSIGNED, Task.capability_required == "report-v1"
    )
    return set(db.session.scalars(waiting)) | set(db.session.scalars(assigned))


def assigned_ids(agent: Agent) -> set[str]:
    """The tasks routed to ``agent`` and not started yet."""
    return set(
        db.session.scalars(
            db.select(Task.id).where(
                Task.status == TaskStatus.ASSIGNED, Task.assigned_agent_id == agent.id
            )
        )
    )


def assert_routed(task_id: str, agent: Agent, *, released: bool = True) -> Task:
    """The task became PENDING (``released``: from BLOCKED) and, in the same commit, was
    routed to ``agent``: its last two events read → PENDING → ASSIGNED."""
    task = fresh(task_id)
    assert (task.status, task.assigned_agent_id) == (TaskStatus.ASSIGNED, agent.id)
    *_, pending, assigned = events(task_id)
    assert pending.to_status == TaskStatus.PENDING
    if released:
        assert pending.from_status == TaskStatus.BLOCKED
    assert (assigned.from_status, assigned.to_status, assigned.actor) == (
        TaskStatus.PENDING,
        TaskStatus.ASSIGNED,
        routing.ROUTER,
    )
    assert assigned.at == pending.at == task.assigned_at
    assert assigned.data["routing"]["winner"] == agent.id
    return task


def test_it_blocks_a_task_until_its_dependency_completes_then_passes_the_output(
    actors: Actors,
) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    first = make_task(actors.client, t)
    second = make_task(
        actors.client,
        t,
        depends_on=[first.id],
        input_data={
            "n": {"$from": first.id, "path": "a.b.1"},
            "all": {"$from": first.id},
            "keep": [1, {"$from": first.id, "path": "a"}],
        },
    )
    assert second.status == TaskStatus.BLOCKED and second.pending_dependencies == 1
    [created] = events(second.id)
    assert created.from_status is None and created.to_status == TaskStatus.BLOCKED
    assert created.reason == "submitted: waiting for 1 dependency"
    assert created.data == {"depends_on": [first.id]}
    assert claimable_ids(t) == {first.id}
    assert assigned_ids(agent) == {first.id}

    done_at = t + timedelta(seconds=5)
    run(actors, agent, first.id, done_at, a={"b": [10, 20]})
    # Released and routed (to the agent whose slot the completion freed) in one commit.
    unblocked = assert_routed(second.id, agent)
    assert unblocked.pending_dependencies == 0
    assert unblocked.input_data == {
        "n": 20,
        "all": {"a": {"b": [10, 20]}},
        "keep": [1, {"b": [10, 20]}],
    }
    # It enters the queue when it is released, not when it was submitted.
    assert unblocked.enqueued_at == done_at
    assert unblocked.queue_key == dispatch.queue_key(5, done_at, settings.aging_seconds_per_level)
    released = events(second.id)[-2]
    assert (released.from_status, released.to_status, released.actor, released.reason) == (
        TaskStatus.BLOCKED,
        TaskStatus.PENDING,
        "system",
        "dependencies completed",
    )
    assert claimable_ids(done_at) == {second.id}


def test_it_waits_for_every_dependency(actors: Actors) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    a, b = make_task(actors.client, t), make_task(actors.client, t + timedelta(seconds=1))
    sink = make_task(actors.client, t, depends_on=[a.id, b.id, a.id])  # duplicates count once
    assert sink.pending_dependencies == 2
    run(actors, agent, a.id, t + timedelta(seconds=2))
    assert fresh(sink.id).status == TaskStatus.BLOCKED
    assert fresh(sink.id).pending_dependencies == 1
    run(actors, agent, b.id, t + timedelta(seconds=3))
    assert_routed(sink.id, agent)


def test_it_keeps_the_dependent_blocked_while_the_dependency_retries(actors: Actors) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    first = make_task(actors.client, t, max_retries=1, retry_policy="fixed")
    second = make_task(actors.client, t, depends_on=[first.id])
    fail(actors, agent, first.id, t, retryable=True)
    assert status(first.id) == TaskStatus.PENDING  # a retry is not an end
    assert status(second.id) == TaskStatus.BLOCKED
    run(actors, agent, first.id, t + timedelta(seconds=11), ok=True)
    assert_routed(second.id, agent)


def test_it_cancels_everything_downstream_of_a_failure_in_one_commit(actors: Actors) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    root = make_task(actors.client, t)
    middle = make_task(actors.client, t, depends_on=[root.id])
    leaf = make_task(actors.client, t, depends_on=[middle.id])
    other = make_task(actors.client, t, depends_on=[middle.id, root.id])
    fail(actors, agent, root.id, t + timedelta(seconds=1))

    assert status(root.id) == TaskStatus.FAILED
    for task_id, cause in ((middle.id, root.id), (leaf.id, middle.id), (other.id, root.id)):
        task = fresh(task_id)
        assert task.status == TaskStatus.CANCELLED
        assert task.cancellation_reason == f"dependency {cause} failed"
        assert task.cancelled_by == "system" and task.cancelled_at is not None
        last = events(task_id)[-1]
        assert (last.from_status, last.actor) == (TaskStatus.BLOCKED, "system")
        assert last.reason == f"dependency {cause} failed"


@pytest.mark.parametrize("end", ["cancelled", "expired"])
def test_it_cascades_a_cancelled_or_expired_dependency(actors: Actors, end: str) -> None:
    t = utcnow()
    root = make_task(actors.client, t, expires_in_seconds=60)
    child = make_task(actors.client, t, depends_on=[root.id])
    if end == "cancelled":
        cancellation.cancel_task(actors.client, root.id, "not needed", now=t)
    else:
        assert lifecycle.expire_waiting_tasks(t + timedelta(seconds=61)) == 1
    assert status(root.id) in (TaskStatus.CANCELLED, TaskStatus.EXPIRED)
    assert fresh(child.id).cancellation_reason == f"dependency {root.id} failed"


def test_it_runs_a_dependent_anyway_when_asked_with_null_for_the_failed_output(
    actors: Actors,
) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    bad = make_task(actors.client, t)
    good = make_task(actors.client, t + timedelta(seconds=1))
    sink = make_task(
        actors.client,
        t,
        depends_on=[bad.id, good.id],
        on_dependency_failure="run",
        input_data={"bad": {"$from": bad.id, "path": "x"}, "good": {"$from": good.id}},
    )
    fail(actors, agent, bad.id, t + timedelta(seconds=2))
    assert fresh(sink.id).status == TaskStatus.BLOCKED
    assert fresh(sink.id).pending_dependencies == 1
    run(actors, agent, good.id, t + timedelta(seconds=3), v=1)
    released = assert_routed(sink.id, agent)
    assert released.input_data == {"bad": None, "good": {"v": 1}}


def test_it_fails_a_task_whose_reference_has_no_such_path_and_cascades(actors: Actors) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    first = make_task(actors.client, t)
    second = make_task(
        actors.client,
        t,
        depends_on=[first.id],
        max_retries=5,
        input_data={"x": {"$from": first.id, "path": "items.3"}},
    )
    third = make_task(actors.client, t, depends_on=[second.id])
    run(actors, agent, first.id, t, items=[1, 2])

    failed = fresh(second.id)
    assert failed.status == TaskStatus.FAILED and failed.retry_count == 0
    assert failed.error_message is not None
    assert first.id in failed.error_message and "'items.3'" in failed.error_message
    assert failed.input_data == {"x": {"$from": first.id, "path": "items.3"}}
    assert fresh(third.id).cancellation_reason == f"dependency {second.id} failed"


def test_it_starts_a_task_whose_dependencies_already_ended(actors: Actors) -> None:
    t = utcnow()
    # Two slots for the two tasks that start at once; trusted, so its one failure below
    # leaves it off probation (one task at a time).
    agent = make_agent(actors.fleet, t, slots=2, trust=0.9)
    done = make_task(actors.client, t)
    run(actors, agent, done.id, t, answer=42)
    broken = make_task(actors.client, t + timedelta(seconds=1))
    fail(actors, agent, broken.id, t + timedelta(seconds=1))

    ready = make_task(
        actors.client,
        t,
        depends_on=[done.id],
        input_data={"a": {"$from": done.id, "path": "answer"}},
    )
    assert ready.status == TaskStatus.ASSIGNED and ready.input_data == {"a": 42}
    # Never BLOCKED: submitted PENDING and routed in the same commit.
    assert [(e.to_status, e.reason) for e in events(ready.id)] == [
        (TaskStatus.PENDING, "submitted"),
        (TaskStatus.ASSIGNED, "routed to agent (round_robin)"),
    ]
    assert assigned_ids(agent) == {ready.id}

    doomed = make_task(actors.client, t, depends_on=[done.id, broken.id])
    assert doomed.status == TaskStatus.CANCELLED
    assert doomed.cancellation_reason == f"dependency {broken.id} failed"
    assert [e.to_status for e in events(doomed.id)] == [TaskStatus.BLOCKED, TaskStatus.CANCELLED]

    anyway = make_task(
        actors.client,
        t,
        depends_on=[broken.id],
        on_dependency_failure="run",
        input_data={"a": {"$from": broken.id}},
    )
    assert anyway.status == TaskStatus.ASSIGNED and anyway.input_data == {"a": None}
    assert [e.to_status for e in events(anyway.id)] == [TaskStatus.PENDING, TaskStatus.ASSIGNED]
    assert assigned_ids(agent) == {ready.id, anyway.id}


def test_it_counts_a_dependency_once_when_a_failed_one_is_requeued_or_discarded(
    actors: Actors,
) -> None:
    t = utcnow()
    # Two slots for the two sinks released at the end; trusted, so its two failures leave
    # it off probation (one task at a time).
    agent = make_agent(actors.fleet, t, slots=2, trust=0.9)
    slow_agent = make_agent(actors.fleet, t, capabilities=("slow-v1",))
    flaky = make_task(actors.client, t)
    slow = make_task(actors.client, t, capability_required="slow-v1")
    sink = make_task(actors.client, t, depends_on=[flaky.id, slow.id], on_dependency_failure="run")
    fail(actors, agent, flaky.id, t + timedelta(seconds=2))
    assert fresh(sink.id).pending_dependencies == 1

    # Requeued from the dead-letter view and completed: counted at its first end already.
    dead_letter.requeue(actors.client, task_ids=[flaky.id], now=t + timedelta(seconds=3))
    run(actors, agent, flaky.id, t + timedelta(seconds=4))
    assert fresh(sink.id).status == TaskStatus.BLOCKED
    assert fresh(sink.id).pending_dependencies == 1

    # Discarded (FAILED → CANCELLED): the same.
    other = make_task(actors.client, t + timedelta(seconds=5))
    sink2 = make_task(actors.client, t, depends_on=[other.id, slow.id], on_dependency_failure="run")
    fail(actors, agent, other.id, t + timedelta(seconds=6))
    dead_letter.discard(actors.client, task_ids=[other.id], now=t + timedelta(seconds=7))
    assert fresh(sink2.id).pending_dependencies == 1

    run(actors, slow_agent, slow.id, t + timedelta(seconds=8))
    assert_routed(sink.id, agent)
    assert_routed(sink2.id, agent)


def test_a_task_waiting_for_a_requeued_dependency_is_released_when_it_completes(
    actors: Actors,
) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    dep = make_task(actors.client, t)
    fail(actors, agent, dep.id, t + timedelta(seconds=1))
    dead_letter.requeue(actors.client, task_ids=[dep.id], now=t + timedelta(seconds=2))
    # Submitted after the dependency's first end: that end was never counted for it.
    child = make_task(actors.client, t + timedelta(seconds=3), depends_on=[dep.id])
    assert status(child.id) == TaskStatus.BLOCKED

    run(actors, agent, dep.id, t + timedelta(seconds=4))

    assert_routed(child.id, agent)


def test_a_cancelled_blocked_task_cancels_its_own_dependents(actors: Actors) -> None:
    t = utcnow()
    root = make_task(actors.client, t)
    blocked = make_task(actors.client, t, depends_on=[root.id])
    below = make_task(actors.client, t, depends_on=[blocked.id])
    cancellation.cancel_task(actors.client, blocked.id, "changed my mind", now=t)
    assert status(blocked.id) == TaskStatus.CANCELLED
    assert fresh(below.id).cancellation_reason == f"dependency {blocked.id} failed"
    assert status(root.id) == TaskStatus.PENDING


@pytest.mark.parametrize(
    ("depends_on", "input_data", "field", "named"),
    [
        (["task_nope"], {}, "depends_on", "task_nope"),
        (["@0"], {}, "depends_on", "@0"),
        ([], {"x": {"$from": "task_else"}}, "input_data.x", "task_else"),
        ([], {"x": {"$from": "t", "pth": "a"}}, "input_data.x", "path"),
        ([], {"x": [{"$from": 3}]}, "input_data.x.0", "$from"),
    ],
)
def test_it_refuses_bad_dependencies_and_references_and_creates_nothing(
    actors: Actors, depends_on: list[str], input_data: dict[str, Any], field: str, named: str
) -> None:
    t = utcnow()
    with pytest.raises(InvalidInput) as caught:
        make_task(actors.client, t, depends_on=depends_on, input_data=input_data)
    assert named in caught.value.message
    assert [d["field"] for d in caught.value.details] == [field]
    db.session.rollback()
    assert db.session.scalar(db.select(db.func.count()).select_from(Task)) == 0


def test_it_refuses_another_clients_task_even_for_an_admin(actors: Actors) -> None:
    t = utcnow()
    theirs = make_task(actors.other_client, t)
    mine = make_task(actors.client, t)
    with pytest.raises(InvalidInput) as caught:
        make_task(actors.client, t, depends_on=[mine.id, theirs.id])
    assert theirs.id in caught.value.message and mine.id not in caught.value.message
    db.session.rollback()
    with pytest.raises(InvalidInput):
        make_task(actors.admin, t, client_id="client-1", depends_on=[theirs.id])
    db.session.rollback()
    ok = make_task(actors.admin, t, client_id="client-2", depends_on=[theirs.id])
    assert ok.status == TaskStatus.BLOCKED


def test_it_leaves_from_objects_alone_in_tasks_the_system_builds(actors: Actors) -> None:
    """A chain step or schedule run names no dependencies: its input is data (a chain step
    carries an agent's result, which may hold anything)."""
    fields = task_fields(input_data={"previous_output": {"$from": "whatever", "x": 1}})
    del fields["depends_on"]
    task = dispatch.build_task(actors.admin, {**fields, "client_id": "client-1"}, now=utcnow())
    db.session.commit()
    assert fresh(task.id).status == TaskStatus.PENDING
    assert fresh(task.id).input_data == {"previous_output": {"$from": "whatever", "x": 1}}


def batch(actors: Actors, items: list[dict[str, Any]], *, atomic: bool = False, now: datetime):
    return dispatch.submit_batch(
        actors.client, [task_fields(**item) for item in items], atomic=atomic, now=now
    )


def test_a_batch_links_items_by_index_in_any_order(actors: Actors) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    outcome = batch(
        actors,
        [
            {"depends_on": ["@2"], "input_data": {"v": {"$from": "@2", "path": "v"}}},
            {"depends_on": ["@0", "@2"]},
            {},
        ],
        now=t,
    )
    assert outcome.failed == []
    first, second, third = (task for _, task in outcome.submitted)
    assert [i for i, _ in outcome.submitted] == [0, 1, 2]
    assert (first.status, second.status, third.status) == ("BLOCKED", "BLOCKED", "ASSIGNED")
    assert assigned_ids(agent) == {third.id}
    assert first.input_data == {"v": {"$from": third.id, "path": "v"}}
    edges = set(db.session.execute(db.select(TaskDependency.task_id, TaskDependency.depends_on_id)))
    assert edges == {(first.id, third.id), (second.id, first.id), (second.id, third.id)}
    run(actors, agent, third.id, t, v="x")
    assert fresh(first.id).input_data == {"v": "x"}
    run(actors, agent, first.id, t)
    assert_routed(second.id, agent)


def test_a_batch_reports_cycles_and_what_depends_on_failed_items(actors: Actors) -> None:
    t = utcnow()
    items = [
        {"depends_on": ["@1"]},  # 0: cycle 0 → 1 → 2 → 0
        {"depends_on": ["@2"]},
        {"depends_on": ["@0"]},
        {"depends_on": ["@2"]},  # 3: behind the cycle
        {"depends_on": ["@3"]},  # 4: behind 3
        {"depends_on": ["@5"]},  # 5: itself
        {"depends_on": ["@12"]},  # 6: no such item
        {"depends_on": ["task_nope"]},  # 7: unknown
        {"depends_on": ["@7"]},  # 8: behind 7
        {},  # 9: fine
    ]
    outcome = batch(actors, items, now=t)
    assert [i for i, _ in outcome.submitted] == [9]
    failed = {f["index"]: f for f in outcome.failed}
    assert sorted(failed) == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    for i in (0, 1, 2):
        assert "cycle through items @0, @1, @2" in failed[i]["error"]
        assert failed[i]["details"][0]["field"] == f"tasks[{i}].depends_on"
    assert failed[3]["error"] == "depends on failed item @2"
    assert failed[4]["error"] == "depends on failed item @3"
    assert "@5" in failed[5]["error"] and "@12" in failed[6]["error"]
    assert "task_nope" in failed[7]["error"]
    assert failed[8]["error"] == "depends on failed item @7"

    with pytest.raises(InvalidInput) as caught:
        batch(actors, items, atomic=True, now=t)
    assert "nothing was created" in caught.value.message
    assert any("@0, @1, @2" in d["message"] for d in caught.value.details)
    assert db.session.scalar(db.select(db.func.count()).select_from(Task)) == 1


def test_a_batch_item_behind_an_item_that_starts_cancelled_ends_cancelled_too(
    actors: Actors,
) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    broken = make_task(actors.client, t)
    fail(actors, agent, broken.id, t)
    outcome = batch(
        actors,
        [
            {"depends_on": [broken.id]},
            {"depends_on": ["@0"]},
            {"depends_on": ["@0"], "on_dependency_failure": "run", "input_data": {"$from": "@0"}},
        ],
        now=t,
    )
    doomed, behind, anyway = (fresh(task.id) for _, task in outcome.submitted)
    assert doomed.status == TaskStatus.CANCELLED
    assert behind.status == TaskStatus.CANCELLED
    assert behind.cancellation_reason == f"dependency {doomed.id} failed"
    assert anyway.status == TaskStatus.ASSIGNED and anyway.input_data == {}
    assert assigned_ids(agent) == {anyway.id}


# ---------------------------------------------------------------------------------------
# A 1,000-task DAG: root → 988 middle tasks → 10 aggregators (≤ 100 each) → one sink
# ---------------------------------------------------------------------------------------

MIDDLE = 988


@contextmanager
def counting_statements() -> Iterator[list[str]]:
    """The SQL statements sent to the database inside the block (an executemany is one).

    On SQLite the ORM inserts rows with an autoincrement key one at a time (it cannot
    batch them and still learn each key in order), so the task_events rows, one per
    transition, are left out there; PostgreSQL batches them into one statement.
    """
    statements: list[str] = []
    sqlite = db.engine.dialect.name == "sqlite"

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not (sqlite and statement.startswith("INSERT INTO task_events")):
            statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", count)


def build_dag(actors: Actors, t: datetime) -> tuple[Task, list[str], list[str], str]:
    """1,000 tasks: a root, 988 tasks after it, 10 that each take up to 100 of their
    outputs, and a sink after those 10 (depends_on holds at most 100 ids)."""
    root = make_task(actors.client, t)
    middle: list[str] = []
    for start in range(0, MIDDLE, 100):
        size = min(100, MIDDLE - start)
        outcome = batch(actors, [{"depends_on": [root.id]}] * size, atomic=True, now=t)
        middle += [task.id for _, task in outcome.submitted]
    groups = [middle[i : i + 100] for i in range(0, MIDDLE, 100)]
    aggregators = [
        {"depends_on": group, "input_data": {"parts": [{"$from": m, "path": "n"} for m in group]}}
        for group in groups
    ]
    sink = {"depends_on": [f"@{i}" for i in range(len(groups))], "input_data": {"$from": "@0"}}
    outcome = batch(actors, [*aggregators, sink], atomic=True, now=t)
    ids = [task.id for _, task in outcome.submitted]
    assert db.session.scalar(db.select(db.func.count()).select_from(Task)) == 1000
    return root, middle, ids[:-1], ids[-1]


def test_a_thousand_task_dag_completes_with_a_bounded_number_of_statements(
    actors: Actors, record_property: Any
) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t, slots=1000)
    root, middle, aggregators, sink = build_dag(actors, t)

    # Fan-out: the root's completion releases 988 tasks in its own commit and routes them
    # in one pass, a fixed cost however many it assigns: the routing row, the candidates,
    # their loads, the tasks, one UPDATE (and on PostgreSQL one INSERT of the ASSIGNED
    # events). Measured: 24 statements on SQLite, 26 on PostgreSQL (16 and 17 before
    # routing and trust; trust's record of the completion adds 3).
    dispatch.claim_tasks(actors.fleet, agent.id, 1, now=t)
    with counting_statements() as fan_out:
        reports.complete_task(actors.fleet, root.id, {"n": 0}, now=t)
    assert len(fan_out) <= 28, fan_out
    assert claimable_ids(t) == set(middle)
    # Routed in that same commit, up to one routing pass; the rest wait for the next pass,
    # which the claim below makes.
    routed = assigned_ids(agent)
    assert routed < set(middle) and len(routed) == routing.ROUTE_BATCH
    assert len(dispatch.claim_tasks(actors.fleet, agent.id, 1000, now=t)) == MIDDLE

    # Fan-in, one completion at a time: the 100th of a group also releases its aggregator
    # (resolving its 100 references in one query) and routes it (one pass, as above): a
    # fixed number of statements more, never more. Measured: 12..21 on SQLite, 12..23 on
    # PostgreSQL (10..14 and 10..15 before routing and trust).
    per_completion = []
    for task_id in middle[:200]:
        with counting_statements() as statements:
            reports.complete_task(actors.fleet, task_id, {"n": 1}, now=t)
        per_completion.append(len(statements))
    assert max(per_completion) <= 24, per_completion
    assert max(per_completion) - min(per_completion) <= 12, per_completion
    released = assert_routed(aggregators[0], agent)
    assert released.input_data == {"parts": [1] * 100}

    # The other 788 completing in one commit: one round, one UPDATE per distinct count, and
    # one routing pass for the 8 aggregators released (measured: 13 on SQLite, 15 on
    # PostgreSQL; 8 and 9 before routing).
    for task in db.session.scalars(db.select(Task).where(Task.id.in_(middle[200:]))):
        record_completion(task, {"n": 1}, actor="test", now=t)
    db.session.flush()
    with counting_statements() as fan_in:
        db.session.commit()
    assert len(fan_in) <= 20, fan_in
    assert {status(a) for a in aggregators} == {TaskStatus.ASSIGNED}
    assert assigned_ids(agent) == set(aggregators)

    claimed = dispatch.claim_tasks(actors.fleet, agent.id, 100, now=t)
    assert {c.id for c in claimed} == set(aggregators)
    for i, task_id in enumerate(aggregators):
        reports.complete_task(actors.fleet, task_id, {"aggregator": i}, now=t)
    done = assert_routed(sink, agent)
    assert done.input_data == {"aggregator": 0}
    record_property("statements_fan_out", len(fan_out))
    record_property("statements_per_completion_max", max(per_completion))
    record_property("statements_fan_in_commit", len(fan_in))
    print(
        f"\nfan-out release of 988: {len(fan_out)} statements; one completion: "
        f"{min(per_completion)}..{max(per_completion)}; 788 completions in one commit: "
        f"{len(fan_in)}"
    )


def test_a_failure_at_the_root_of_a_thousand_task_dag_cancels_it_in_one_commit(
    actors: Actors,
) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    root, _, _, sink = build_dag(actors, t)
    dispatch.claim_tasks(actors.fleet, agent.id, 1, now=t)
    with counting_statements() as statements:
        reports.fail_task(actors.fleet, root.id, "boom", retryable=False, now=t)
    # Three levels below the root: a handful of statements a level, not one per task.
    assert len(statements) <= 45, len(statements)
    counts = dict(
        db.session.execute(db.select(Task.status, db.func.count()).group_by(Task.status)).all()
    )
    assert counts == {TaskStatus.FAILED: 1, TaskStatus.CANCELLED: 999}
    assert fresh(sink).cancellation_reason.startswith("dependency task_")
    print(f"\ncascade through 999 tasks: {len(statements)} statements")


def test_it_leaves_no_trace_when_the_completing_transaction_rolls_back(actors: Actors) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    first = make_task(actors.client, t)
    second = make_task(actors.client, t, depends_on=[first.id])
    dispatch.claim_tasks(actors.fleet, agent.id, 1, now=t)
    task = db.session.get(Task, first.id)
    assert task is not None
    record_completion(task, {}, actor="test", now=t)
    db.session.flush()  # the reaction runs before a commit, never on a flush
    db.session.rollback()
    assert status(first.id) == TaskStatus.ACTIVE
    assert status(second.id) == TaskStatus.BLOCKED
    assert fresh(second.id).pending_dependencies == 1


def in_thread(app: Flask, work: Callable[[], None]) -> threading.Thread:
    """Run ``work`` in its own app context (so its own session and transaction)."""

    def target() -> None:
        with app.app_context():
            try:
                work()
            finally:
                db.session.remove()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


@pytest.mark.postgres_only
@pytest.mark.parametrize("first", ["completion", "submit"])
def test_a_dependency_completing_while_a_dependent_is_submitted_is_never_missed(
    app: Flask, actors: Actors, first: str
) -> None:
    """Whichever transaction locks the dependency first, the other waits for it: the
    submit then reads COMPLETED, or the completion's reaction sees the new edge."""
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    dependency = make_task(actors.client, t).id
    dispatch.claim_tasks(actors.fleet, agent.id, 1, now=t)
    db.session.rollback()
    holding, release = threading.Event(), threading.Event()
    created: list[str] = []

    def complete() -> None:
        if first == "completion":
            task = db.session.scalars(
                db.select(Task).where(Task.id == dependency).with_for_update()
            ).one()
            record_completion(task, {"v": 7}, actor="test", now=t)
            db.session.flush()
            holding.set()
            release.wait(5)
            db.session.commit()
        else:
            reports.complete_task(actors.fleet, dependency, {"v": 7}, now=t)

    def submit() -> None:
        fields = task_fields(depends_on=[dependency], input_data={"v": {"$from": dependency}})
        task = dispatch.build_task(actors.client, fields, now=t)
        created.append(task.id)
        if first == "submit":
            db.session.flush()
            holding.set()
            release.wait(5)
        db.session.commit()

    leader = in_thread(app, complete if first == "completion" else submit)
    assert holding.wait(5)
    follower = in_thread(app, submit if first == "completion" else complete)
    follower.join(0.5)
    assert follower.is_alive(), "the second transaction should wait for the first one's lock"
    release.set()
    leader.join(5)
    follower.join(5)
    assert not leader.is_alive() and not follower.is_alive()
    [dependent] = created
    # Released by the completion (submit first), or submitted PENDING (completion first);
    # either way routed to the agent the completion freed, in the same commit.
    released = assert_routed(dependent, agent, released=first == "submit")
    assert released.input_data == {"v": {"v": 7}}
