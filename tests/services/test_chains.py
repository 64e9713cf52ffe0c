"""Chains react to their steps' tasks finishing, in the transaction that finished them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.extensions import db
from app.lib.clock import utcnow
from app.models import (
    Agent,
    ChainStatus,
    Task,
    TaskChain,
    TaskEvent,
    TaskStatus,
    TaskTemplate,
)
from app.services import chains, reports, routing, templates
from app.services.attempts import record_completion
from app.services.cancellation import cancel_task
from app.services.dispatch import claim_tasks
from app.services.errors import CancelRequested, Conflict, InvalidInput, NotFound
from app.services.lifecycle import sweep
from app.services.settings import settings
from app.services.wakeups import wakeups
from tests.services.conftest import Actors
from tests.services.factories import make_agent, task_fields
from tests.services.test_dependencies import in_thread

CAPABILITIES = ("extract-v1", "transform-v1", "load-v1")


def step(capability: str, **fields: Any) -> dict[str, Any]:
    """A step as the API passes it: task fields with the defaults filled in."""
    return task_fields(task_type=capability.split("-")[0], capability_required=capability, **fields)


def make_chain(actors: Actors, now: datetime, *steps: dict[str, Any]) -> TaskChain:
    return chains.create_chain(actors.client, "etl", list(steps), now=now)


def fresh_chain(chain_id: str) -> TaskChain:
    db.session.expire_all()
    chain = db.session.get(TaskChain, chain_id)
    assert chain is not None
    return chain


def step_tasks(chain_id: str) -> list[Task]:
    db.session.expire_all()
    return list(
        db.session.scalars(
            db.select(Task).where(Task.chain_id == chain_id).order_by(Task.chain_step)
        )
    )


def claim_one(actors: Actors, agent: Agent, now: datetime) -> Task:
    [task] = claim_tasks(actors.fleet, agent.id, 1, now=now)
    return task


@pytest.fixture
def agent(actors: Actors) -> Agent:
    return make_agent(actors.fleet, utcnow(), capabilities=CAPABILITIES, slots=3)


@pytest.fixture
def woken(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The agents woken after a commit, one entry per task routed to them, in order."""
    seen: list[str] = []
    real = wakeups.notify_agents

    def notify_agents(agent_ids: Any) -> None:
        agent_ids = list(agent_ids)
        seen.extend(agent_ids)
        real(agent_ids)

    monkeypatch.setattr(wakeups, "notify_agents", notify_agents)
    yield seen


def test_it_creates_the_first_step_at_once_and_the_rest_on_completion(
    actors: Actors, agent: Agent, woken: list[str]
) -> None:
    t = utcnow()
    chain = make_chain(
        actors,
        t,
        step("extract-v1", input_data={"url": "s3://in"}, priority=7),
        step("transform-v1", input_data={"mode": "fast"}),
        step("load-v1"),
    )
    assert chain.status == ChainStatus.RUNNING and chain.started_at == t
    [first] = step_tasks(chain.id)
    # Routed to the agent in the creating commit, and the agent woken once it committed.
    assert (first.status, first.assigned_agent_id) == (TaskStatus.ASSIGNED, agent.id)
    assert woken == [agent.id]
    assert (first.chain_step, first.priority, first.client_id) == (0, 7, "client-1")
    assert first.input_data == {"url": "s3://in"}  # the first step gets no previous_output
    assert first.created_by == f"chain:{chain.id}"

    running = claim_one(actors, agent, t + timedelta(seconds=1))
    assert running.id == first.id
    done_at = t + timedelta(seconds=2)
    reports.complete_task(actors.fleet, first.id, {"rows": 10}, now=done_at)

    first, second = step_tasks(chain.id)
    assert second.status == TaskStatus.ASSIGNED and second.chain_step == 1
    assert second.capability_required == "transform-v1"
    assert second.assigned_agent_id == agent.id and second.assigned_at == done_at
    assert woken == [agent.id, agent.id]  # woken again for the next step
    assert second.input_data == {"mode": "fast", "previous_output": {"rows": 10}}
    assert second.created_at == done_at
    chain = fresh_chain(chain.id)
    assert chain.status == ChainStatus.RUNNING and chain.current_step == 1
    assert chain.step_results == [
        {
            "step": 0,
            "task_id": first.id,
            "status": "COMPLETED",
            "result_data": {"rows": 10},
            "error_message": None,
        }
    ]
    # Claimable at once: no sweep or poll in between.
    assert claim_one(actors, agent, done_at).id == second.id


