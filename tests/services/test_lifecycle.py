"""lifecycle.sweep: timeouts, agents that stop heartbeating, and what happens to their tasks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TypeVar

import pytest

from app.extensions import db
from app.lib.clock import utcnow
from app.models import Agent, AgentStatus, Task, TaskEvent, TaskStatus
from app.services import agents as agent_service
from app.services.dispatch import claim_tasks
from app.services.errors import Conflict
from app.services.lifecycle import sweep
from app.services.settings import settings
from tests.services.conftest import Actors
from tests.services.factories import make_agent, make_task

INTERVAL = 10
MISSES = 3
SILENCE = timedelta(seconds=INTERVAL * MISSES)


@pytest.fixture(autouse=True)
def heartbeat_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(settings, "heartbeat_interval_seconds", INTERVAL)
    monkeypatch.setattr(settings, "heartbeat_misses_allowed", MISSES)
    yield


Row = TypeVar("Row", Task, Agent)


def fresh(model: type[Row], row_id: str) -> Row:
    """The row as the database has it now."""
    db.session.expire_all()
    row = db.session.get(model, row_id)
    assert row is not None
    return row


def running_task(actors: Actors, t: datetime, **fields: object) -> tuple[Agent, Task]:
    agent = make_agent(actors.fleet, t, slots=2)
    task = make_task(actors.client, t, **fields)
    assert [c.id for c in claim_tasks(actors.fleet, agent.id, 1, now=t)] == [task.id]
    return agent, task


def test_it_fails_a_task_past_its_timeout_without_retrying_it(actors: Actors) -> None:
    t = utcnow()
    agent, task = running_task(actors, t, timeout_seconds=5, max_retries=3)

    assert sweep(now=t + timedelta(seconds=5))["timed_out"] == 0
    assert fresh(Task, task.id).status == TaskStatus.ACTIVE

    counts = sweep(now=t + timedelta(seconds=6))
    assert counts["timed_out"] == 1 and counts["agents_lost"] == 0
    timed_out = fresh(Task, task.id)
    assert timed_out.status == TaskStatus.FAILED
    assert timed_out.error_message == "Task timed out after 5 seconds"
    assert timed_out.retry_count == 0 and timed_out.next_retry_at is None
    assert timed_out.lease_expires_at is None
    agent_row = fresh(Agent, agent.id)
    assert agent_row.active_tasks == 0 and agent_row.total_tasks_failed == 1
    assert agent_row.status == AgentStatus.AVAILABLE

    # The slot is free again, and the timed-out task is not handed out.
    other = make_task(actors.client, t + timedelta(seconds=6))
    claimed = claim_tasks(actors.fleet, agent.id, 2, now=t + timedelta(seconds=7))
    assert [c.id for c in claimed] == [other.id]
    # A second pass does nothing more.
    assert sweep(now=t + timedelta(seconds=8))["timed_out"] == 0
    assert fresh(Agent, agent.id).total_tasks_failed == 1


def test_it_records_the_timeout_as_a_system_event(actors: Actors) -> None:
    t = utcnow()
    _, task = running_task(actors, t, timeout_seconds=1)
    sweep(now=t + timedelta(seconds=2))
    last = db.session.scalars(
        db.select(TaskEvent).where(TaskEvent.task_id == task.id).order_by(TaskEvent.id.desc())
    ).first()
    assert last is not None
    assert (last.from_status, last.to_status) == (TaskStatus.ACTIVE, TaskStatus.FAILED)
    assert last.actor.startswith("system")
    assert "Task timed out after 1 seconds" in (last.reason or "")


def test_it_retires_a_silent_agent_and_requeues_its_running_task(actors: Actors) -> None:
    t = utcnow()
    agent, task = running_task(actors, t, timeout_seconds=3600, max_retries=2)
    waiting = make_task(actors.client, t, capability_required="other-v1")

    # Exactly at the limit the agent is still alive.
    assert sweep(now=t + SILENCE)["agents_lost"] == 0
    assert fresh(Agent, agent.id).status == AgentStatus.AVAILABLE

    lost_at = t + SILENCE + timedelta(seconds=1)
    assert sweep(now=lost_at)["agents_lost"] == 1
    agent_row = fresh(Agent, agent.id)
    assert agent_row.status == AgentStatus.INACTIVE
    assert agent_row.active_tasks == 0 and agent_row.total_tasks_failed == 1
    requeued = fresh(Task, task.id)
    assert requeued.status == TaskStatus.PENDING
    assert requeued.retry_count == 1
    assert requeued.assigned_agent_id is None
    assert requeued.next_retry_at is not None and requeued.next_retry_at > lost_at
    assert fresh(Task, waiting.id).status == TaskStatus.PENDING

    with pytest.raises(Conflict):
        claim_tasks(actors.fleet, agent.id, 1, now=lost_at)
    # Another agent picks it up once the retry delay is over.
    rescuer = make_agent(actors.fleet, lost_at)
    [again] = claim_tasks(actors.fleet, rescuer.id, 1, now=requeued.next_retry_at)
    assert again.id == task.id and again.attempt == 2
    # A second pass does not count the lost agent twice.
    assert sweep(now=lost_at + timedelta(seconds=1))["agents_lost"] == 0


def test_it_fails_a_silent_agents_task_that_has_no_retries_left(actors: Actors) -> None:
    t = utcnow()
    agent, task = running_task(actors, t, timeout_seconds=3600, max_retries=0)
    sweep(now=t + SILENCE + timedelta(seconds=1))
    lost = fresh(Task, task.id)
    assert lost.status == TaskStatus.FAILED
    assert lost.retry_count == 0
    assert lost.error_message and "heartbeat" in lost.error_message
    assert fresh(Agent, agent.id).active_tasks == 0


def test_it_keeps_an_agent_that_heartbeats_just_in_time(actors: Actors) -> None:
    t = utcnow()
    agent, task = running_task(actors, t, timeout_seconds=3600)
    beat_at = t + SILENCE - timedelta(seconds=1)
    agent_service.record_heartbeat(
        actors.fleet,
        agent.id,
        health_status="ACTIVE",
        uptime_ms=1,
        metrics={},
        interval_seconds=INTERVAL,
        now=beat_at,
    )
    assert sweep(now=t + SILENCE + timedelta(seconds=5))["agents_lost"] == 0
    assert fresh(Agent, agent.id).status == AgentStatus.AVAILABLE
    assert fresh(Task, task.id).status == TaskStatus.ACTIVE

    assert sweep(now=beat_at + SILENCE + timedelta(seconds=1))["agents_lost"] == 1
    assert fresh(Agent, agent.id).status == AgentStatus.INACTIVE
    assert fresh(Task, task.id).status == TaskStatus.PENDING


def test_it_leaves_an_inactive_agent_alone(actors: Actors) -> None:
    t = utcnow()
    agent = make_agent(actors.fleet, t)
    agent_service.record_heartbeat(
        actors.fleet,
        agent.id,
        health_status="OFFLINE",
        uptime_ms=0,
        metrics={},
        interval_seconds=INTERVAL,
        now=t,
    )
    assert sweep(now=t + timedelta(hours=1))["agents_lost"] == 0
    assert fresh(Agent, agent.id).total_tasks_failed == 0


def test_it_requeues_the_running_task_of_an_agent_that_went_offline_and_silent(
    actors: Actors,
) -> None:
    # OFFLINE makes the agent INACTIVE at once; if it then never comes back, its running
    # task must still go back to the queue (SPEC), not wait for its lease to time out.
    t = utcnow()
    agent, task = running_task(actors, t, timeout_seconds=3600, max_retries=2)
    agent_service.record_heartbeat(
        actors.fleet,
        agent.id,
        health_status="OFFLINE",
        uptime_ms=0,
        metrics={},
        interval_seconds=INTERVAL,
        now=t,
    )
    sweep(now=t + SILENCE + timedelta(seconds=1))
    requeued = fresh(Task, task.id)
    assert requeued.status == TaskStatus.PENDING
    assert requeued.retry_count == 1
    assert fresh(Agent, agent.id).active_tasks == 0
