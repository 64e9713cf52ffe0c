"""A task's event rows: written with the flush that writes the task, in transition order,
and never for a transition that was rolled back (a whole transaction or a savepoint)."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import func

from app.extensions import db
from app.lib.clock import utcnow
from app.models import TaskEvent, TaskStatus, TrustRecord
from app.services.dispatch import claim_tasks
from app.services.reports import complete_tasks
from tests.services.conftest import Actors
from tests.services.factories import make_agent, make_task

# Created, routed at once to the free agent (in the submit's transaction), claimed, done.
STEPS = [
    (None, TaskStatus.PENDING),
    (TaskStatus.PENDING, TaskStatus.ASSIGNED),
    (TaskStatus.ASSIGNED, TaskStatus.ACTIVE),
    (TaskStatus.ACTIVE, TaskStatus.COMPLETED),
]


def history(task_id: str) -> list[tuple[str | None, str, str]]:
    """(from, to, actor) of the task's event rows, in id order."""
    rows = db.session.execute(
        db.select(TaskEvent.from_status, TaskEvent.to_status, TaskEvent.actor)
        .where(TaskEvent.task_id == task_id)
        .order_by(TaskEvent.id)
    ).all()
    return [tuple(r) for r in rows]


def test_a_task_life_writes_one_event_per_transition_in_order(actors: Actors) -> None:
    now = utcnow()
    agent = make_agent(actors.fleet, now)
    task = make_task(actors.client, now, input_data={"n": 1})
    [claimed] = claim_tasks(actors.fleet, agent.id, 1, now=now)
    assert claimed.id == task.id
    complete_tasks(actors.fleet, agent.id, [{"task_id": task.id, "result": {}}], now=now)
    assert [(f, t) for f, t, _ in history(task.id)] == STEPS
    routed = db.session.scalars(
        db.select(TaskEvent).where(
            TaskEvent.task_id == task.id, TaskEvent.to_status == TaskStatus.ASSIGNED
        )
    ).one()
    assert routed.data["routing"]["winner"] == agent.id  # the decision, stored as JSON
    assert routed.at == now
    # One trust record for the completion, written without the unit of work.
    records = db.session.scalars(db.select(TrustRecord).where(TrustRecord.task_id == task.id))
    [record] = list(records)
    assert record.agent_id == agent.id and record.trust_delta > 0
    assert record.trust_score_after == db.session.get(type(agent), agent.id).trust_score


def test_a_rolled_back_transition_writes_no_event_even_unflushed(actors: Actors) -> None:
    task = make_task(actors.client, utcnow())
    before = history(task.id)
    task.transition(TaskStatus.CANCELLED, actor="test", now=utcnow())
    db.session.rollback()  # never flushed: the event was only noted
    task.priority = 3  # a later transaction must not pick up what the rollback dropped
    db.session.commit()
    assert history(task.id) == before
    assert db.session.get(type(task), task.id).status != TaskStatus.CANCELLED


def test_a_rolled_back_savepoint_takes_back_its_events_and_keeps_the_outer_ones(
    actors: Actors,
) -> None:
    now = utcnow()
    kept = make_task(actors.client, now)
    dropped = make_task(actors.client, now)
    before = {t.id: history(t.id) for t in (kept, dropped)}
    kept.transition(TaskStatus.CANCELLED, actor="outer", now=now)  # noted before the savepoint
    savepoint = db.session.begin_nested()
    dropped.transition(TaskStatus.CANCELLED, actor="inner", now=now)
    savepoint.rollback()
    inner_kept = db.session.begin_nested()
    dropped.transition(TaskStatus.EXPIRED, actor="released", now=now)
    inner_kept.commit()
    db.session.commit()
    assert history(kept.id) == [*before[kept.id], (before[kept.id][-1][1], "CANCELLED", "outer")]
    # The savepoint's CANCELLED went with it; the released savepoint's EXPIRED stays.
    assert [a for _, _, a in history(dropped.id)] == [
        *(a for _, _, a in before[dropped.id]),
        "released",
    ]
    total = db.session.scalar(db.select(func.count()).select_from(TaskEvent))
    assert total == sum(len(h) for h in before.values()) + 2


def test_events_of_a_change_thrown_away_unflushed_do_not_reach_the_next_transaction(
    actors: Actors, caplog: pytest.LogCaptureFixture
) -> None:
    task = make_task(actors.client, utcnow())
    before = history(task.id)
    task.transition(TaskStatus.CANCELLED, actor="lost", now=utcnow())
    db.session.expire(task)  # the change is gone before any flush wrote it
    with caplog.at_level(logging.WARNING, logger="app.models.task"):
        db.session.commit()
    assert "1 task events dropped" in caplog.text
    task.priority = 2  # the next transaction flushes: it must not write the lost event
    db.session.commit()
    assert history(task.id) == before