def test_it_creates_the_next_step_in_the_commit_that_completes_the_previous(
    actors: Actors, agent: Agent
) -> None:
    t = utcnow()
    chain = make_chain(actors, t, step("extract-v1"), step("load-v1"))
    task = claim_one(actors, agent, t)

    # A completion that rolls back leaves no trace: no next step, the chain unchanged.
    record_completion(task, {"n": 1}, actor="test", now=t)
    db.session.flush()
    db.session.rollback()
    assert len(step_tasks(chain.id)) == 1
    assert fresh_chain(chain.id).step_results == []

    commits: list[int] = []

    def count(session: Session) -> None:
        commits.append(1)

    event.listen(Session, "after_commit", count)
    try:
        reports.complete_task(actors.fleet, task.id, {"n": 1}, now=t)
    finally:
        event.remove(Session, "after_commit", count)
    assert len(commits) == 1
    # Created and routed in that commit.
    assert [s.status for s in step_tasks(chain.id)] == ["COMPLETED", "ASSIGNED"]
    assert step_tasks(chain.id)[1].assigned_agent_id == agent.id


def test_it_completes_a_chain_of_three_with_every_step_result(actors: Actors, agent: Agent) -> None:
    t = utcnow()
    chain = make_chain(
        actors, t, step("extract-v1"), step("transform-v1", input_data={"k": 1}), step("load-v1")
    )
    for i in range(3):
        task = claim_one(actors, agent, t + timedelta(seconds=i))
        assert task.chain_step == i
        reports.complete_task(actors.fleet, task.id, {"out": i}, now=t + timedelta(seconds=i))

    tasks = step_tasks(chain.id)
    assert [t.input_data for t in tasks] == [
        {},
        {"k": 1, "previous_output": {"out": 0}},
        {"previous_output": {"out": 1}},
    ]
    chain = fresh_chain(chain.id)
    assert chain.status == ChainStatus.COMPLETED
    assert chain.current_step == 3 and chain.completed_at == t + timedelta(seconds=2)
    assert [(r["step"], r["task_id"], r["result_data"]) for r in chain.step_results] == [
        (i, tasks[i].id, {"out": i}) for i in range(3)
    ]
    data = chains.chain_dict(chain)
    assert data["current_task_id"] is None and data["total_steps"] == 3
    assert data["status"] == "COMPLETED" and data["error_message"] is None


def test_it_waits_for_a_retry_and_fails_the_chain_when_retries_run_out(
    actors: Actors, agent: Agent
) -> None:
    t = utcnow()
    chain = make_chain(actors, t, step("extract-v1", max_retries=1), step("load-v1"))
    task = claim_one(actors, agent, t)
    reports.fail_task(actors.fleet, task.id, "flaky", retry_after_seconds=0, now=t)

    # A retryable failure with retries left is not the step's end: with no delay it is
    # routed again at once (to the same agent, the only one that can take it).
    retrying = step_tasks(chain.id)[0]
    assert (retrying.status, retrying.assigned_agent_id) == (TaskStatus.ASSIGNED, agent.id)
    assert retrying.retry_count == 1
    chain = fresh_chain(chain.id)
    assert chain.status == ChainStatus.RUNNING and chain.step_results == []

    again = claim_one(actors, agent, t + timedelta(seconds=1))
    assert again.id == task.id
    reports.fail_task(actors.fleet, task.id, "still broken", now=t + timedelta(seconds=2))

    chain = fresh_chain(chain.id)
    assert chain.status == ChainStatus.FAILED
    assert chain.completed_at == t + timedelta(seconds=2)
    assert chain.error_message is not None
    assert "step 0" in chain.error_message and "still broken" in chain.error_message
    assert chain.step_results == [
        {
            "step": 0,
            "task_id": task.id,
            "status": "FAILED",
            "result_data": None,
            "error_message": "still broken",
        }
    ]
    assert len(step_tasks(chain.id)) == 1  # no further step
    assert chains.chain_dict(chain)["current_task_id"] == task.id


