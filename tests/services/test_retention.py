"""retention.prune: finished tasks past TASK_RETENTION_DAYS go with all their rows; open,
recent and still-needed ones stay; a batch per pass, run by the maintenance sweep."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask

from app.api.schemas import ScheduleCreate
from app.config import ConfigError, env_days
from app.extensions import db
from app.lib.tokens import new_id
from app.models import (
    AuditEvent,
    ChainStatus,
    ScheduleExecution,
    Task,
    TaskAttempt,
    TaskChain,
    TaskDependency,
    TaskEvent,
    TaskStatus,
    TrustRecord,
    WebhookEvent,
)
from app.services import audit, chains, dispatch, retention, scheduling, trust
from app.services.cancellation import cancel_task
from app.services.dispatch import claim_tasks, submit_task
from app.services.lifecycle import sweep
from app.services.reports import complete_task, fail_task
from app.services.retention import retention_settings
from app.services.settings import settings
from tests.services.conftest import Actors
from tests.services.factories import make_agent, make_task, task_fields
from tests.services.test_dependencies import in_thread

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
LATER = T0 + 31 * DAY  # past the 30-day retention of tasks that ended near T0


@pytest.fixture(autouse=True)
def retention_days(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention_settings, "task_days", 30.0)
    monkeypatch.setattr(retention_settings, "failed_task_days", 30.0)
    # The sweep's other steps must not act on the test's agents and tasks.
    monkeypatch.setattr(settings, "heartbeat_interval_seconds", 10**6)


def finish(actors: Actors, task: Task, at: datetime, *, fail: bool = False) -> Task:
    """Run ``task`` on a new agent and end it at ``at``: COMPLETED, or FAILED (no retry)."""
    db.session.refresh(task)
    agent_id = task.assigned_agent_id  # routing may have handed it to an earlier agent
    if agent_id is None:
        agent_id = make_agent(actors.fleet, at, capabilities=(task.capability_required,)).id
    assert [t.id for t in claim_tasks(actors.fleet, agent_id, 1, now=at)] == [task.id]
    if fail:
        return fail_task(actors.fleet, task.id, "boom", retryable=False, now=at)
    return complete_task(actors.fleet, task.id, {"ok": True}, now=at)


def finished(actors: Actors, at: datetime, **fields: Any) -> Task:
    return finish(actors, make_task(actors.client, at, **fields), at)


def ids_of(model: Any, column: Any) -> set[Any]:
    db.session.expire_all()
    return set(db.session.scalars(db.select(column)))


def task_ids() -> set[str]:
    return ids_of(Task, Task.id)


def rows_of(task_id: str) -> dict[str, int]:
    """How many rows of each dependent table name ``task_id``."""
    db.session.expire_all()
    count = db.func.count()
    return {
        "events": db.session.scalar(db.select(count).where(TaskEvent.task_id == task_id)),
        "attempts": db.session.scalar(db.select(count).where(TaskAttempt.task_id == task_id)),
        "trust": db.session.scalar(db.select(count).where(TrustRecord.task_id == task_id)),
        "edges": db.session.scalar(
            db.select(count).where(
                (TaskDependency.task_id == task_id) | (TaskDependency.depends_on_id == task_id)
            )
        ),
        "executions": db.session.scalar(
            db.select(count).where(ScheduleExecution.task_id == task_id)
        ),
    }


NONE = {"events": 0, "attempts": 0, "trust": 0, "edges": 0, "executions": 0}


def test_it_deletes_old_finished_tasks_with_all_their_rows_and_keeps_the_rest(
    actors: Actors,
) -> None:
    done = finished(actors, T0)
    old, agent_id = done.id, done.assigned_agent_id
    old_cancelled = make_task(actors.client, T0).id
    cancel_task(actors.client, old_cancelled, "no longer needed", now=T0)
    old_open = make_task(actors.client, T0).id  # waiting for a month: not finished
    recent = finished(actors, LATER - 29 * DAY).id
    # Created long ago but finished within the period: its end counts, not its start.
    slow = make_task(actors.client, T0)
    finish(actors, slow, LATER - DAY)
    slow_id = slow.id
    before = rows_of(old)
    assert before["events"] >= 3 and before["attempts"] == 1 and before["trust"] == 1
    assert agent_id is not None
    manual = trust.adjust_trust(  # names no task: the agent's history keeps it
        actors.admin, agent_id, 0.1, "bonus", now=T0
    ).id

    assert retention.prune(LATER) == 2
    assert task_ids() == {old_open, recent, slow_id}
    assert rows_of(old) == NONE and rows_of(old_cancelled)["events"] == 0
    assert rows_of(recent)["events"] >= 3 and rows_of(slow_id)["trust"] == 1
    assert manual in ids_of(TrustRecord, TrustRecord.id)
    assert retention.prune(LATER) == 0


def test_it_deletes_a_batch_per_call(actors: Actors) -> None:
    made = [finished(actors, T0 + timedelta(minutes=i)).id for i in range(5)]
    assert retention.prune(LATER, limit=2) == 2
    assert task_ids() == set(made[2:])  # the oldest first
    assert retention.prune(LATER, limit=2) == 2
    assert retention.prune(LATER, limit=2) == 1
    assert retention.prune(LATER, limit=2) == 0 and task_ids() == set()


def test_zero_days_keeps_tasks_forever(actors: Actors, monkeypatch: pytest.MonkeyPatch) -> None:
    task = finished(actors, T0)
    monkeypatch.setattr(retention_settings, "task_days", 0.0)
    monkeypatch.setattr(retention_settings, "failed_task_days", 0.0)
    assert retention.prune(T0 + 3650 * DAY) == 0
    assert sweep(T0 + 3650 * DAY)["tasks_pruned"] == 0
    assert task_ids() == {task.id}


def test_failed_tasks_follow_their_own_period(
    actors: Actors, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention_settings, "failed_task_days", 90.0)
    finished(actors, T0)
    failed = finish(actors, make_task(actors.client, T0), T0, fail=True)
    assert failed.status == TaskStatus.FAILED
    failed_id = failed.id
    assert retention.prune(LATER) == 1
    assert task_ids() == {failed_id}  # still in the dead letter
    assert retention.prune(T0 + 91 * DAY) == 1 and task_ids() == set()
    # And the other way round: failures pruned, the rest kept forever.
    monkeypatch.setattr(retention_settings, "task_days", 0.0)
    monkeypatch.setattr(retention_settings, "failed_task_days", 7.0)
    kept = finished(actors, T0).id
    finish(actors, make_task(actors.client, T0), T0, fail=True)
    assert retention.prune(LATER) == 1 and task_ids() == {kept}


def test_fractions_of_a_day_work_for_soak_tests(
    actors: Actors, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention_settings, "task_days", 0.01)  # 14.4 minutes
    finished(actors, T0)
    assert retention.prune(T0 + timedelta(minutes=14)) == 0
    assert retention.prune(T0 + timedelta(minutes=15)) == 1 and task_ids() == set()


def test_env_days_reads_fractions_and_refuses_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASK_RETENTION_DAYS", "0.01")
    assert env_days("TASK_RETENTION_DAYS", 30) == 0.01
    monkeypatch.setenv("TASK_RETENTION_DAYS", "")
    assert env_days("TASK_RETENTION_DAYS", 30) == 30
    for bad in ("-1", "nan", "inf", "a month"):
        monkeypatch.setenv("TASK_RETENTION_DAYS", bad)
        with pytest.raises(ConfigError, match="TASK_RETENTION_DAYS"):
            env_days("TASK_RETENTION_DAYS", 30)


def test_it_keeps_a_task_an_open_task_depends_on(actors: Actors) -> None:
    dependency = finished(actors, T0)
    # Submitted a month later, still waiting: it reads the dependency's status and result.
    dependent = make_task(
        actors.client,
        LATER - DAY,
        depends_on=[dependency.id],
        input_data={"previous": {"$from": dependency.id}},
    )
    assert dependent.status not in TaskStatus.TERMINAL
    assert retention.prune(LATER) == 0
    assert task_ids() == {dependency.id, dependent.id}
    # Once the dependent ends, the dependency goes (and so does the edge; the dependent
    # stays for its own period).
    finish(actors, dependent, LATER)
    assert retention.prune(LATER) == 1
    assert task_ids() == {dependent.id} and rows_of(dependent.id)["edges"] == 0
    assert retention.prune(LATER + 31 * DAY) == 1


def test_it_keeps_the_tasks_of_a_chain_still_running(actors: Actors) -> None:
    step = task_fields(task_type="report", capability_required="report-v1")
    chain = chains.create_chain(actors.client, "two", [step, step], now=T0)
    first = db.session.scalars(db.select(Task).where(Task.chain_id == chain.id)).one()
    finish(actors, first, T0)
    db.session.expire_all()
    assert db.session.get(TaskChain, chain.id).status == ChainStatus.RUNNING  # type: ignore[union-attr]
    assert retention.prune(LATER) == 0
    second = db.session.scalars(
        db.select(Task).where(Task.chain_id == chain.id, Task.chain_step == 1)
    ).one()
    finish(actors, second, T0 + DAY)
    db.session.expire_all()
    assert db.session.get(TaskChain, chain.id).status == ChainStatus.COMPLETED  # type: ignore[union-attr]
    assert retention.prune(T0 + 32 * DAY) == 2 and task_ids() == set()
    # The finished chain keeps its step results.
    db.session.expire_all()
    kept = db.session.get(TaskChain, chain.id)
    assert kept is not None and [r["step"] for r in kept.step_results] == [0, 1]


def test_it_keeps_a_task_whose_idempotency_key_is_live(
    actors: Actors, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention_settings, "task_days", 0.01)
    fields = task_fields()
    task, created = submit_task(actors.client, fields, idempotency_key="order-1", now=T0)
    assert created
    finish(actors, task, T0)
    task_id = task.id
    assert retention.prune(T0 + timedelta(hours=1)) == 0
    replay, created = submit_task(
        actors.client, fields, idempotency_key="order-1", now=T0 + timedelta(hours=1)
    )
    assert replay.id == task_id and not created
    ttl = timedelta(seconds=settings.idempotency_ttl_seconds)
    assert retention.prune(T0 + ttl + timedelta(seconds=1)) == 1 and task_ids() == set()


def test_it_deletes_the_schedule_runs_of_pruned_tasks(actors: Actors) -> None:
    body = {
        "task_type": "report",
        "capability_required": "report-v1",
        "cron_expression": "0 9 * * *",
    }
    parsed = ScheduleCreate.model_validate(body).model_dump(exclude_none=True)
    schedule = scheduling.create_schedule(actors.client, parsed, now=T0)
    _, task = scheduling.run_now(actors.client, schedule.id, now=T0)
    finish(actors, task, T0)
    old = task.id
    execution, recent = scheduling.run_now(actors.client, schedule.id, now=LATER)
    kept, recent_id = execution.id, recent.id
    assert rows_of(old)["executions"] == 1
    assert retention.prune(LATER) == 1
    # Not left behind with no task, where it would read as a SKIPPED run.
    assert ids_of(ScheduleExecution, ScheduleExecution.id) == {kept}
    assert task_ids() == {recent_id}


def test_webhook_events_and_audit_rows_outlive_their_task(actors: Actors) -> None:
    task = finished(actors, T0)
    event_id = new_id("evt")
    db.session.add(
        WebhookEvent(id=event_id, event="task.completed", task_id=task.id, body="{}", created_at=T0)
    )
    db.session.commit()
    audited = audit.record(
        actor="client:acme", action="task.cancel", target_type="task", target_id=task.id, now=T0
    ).id
    assert retention.prune(LATER) == 1 and task_ids() == set()
    # Each has its own retention (WEBHOOK_RETENTION_DAYS, AUDIT_RETENTION_DAYS).
    assert ids_of(WebhookEvent, WebhookEvent.id) == {event_id}
    assert ids_of(AuditEvent, AuditEvent.id) == {audited}


def test_the_sweep_prunes_a_batch_per_pass(
    actors: Actors, monkeypatch: pytest.MonkeyPatch, app_ctx: Flask
) -> None:
    monkeypatch.setattr(retention, "PRUNE_BATCH", 2)
    monkeypatch.setattr(retention, "rest", retention.Rest())
    for i in range(3):
        finished(actors, T0 + timedelta(minutes=i))
    last = finished(actors, LATER - 30 * DAY + timedelta(seconds=30)).id
    assert sweep(LATER)["tasks_pruned"] == 2
    assert sweep(LATER)["tasks_pruned"] == 1
    assert task_ids() == {last}
    # Caught up (less than a batch): the sweep rests a minute before it looks again.
    assert sweep(LATER + timedelta(seconds=59))["tasks_pruned"] == 0
    assert sweep(LATER + timedelta(seconds=60))["tasks_pruned"] == 1
    assert task_ids() == set() and ids_of(TaskEvent, TaskEvent.id) == set()


@pytest.mark.postgres_only
def test_a_task_being_named_in_depends_on_is_skipped_then_kept(app: Flask, actors: Actors) -> None:
    """A submit locks its dependencies FOR SHARE: the prune skips that task (SKIP LOCKED),
    and once the submit commits, the new open dependent keeps it."""
    dependency = finished(actors, T0).id
    other = finished(actors, T0).id
    db.session.rollback()
    holding, release = threading.Event(), threading.Event()

    def submit() -> None:
        fields = task_fields(depends_on=[dependency])
        dispatch.build_task(actors.client, fields, now=LATER)
        db.session.flush()
        holding.set()
        release.wait(5)
        db.session.commit()

    thread = in_thread(app, submit)
    assert holding.wait(5)
    assert retention.prune(LATER) == 1  # the other one; no wait for the submit's lock
    release.set()
    thread.join(5)
    assert not thread.is_alive()
    assert retention.prune(LATER) == 0
    assert dependency in task_ids() and other not in task_ids()
