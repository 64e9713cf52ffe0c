"""Lifecycle services on states the API cannot produce yet (ASSIGNED, BLOCKED), the order of
the sweep's steps, concurrent sweeps, stop notices, and the retry delay arithmetic."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TypeVar

import pytest
from flask import Flask

from app.extensions import db
from app.lib.clock import utcnow
from app.models import Agent, AgentStatus, Task, TaskAttempt, TaskEvent, TaskStatus
from app.services import agents as agent_service
from app.services.attempts import policy_delay_seconds, retry_delay_seconds, stop_notices
from app.services.cancellation import cancel_task
from app.services.dispatch import claim_tasks
from app.services.errors import Conflict
from app.services.lifecycle import sweep
from app.services.reports import fail_task
from app.services.settings import settings
from tests.services.conftest import Actors
from tests.services.factories import make_agent, make_task

Row = TypeVar("Row", Task, Agent)


def fresh(model: type[Row], row_id: str) -> Row:
    """The row as the database has it now."""
    db.session.expire_all()
    row = db.session.get(model, row_id)
    assert row is not None
    return row


def events_of(task_id: str) -> list[TaskEvent]:
    return list(
        db.session.scalars(
            db.select(TaskEvent).where(TaskEvent.task_id == task_id).order_by(TaskEvent.id)
        )
    )


def put(task: Task, **values: object) -> None:
    for name, value in values.items():
        setattr(task, name, value)
    db.session.commit()


def heartbeat(actors: Actors, agent: Agent, now: datetime) -> dict:
    return agent_service.record_heartbeat(
        actors.fleet,
        agent.id,
        health_status="ACTIVE",
        uptime_ms=1,
        metrics={},
        interval_seconds=settings.heartbeat_interval_seconds,
        now=now,
    )


@pytest.mark.parametrize("status", [TaskStatus.ASSIGNED, TaskStatus.BLOCKED])
def test_it_cancels_an_assigned_or_blocked_task_at_once(actors: Actors, status: str) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    task = make_task(actors.client, t)
    put(task, status=status, assigned_agent_id=agent.id if status == TaskStatus.ASSIGNED else None)
    cancelled = cancel_task(actors.client, task.id, "changed my mind", now=t)
    assert cancelled.status == TaskStatus.CANCELLED
    assert cancelled.cancelled_at == t and cancelled.cancel_requested_at is None
    last = events_of(task.id)[-1]
    assert (last.from_status, last.to_status) == (status, TaskStatus.CANCELLED)
    assert fresh(Agent, agent.id).active_tasks == 0
    with pytest.raises(Conflict):
        cancel_task(actors.client, task.id, "again", now=t)


@pytest.mark.parametrize("status", [TaskStatus.ASSIGNED, TaskStatus.BLOCKED])
def test_an_assigned_or_blocked_task_expires_like_a_pending_one(
    actors: Actors, status: str
) -> None:
    t = utcnow()
    task = make_task(actors.client, t, expires_in_seconds=5)
    put(task, status=status)
    assert sweep(now=t + timedelta(seconds=5))["expired"] == 0
    assert sweep(now=t + timedelta(seconds=6))["expired"] == 1
    expired = fresh(Task, task.id)
    assert expired.status == TaskStatus.EXPIRED
    assert events_of(task.id)[-1].from_status == status


def test_an_assigned_task_of_an_agent_that_said_offline_comes_back(actors: Actors) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    task = make_task(actors.client, t)
    put(task, status=TaskStatus.ASSIGNED, assigned_agent_id=agent.id)
    agent_service.record_heartbeat(
        actors.fleet,
        agent.id,
        health_status="OFFLINE",
        uptime_ms=0,
        metrics={},
        interval_seconds=10,
        now=t,
    )
    assert sweep(now=t + timedelta(seconds=settings.lease_seconds + 1))["agents_lost"] == 1
    back = fresh(Task, task.id)
    assert back.status == TaskStatus.PENDING
    assert back.assigned_agent_id is None and back.retry_count == 0


def test_a_task_past_both_its_timeout_and_its_agents_silence_counts_as_timed_out(
    actors: Actors,
) -> None:
    # Timeouts run first: the error names the real cause and retry_on_timeout decides.
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    task = make_task(actors.client, t, timeout_seconds=5, max_retries=3)
    claim_tasks(actors.fleet, agent.id, 1, now=t)
    counts = sweep(now=t + timedelta(seconds=settings.lease_seconds + 1))
    assert counts["timed_out"] == 1 and counts["agents_lost"] == 1
    done = fresh(Task, task.id)
    assert done.status == TaskStatus.FAILED
    assert done.error_message == "Task timed out after 5 seconds"
    agent_row = fresh(Agent, agent.id)
    assert agent_row.status == AgentStatus.INACTIVE
    assert agent_row.total_tasks_failed == 1 and agent_row.active_tasks == 0


def test_each_sweep_step_happens_once_however_often_it_runs(actors: Actors) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t, slots=3)
    timed = make_task(actors.client, t, timeout_seconds=1)
    lost = make_task(actors.client, t, timeout_seconds=3600)
    make_task(actors.client, t, expires_in_seconds=1, capability_required="idle-v1")
    claim_tasks(actors.fleet, agent.id, 2, now=t)
    later = t + timedelta(seconds=settings.lease_seconds + 1)
    first = sweep(now=later)
    assert first["timed_out"] == 1 and first["agents_lost"] == 1 and first["expired"] == 1
    for _ in range(3):
        again = sweep(now=later)
        assert again["timed_out"] == again["agents_lost"] == again["expired"] == 0
    assert fresh(Agent, agent.id).total_tasks_failed == 2
    for task in (timed, lost):
        closed = db.session.scalars(
            db.select(TaskAttempt).where(TaskAttempt.task_id == task.id)
        ).all()
        assert len(closed) == 1 and closed[0].ended_at == later


def run_sweeps(app: Flask, now: datetime, threads: int) -> list[dict[str, int]]:
    def one() -> dict[str, int]:
        with app.app_context():
            try:
                return sweep(now=now)
            finally:
                db.session.remove()

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: one(), range(threads)))


def test_concurrent_sweeps_end_each_task_once(app: Flask, actors: Actors) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t, slots=40)
    for n in range(40):
        make_task(actors.client, t, timeout_seconds=1, input_data={"n": n})
    assert len(claim_tasks(actors.fleet, agent.id, 40, now=t)) == 40
    agent_id = agent.id
    heartbeat(actors, agent, t + timedelta(seconds=2))
    db.session.remove()  # the agent object is detached from here on: use its id
    results = run_sweeps(app, t + timedelta(seconds=2), threads=4)
    assert sum(r["timed_out"] for r in results) == 40
    failed_events = db.session.scalar(
        db.select(db.func.count())
        .select_from(TaskEvent)
        .where(TaskEvent.to_status == TaskStatus.FAILED)
    )
    assert failed_events == 40
    agent_row = fresh(Agent, agent_id)
    assert agent_row.total_tasks_failed == 40 and agent_row.active_tasks == 0


def test_stop_notices_name_what_the_server_ended_and_drop_what_runs_again(
    actors: Actors, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "retry_jitter", "none")
    t = utcnow()
    # Trusted: two failures leave it above probation, so it can take the retry while the
    # cancelled task still holds a slot.
    agent = make_agent(actors.fleet, t, slots=4, trust=0.9)
    asked = make_task(actors.client, t, timeout_seconds=3600)
    timed = make_task(actors.client, t, timeout_seconds=1, retry_on_timeout=True)
    failed = make_task(actors.client, t, timeout_seconds=3600)
    claim_tasks(actors.fleet, agent.id, 3, now=t)
    cancel_task(actors.client, asked.id, "stop", now=t)
    fail_task(actors.fleet, failed.id, "my own failure", retryable=False, now=t)
    sweep(now=t + timedelta(seconds=2))
    notices = stop_notices(agent.id, t + timedelta(seconds=2))
    # The agent's own failure needs no notice; a cancel and a timeout do.
    assert notices == {
        "cancelled_task_ids": [asked.id],
        "stop_task_ids": sorted([asked.id, timed.id]),
    }
    # The timed-out task runs again on the same agent: its old notice must not stop it.
    [again] = claim_tasks(actors.fleet, agent.id, 1, now=t + timedelta(seconds=4))
    assert again.id == timed.id
    assert stop_notices(agent.id, t + timedelta(seconds=4))["stop_task_ids"] == [asked.id]


def test_a_heartbeat_does_not_renew_a_task_of_another_agent(actors: Actors) -> None:
    t = utcnow()
    other = make_agent(actors.fleet, t)
    task = make_task(actors.client, t, timeout_seconds=3600)  # routed to the only agent
    mine = make_agent(actors.fleet, t)
    assert [c.id for c in claim_tasks(actors.fleet, other.id, 1, now=t)] == [task.id]
    agent_service.record_heartbeat(
        actors.fleet,
        mine.id,
        health_status="ACTIVE",
        uptime_ms=1,
        metrics={},
        interval_seconds=10,
        running_task_ids=[task.id],
        now=t + timedelta(seconds=20),
    )
    lease_end = fresh(Task, task.id).lease_expires_at
    assert lease_end == t + timedelta(seconds=settings.lease_seconds)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("exponential", [2, 4, 8, 16, 32, 64]),
        ("linear", [5, 10, 15, 20, 25, 30]),
        ("fixed", [10, 10, 10, 10, 10, 10]),
    ],
)
def test_the_policy_delays_follow_the_seed(policy: str, expected: list[int]) -> None:
    assert [policy_delay_seconds(policy, n) for n in range(6)] == expected


def test_jitter_is_drawn_from_the_given_generator() -> None:
    draws = [retry_delay_seconds("fixed", 0, jitter="full", rng=random.Random(7)) for _ in "ab"]
    assert draws[0] == draws[1] == random.Random(7).uniform(0.0, 10.0)


def test_the_configured_jitter_and_cap_apply_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "retry_jitter", "none")
    monkeypatch.setattr(settings, "retry_max_delay_seconds", 7)
    assert retry_delay_seconds("exponential", 1) == 4
    assert retry_delay_seconds("exponential", 2) == 7
    assert retry_delay_seconds("exponential", 10**6) == 7
    monkeypatch.setattr(settings, "retry_jitter", "full")
    assert all(0 <= retry_delay_seconds("linear", 5) <= 7 for _ in range(100))