def test_it_fails_the_chain_on_a_failure_that_is_not_retryable(
    actors: Actors, agent: Agent
) -> None:
    t = utcnow()
    chain = make_chain(actors, t, step("extract-v1", max_retries=5), step("load-v1"))
    task = claim_one(actors, agent, t)
    reports.fail_task(actors.fleet, task.id, "bad input", retryable=False, now=t)
    assert fresh_chain(chain.id).status == ChainStatus.FAILED
    assert len(step_tasks(chain.id)) == 1


def test_it_fails_the_chain_when_a_later_step_times_out(actors: Actors, agent: Agent) -> None:
    t = utcnow()
    chain = make_chain(actors, t, step("extract-v1"), step("load-v1", timeout_seconds=5))
    reports.complete_task(actors.fleet, claim_one(actors, agent, t).id, {"x": 1}, now=t)
    second = claim_one(actors, agent, t)
    assert second.chain_step == 1

    sweep(now=t + timedelta(seconds=6))

    chain = fresh_chain(chain.id)
    assert chain.status == ChainStatus.FAILED
    assert chain.error_message is not None
    assert "Task timed out after 5 seconds" in chain.error_message
    assert [r["status"] for r in chain.step_results] == ["COMPLETED", "FAILED"]
    assert chain.current_step == 1


def test_it_fails_the_chain_when_a_step_expires_unclaimed(actors: Actors) -> None:
    t = utcnow()
    chain = make_chain(actors, t, step("extract-v1", expires_in_seconds=60), step("load-v1"))
    sweep(now=t + timedelta(seconds=61))
    chain = fresh_chain(chain.id)
    assert chain.status == ChainStatus.FAILED
    assert chain.error_message is not None and "EXPIRED" in chain.error_message
    assert chain.step_results[0]["status"] == "EXPIRED"


def test_it_cancels_a_chain_whose_step_is_waiting_at_once(actors: Actors) -> None:
    t = utcnow()
    chain = make_chain(actors, t, step("extract-v1"), step("load-v1"))
    cancelled = chains.cancel_chain(actors.client, chain.id, "not needed", now=t)
    assert cancelled.status == ChainStatus.CANCELLED

    chain = fresh_chain(chain.id)
    assert (chain.cancelled_at, chain.completed_at) == (t, t)
    assert chain.cancellation_reason == "not needed"
    [task] = step_tasks(chain.id)
    assert task.status == TaskStatus.CANCELLED and task.cancelled_by == "client:client-1"
    assert task.cancellation_reason == f"chain {chain.id} cancelled: not needed"
    assert chain.step_results == [
        {
            "step": 0,
            "task_id": task.id,
            "status": "CANCELLED",
            "result_data": None,
            "error_message": task.cancellation_reason,
        }
    ]


def test_it_asks_the_running_step_to_stop_and_starts_nothing_when_it_does(
    actors: Actors, agent: Agent
) -> None:
    t = utcnow()
    chain = make_chain(actors, t, step("extract-v1"), step("load-v1"))
    task = claim_one(actors, agent, t)
    chains.cancel_chain(actors.client, chain.id, None, now=t)

    chain = fresh_chain(chain.id)
    assert chain.status == ChainStatus.CANCELLED and chain.cancellation_reason is None
    [running] = step_tasks(chain.id)
    assert running.status == TaskStatus.ACTIVE and running.cancel_requested_at == t
    assert chain.step_results == []

    # The agent stops and confirms with a fail report: the task ends CANCELLED, no step 1.
    reports.fail_task(actors.fleet, task.id, "stopped", now=t + timedelta(seconds=1))
    [ended] = step_tasks(chain.id)
    assert ended.status == TaskStatus.CANCELLED
    chain = fresh_chain(chain.id)
    assert chain.status == ChainStatus.CANCELLED
    assert [(r["step"], r["status"]) for r in chain.step_results] == [(0, "CANCELLED")]


def test_it_refuses_the_result_of_a_step_whose_chain_was_cancelled(
    actors: Actors, agent: Agent
) -> None:
    t = utcnow()
    chain = make_chain(actors, t, step("extract-v1"), step("load-v1"))
    task = claim_one(actors, agent, t)
    chains.cancel_chain(actors.client, chain.id, "stop", now=t)
    with pytest.raises(CancelRequested):
        reports.complete_task(actors.fleet, task.id, {"late": True}, now=t)
    assert [s.status for s in step_tasks(chain.id)] == ["CANCELLED"]
    assert fresh_chain(chain.id).status == ChainStatus.CANCELLED


def test_it_ends_the_running_step_after_the_grace_period_without_a_next_step(
    actors: Actors, agent: Agent
) -> None:
    t = utcnow()
    chain = make_chain(actors, t, step("extract-v1"), step("load-v1"))
    claim_one(actors, agent, t)
    chains.cancel_chain(actors.client, chain.id, "stop", now=t)
    sweep(now=t + timedelta(seconds=settings.cancel_grace_seconds + 1))
    assert [s.status for s in step_tasks(chain.id)] == ["CANCELLED"]
    chain = fresh_chain(chain.id)
    assert chain.status == ChainStatus.CANCELLED and chain.cancellation_reason == "stop"


def test_it_refuses_to_cancel_a_finished_chain(actors: Actors, agent: Agent) -> None:
    t = utcnow()
    chain = make_chain(actors, t, step("extract-v1"))
    reports.complete_task(actors.fleet, claim_one(actors, agent, t).id, {}, now=t)
    assert fresh_chain(chain.id).status == ChainStatus.COMPLETED
    with pytest.raises(Conflict, match="already COMPLETED"):
        chains.cancel_chain(actors.client, chain.id, None, now=t)
    chain = fresh_chain(chain.id)
    assert chain.status == ChainStatus.COMPLETED and chain.cancelled_at is None

    cancelled = make_chain(actors, t, step("extract-v1"))
    chains.cancel_chain(actors.client, cancelled.id, None, now=t)
    with pytest.raises(Conflict, match="already CANCELLED"):
        chains.cancel_chain(actors.admin, cancelled.id, None, now=t)


def test_it_cancels_the_chain_when_a_client_cancels_the_step_task_itself(
    actors: Actors, agent: Agent
) -> None:
    t = utcnow()
    waiting = make_chain(actors, t, step("extract-v1"), step("load-v1"))
    [task] = step_tasks(waiting.id)
    cancel_task(actors.client, task.id, "wrong input", now=t)
    chain = fresh_chain(waiting.id)
    assert chain.status == ChainStatus.CANCELLED and chain.cancelled_at == t
    assert chain.cancellation_reason == (
        f"step 0's task {task.id} was cancelled by client:client-1: wrong input"
    )
    assert len(step_tasks(waiting.id)) == 1

    # A running step: the chain runs on until the agent confirms.
    running = make_chain(actors, t, step("extract-v1"), step("load-v1"))
    task = claim_one(actors, agent, t)
    assert task.chain_id == running.id
    cancel_task(actors.client, task.id, None, now=t)
    assert fresh_chain(running.id).status == ChainStatus.RUNNING
    reports.fail_task(actors.fleet, task.id, "stopped", now=t + timedelta(seconds=1))
    chain = fresh_chain(running.id)
    assert chain.status == ChainStatus.CANCELLED
    assert chain.cancelled_at == t + timedelta(seconds=1)
    assert len(step_tasks(running.id)) == 1


def test_it_cancels_a_chain_whose_step_a_client_already_asked_to_stop(
    actors: Actors, agent: Agent
) -> None:
    t = utcnow()
    chain = make_chain(actors, t, step("extract-v1"), step("load-v1"))
    task = claim_one(actors, agent, t)
    cancel_task(actors.client, task.id, "first", now=t)
    chains.cancel_chain(actors.client, chain.id, "second", now=t + timedelta(seconds=1))
    chain = fresh_chain(chain.id)
    assert chain.status == ChainStatus.CANCELLED and chain.cancellation_reason == "second"
    [running] = step_tasks(chain.id)
    assert running.cancellation_reason == "first"  # the task's own request stands


def test_it_validates_every_step_before_creating_anything(actors: Actors) -> None:
    t = utcnow()
    with pytest.raises(InvalidInput) as caught:
        make_chain(actors, t, step("extract-v1"), {"input_data": {}, "priority": 5})
    assert caught.value.details == [
        {"field": "steps.1.task_type", "message": "required when the step has no template_id"}
    ]
    with pytest.raises(InvalidInput):
        chains.create_chain(actors.client, "empty", [], now=t)
    with pytest.raises(InvalidInput):
        chains.create_chain(actors.client, "long", [step("load-v1")] * 51, now=t)
    db.session.rollback()
    assert db.session.scalar(db.select(db.func.count()).select_from(TaskChain)) == 0
    assert db.session.scalar(db.select(db.func.count()).select_from(Task)) == 0


def test_it_shows_a_chain_to_its_client_and_admins_only(actors: Actors) -> None:
    t = utcnow()
    chain = make_chain(actors, t, step("extract-v1"))
    assert chains.visible_chain(actors.admin, chain.id).id == chain.id
    with pytest.raises(NotFound):
        chains.visible_chain(actors.other_client, chain.id)
    with pytest.raises(NotFound):
        chains.cancel_chain(actors.other_client, chain.id, None)
    assert fresh_chain(chain.id).status == ChainStatus.RUNNING


def test_it_writes_the_chain_as_the_creator_of_its_step_tasks(actors: Actors, agent: Agent) -> None:
    t = utcnow()
    chain = make_chain(actors, t, step("extract-v1"), step("load-v1"))
    reports.complete_task(actors.fleet, claim_one(actors, agent, t).id, {}, now=t)
    second = step_tasks(chain.id)[1]
    created, routed = db.session.scalars(
        db.select(TaskEvent).where(TaskEvent.task_id == second.id).order_by(TaskEvent.id)
    )
    assert (created.to_status, created.actor) == ("PENDING", f"chain:{chain.id}")
    assert (routed.from_status, routed.to_status, routed.actor) == (
        "PENDING",
        "ASSIGNED",
        routing.ROUTER,
    )


def test_a_step_completing_while_its_chain_is_cancelled_ends_consistently(
    app: Flask, actors: Actors
) -> None:
    """The report locks the task then the chain; cancelling takes them in the same order.

    On PostgreSQL the two really overlap (no deadlock, whichever commits first); on SQLite
    the single writer serialises them. Either way the chain ends CANCELLED with nothing
    left running: step 0 cancelled, or step 0 completed and step 1 cancelled.
    """
    t = utcnow()
    rounds = 8
    agent = make_agent(actors.fleet, t, capabilities=CAPABILITIES, slots=rounds)
    ids = []
    for _ in range(rounds):
        chain = make_chain(actors, t, step("extract-v1"), step("load-v1"))
        ids.append((chain.id, claim_one(actors, agent, t).id))
        db.session.commit()
    db.session.remove()
    errors: list[BaseException] = []

    def run(start: threading.Barrier, call: Callable[[], object]) -> None:
        with app.app_context():
            start.wait()
            try:
                call()
            except CancelRequested:
                pass  # the cancel got in first: the result is refused
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(exc)
            finally:
                db.session.remove()

    for chain_id, task_id in ids:
        start = threading.Barrier(2)
        calls: list[Callable[[], object]] = [
            partial(reports.complete_task, actors.fleet, task_id, {"n": 1}),
            partial(chains.cancel_chain, actors.client, chain_id, "race"),
        ]
        threads = [threading.Thread(target=run, args=(start, call)) for call in calls]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)

    assert errors == []
    for chain_id, _ in ids:
        chain = fresh_chain(chain_id)
        statuses = [s.status for s in step_tasks(chain_id)]
        assert chain.status == ChainStatus.CANCELLED
        assert statuses in (["CANCELLED"], ["COMPLETED", "CANCELLED"]), statuses
        assert [r["status"] for r in chain.step_results] == statuses


def make_template(actors: Actors, **fields: Any) -> str:
    body = {
        "name": "transform",
        "task_type": "transform",
        "capability_required": "transform-v1",
        "default_input_data": {"mode": "fast", "opts": {"a": 1}},
        "default_priority": 8,
        "default_max_retries": 0,
        "default_retry_policy": "fixed",
        "default_timeout_seconds": 60,
        "input_schema": {
            "type": "object",
            "properties": {"mode": {"enum": ["fast", "slow"]}},
            "required": ["mode"],
        },
        **fields,
    }
    return templates.create_template(actors.client, body).id


def times_used(template_id: str) -> int:
    db.session.expire_all()
    template = db.session.get(TaskTemplate, template_id)
    assert template is not None
    return template.times_used


def test_it_runs_a_template_step_as_the_template_was_when_the_chain_was_created(
    actors: Actors, agent: Agent
) -> None:
    t = utcnow()
    template_id = make_template(actors)
    chain = make_chain(
        actors,
        t,
        step("extract-v1"),
        {"template_id": template_id, "input_data": {"opts": {"b": 2}}, "priority": 3},
    )
    planned = fresh_chain(chain.id).steps[1]
    assert planned == {
        "task_type": "transform",
        "capability_required": "transform-v1",
        "input_data": {"mode": "fast", "opts": {"a": 1, "b": 2}},
        "priority": 3,
        "max_retries": 0,
        "retry_policy": "fixed",
        "timeout_seconds": 60,
        "retry_on_timeout": False,
        "expires_in_seconds": None,
        "routing_strategy": None,
        "template_id": template_id,
        "template_version": 1,
    }
    assert times_used(template_id) == 1

    # An edit after creation changes the template's future tasks, not this chain.
    templates.update_template(actors.client, template_id, {"default_timeout_seconds": 900})
    reports.complete_task(actors.fleet, claim_one(actors, agent, t).id, {"rows": 2}, now=t)
    second = step_tasks(chain.id)[1]
    assert (second.task_type, second.capability_required) == ("transform", "transform-v1")
    assert (second.priority, second.max_retries, second.timeout_seconds) == (3, 0, 60)
    assert (second.template_id, second.template_version) == (template_id, 1)
    assert second.input_data == {
        "mode": "fast",
        "opts": {"a": 1, "b": 2},
        "previous_output": {"rows": 2},
    }
    assert times_used(template_id) == 1

    # Deleting it does not stop the chain either.
    templates.delete_template(actors.client, template_id)
    reports.complete_task(actors.fleet, claim_one(actors, agent, t).id, {}, now=t)
    assert fresh_chain(chain.id).status == ChainStatus.COMPLETED


def test_it_refuses_a_template_step_it_cannot_run_and_counts_no_use(actors: Actors) -> None:
    t = utcnow()
    template_id = make_template(actors)
    theirs = templates.create_template(
        actors.other_client,
        {"name": "x", "task_type": "x", "capability_required": "load-v1"},
    ).id
    good = {"template_id": template_id}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"template_id": "tmpl_nope"}, "steps.1.template_id"),
        ({"template_id": theirs}, "steps.1.template_id"),
        ({"template_id": template_id, "task_type": "other"}, "steps.1.task_type"),
        ({"template_id": template_id, "input_data": {"mode": "warp"}}, "steps.1.input_data/mode"),
    ]
    for bad, field in cases:
        with pytest.raises(InvalidInput) as caught:
            make_chain(actors, t, good, bad)
        assert [d["field"] for d in caught.value.details] == [field], caught.value.details
        db.session.rollback()
    assert times_used(template_id) == 0
    assert db.session.scalar(db.select(db.func.count()).select_from(TaskChain)) == 0

    # An admin's chain for one client cannot use another client's template.
    with pytest.raises(InvalidInput) as caught:
        chains.create_chain(actors.admin, "c", [good], client_id="client-2", now=t)
    assert [d["field"] for d in caught.value.details] == ["steps.0.template_id"]


@pytest.mark.postgres_only
def test_two_chains_naming_the_same_templates_in_another_order_do_not_deadlock(
    app: Flask, actors: Actors, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [
        templates.create_template(
            actors.client,
            {"name": name, "task_type": "x", "capability_required": "c", "default_input_data": {}},
        ).id
        for name in ("a", "b")
    ]
    db.session.remove()
    real = chains.task_fields_from_template

    def slow(*args: Any, **kwargs: Any) -> dict[str, Any]:
        fields = real(*args, **kwargs)
        time.sleep(0.5)  # hold the first template's row while the other chain takes its own
        return fields

    monkeypatch.setattr(chains, "task_fields_from_template", slow)
    errors: list[str] = []

    def create(order: list[str]) -> Callable[[], None]:
        def work() -> None:
            try:
                chains.create_chain(actors.client, "c", [{"template_id": i} for i in order])
            except Exception as exc:  # a deadlock surfaces here
                errors.append(repr(exc))

        return work

    threads = [in_thread(app, create(ids)), in_thread(app, create(ids[::-1]))]
    for thread in threads:
        thread.join(20)
    assert errors == []
    used = [db.session.get(TaskTemplate, template_id) for template_id in ids]
    assert [t.times_used for t in used if t is not None] == [2, 2]
