"""scheduling.fire_due on a pinned clock: DST, odd dates, misfire and overlap policies, and
each due time firing exactly once however often the clocks call it."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask

from app.api.schemas import ScheduleCreate
from app.extensions import db
from app.lib.tokens import new_id
from app.models import (
    Schedule,
    ScheduleExecution,
    ScheduleStatus,
    Task,
    TaskEvent,
    TaskStatus,
)
from app.services import scheduling
from app.services.cancellation import cancel_task
from app.services.dispatch import claim_tasks
from app.services.errors import Conflict
from app.services.reports import complete_task, fail_task
from app.services.settings import settings
from tests.services.conftest import Actors
from tests.services.factories import make_agent

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
MINUTE = timedelta(minutes=1)
GRACE = timedelta(seconds=15)


@pytest.fixture(autouse=True)
def misfire_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "schedule_misfire_grace_seconds", int(GRACE.total_seconds()))


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def make_schedule(actors: Actors, now: datetime, **fields: Any) -> str:
    """A schedule created by client-1 at ``now``, its body parsed as the API parses it."""
    body = {"task_type": "report", "capability_required": "report-v1", **fields}
    parsed = ScheduleCreate.model_validate(body).model_dump(exclude_none=True)
    return scheduling.create_schedule(actors.client, parsed, now=now).id


def fresh(schedule_id: str) -> Schedule:
    db.session.expire_all()
    schedule = db.session.get(Schedule, schedule_id)
    assert schedule is not None
    return schedule


def executions(schedule_id: str) -> list[ScheduleExecution]:
    """The schedule's executions in due-time order."""
    db.session.expire_all()
    return list(
        db.session.scalars(
            db.select(ScheduleExecution)
            .where(ScheduleExecution.schedule_id == schedule_id)
            .order_by(ScheduleExecution.scheduled_for)
        )
    )


def fired(schedule_id: str) -> list[tuple[datetime, str]]:
    """(due time, trigger) of each execution, in due-time order."""
    return [(e.scheduled_for, e.trigger) for e in executions(schedule_id)]


def due_times_fired(schedule_id: str) -> list[datetime]:
    return [e.scheduled_for for e in executions(schedule_id)]


def task_count() -> int:
    return db.session.scalar(db.select(db.func.count()).select_from(Task)) or 0


def run_clock(start: datetime, end: datetime, step: timedelta = MINUTE) -> None:
    """A clock that calls fire_due every ``step`` from ``start`` to ``end`` inclusive."""
    now = start
    while now <= end:
        scheduling.fire_due(now=now)
        now += step


# ---------------------------------------------------------------------------------------
# What a run creates
# ---------------------------------------------------------------------------------------


def test_it_fires_a_due_schedule_into_a_task_for_its_client(actors: Actors) -> None:
    schedule_id = make_schedule(
        actors,
        T0,
        cron_expression="*/5 * * * *",
        task_type="nightly-report",
        input_data={"region": "eu", "n": [1, 2]},
        priority=8,
        max_retries=1,
        retry_policy="fixed",
        timeout_seconds=60,
        expires_in_seconds=600,
    )
    assert fresh(schedule_id).next_run_at == T0 + 5 * MINUTE

    assert scheduling.fire_due(now=T0 + 5 * MINUTE - timedelta(microseconds=1)).fired == 0
    assert executions(schedule_id) == []

    due = T0 + 5 * MINUTE
    result = scheduling.fire_due(now=due + timedelta(milliseconds=40))
    assert result.as_dict() == {"schedules": 1, "fired": 1, "skipped": 0}
    [execution] = executions(schedule_id)
    assert execution.scheduled_for == due
    assert execution.fired_at == due + timedelta(milliseconds=40)
    assert execution.trigger == "schedule"
    assert execution.to_dict(None)["lateness_ms"] == 40
    task = db.session.get(Task, execution.task_id)
    assert task is not None
    assert (task.client_id, task.task_type, task.capability_required) == (
        "client-1",
        "nightly-report",
        "report-v1",
    )
    assert task.input_data == {"region": "eu", "n": [1, 2]}
    assert (task.priority, task.max_retries, task.retry_policy, task.timeout_seconds) == (
        8,
        1,
        "fixed",
        60,
    )
    assert task.status == TaskStatus.PENDING
    assert task.expires_at == due + timedelta(milliseconds=40) + timedelta(seconds=600)
    assert task.created_by == f"schedule:{schedule_id}"
    [event] = db.session.scalars(db.select(TaskEvent).where(TaskEvent.task_id == task.id))
    assert (event.to_status, event.actor) == ("PENDING", f"schedule:{schedule_id}")

    schedule = fresh(schedule_id)
    assert schedule.next_run_at == T0 + 10 * MINUTE
    assert schedule.last_run_at == due + timedelta(milliseconds=40)
    assert schedule.status == ScheduleStatus.ACTIVE


def test_it_fires_every_schedule_that_is_due_and_none_that_is_not(actors: Actors) -> None:
    soon = make_schedule(actors, T0, interval_seconds=30)
    later = make_schedule(actors, T0, interval_seconds=3600)
    paused = make_schedule(actors, T0, interval_seconds=30)
    scheduling.pause_schedule(actors.client, paused, True, now=T0)

    result = scheduling.fire_due(now=T0 + timedelta(seconds=30))

    assert result.as_dict() == {"schedules": 1, "fired": 1, "skipped": 0}
    assert due_times_fired(soon) == [T0 + timedelta(seconds=30)]
    assert due_times_fired(later) == due_times_fired(paused) == []
    assert scheduling.next_fire_at() == T0 + timedelta(seconds=60)


def test_an_interval_schedule_keeps_its_spacing_from_its_anchor(actors: Actors) -> None:
    schedule_id = make_schedule(actors, T0, interval_seconds=90)
    # A clock ticking every second, a little late each time.
    run_clock(
        T0 + timedelta(milliseconds=300), T0 + timedelta(minutes=6, seconds=1), timedelta(seconds=1)
    )
    assert fired(schedule_id) == [(T0 + timedelta(seconds=90 * k), "schedule") for k in range(1, 5)]
    assert fresh(schedule_id).next_run_at == T0 + timedelta(seconds=450)


# ---------------------------------------------------------------------------------------
# DST and odd dates
# ---------------------------------------------------------------------------------------


def test_a_new_york_time_skipped_by_spring_forward_fires_once_at_the_change(
    actors: Actors,
) -> None:
    # 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00Z); 02:30 does not exist that night.
    schedule_id = make_schedule(
        actors, utc(2026, 3, 7, 12), cron_expression="30 2 * * *", timezone="America/New_York"
    )
    assert fresh(schedule_id).next_run_at == utc(2026, 3, 8, 7)
    run_clock(utc(2026, 3, 8, 5), utc(2026, 3, 8, 9))
    run_clock(utc(2026, 3, 9, 5), utc(2026, 3, 9, 8))
    assert fired(schedule_id) == [
        (utc(2026, 3, 8, 7), "schedule"),  # at the change, once
        (utc(2026, 3, 9, 6, 30), "schedule"),  # 02:30 EDT
    ]


def test_a_new_york_time_repeated_by_fall_back_fires_once(actors: Actors) -> None:
    # 2026-11-01: 02:00 EDT becomes 01:00 EST (06:00Z); 01:30 happens at 05:30Z and 06:30Z.
    schedule_id = make_schedule(
        actors, utc(2026, 10, 31, 12), cron_expression="30 1 * * *", timezone="America/New_York"
    )
    run_clock(utc(2026, 11, 1, 4), utc(2026, 11, 1, 8))
    run_clock(utc(2026, 11, 2, 5), utc(2026, 11, 2, 7))
    assert fired(schedule_id) == [
        (utc(2026, 11, 1, 5, 30), "schedule"),  # the first 01:30 only
        (utc(2026, 11, 2, 6, 30), "schedule"),  # 01:30 EST
    ]


def test_an_hourly_schedule_fires_at_both_one_oclocks_of_a_fall_back(actors: Actors) -> None:
    schedule_id = make_schedule(
        actors, utc(2026, 11, 1, 3, 30), cron_expression="0 * * * *", timezone="America/New_York"
    )
    run_clock(utc(2026, 11, 1, 3, 30), utc(2026, 11, 1, 7, 30))
    assert due_times_fired(schedule_id) == [
        utc(2026, 11, 1, 4),  # 00:00 EDT
        utc(2026, 11, 1, 5),  # 01:00 EDT
        utc(2026, 11, 1, 6),  # 01:00 EST
        utc(2026, 11, 1, 7),  # 02:00 EST
    ]
    assert fresh(schedule_id).next_run_at == utc(2026, 11, 1, 8)


def test_london_spring_forward_and_fall_back(actors: Actors) -> None:
    # 2026-03-29 01:00Z: 01:00 GMT becomes 02:00 BST. 2026-10-25 01:00Z: 02:00 BST → 01:00 GMT.
    spring = make_schedule(
        actors, utc(2026, 3, 27, 12), cron_expression="30 1 * * *", timezone="Europe/London"
    )
    autumn = make_schedule(
        actors, utc(2026, 10, 23, 12), cron_expression="30 1 * * *", timezone="Europe/London"
    )
    half_hourly = make_schedule(
        actors, utc(2026, 10, 24, 23), cron_expression="*/30 * * * *", timezone="Europe/London"
    )
    for day in (utc(2026, 3, 28), utc(2026, 3, 29), utc(2026, 3, 30)):
        run_clock(day, day + timedelta(hours=3))
    for day in (utc(2026, 10, 24), utc(2026, 10, 25), utc(2026, 10, 26)):
        run_clock(day - timedelta(hours=1), day + timedelta(hours=3))
    assert [t for t in due_times_fired(spring) if t < utc(2026, 4, 1)] == [
        utc(2026, 3, 28, 1, 30),  # 01:30 GMT
        utc(2026, 3, 29, 1, 0),  # 01:30 does not exist: at the change
        utc(2026, 3, 30, 0, 30),  # 01:30 BST
    ]
    assert due_times_fired(autumn) == [
        utc(2026, 10, 24, 0, 30),  # 01:30 BST
        utc(2026, 10, 25, 0, 30),  # the first of the two 01:30s
        utc(2026, 10, 26, 1, 30),  # 01:30 GMT
    ]
    night = [t for t in due_times_fired(half_hourly) if utc(2026, 10, 24, 23, 30) <= t]
    night = [t for t in night if t <= utc(2026, 10, 25, 2)]
    # Every 30 minutes of real time, through both passes of the repeated hour.
    assert night == [utc(2026, 10, 24, 23, 30) + timedelta(minutes=30 * k) for k in range(6)]


def test_a_leap_day_schedule_waits_for_the_next_leap_year(actors: Actors) -> None:
    schedule_id = make_schedule(actors, utc(2026, 3, 1), cron_expression="0 0 29 2 *")
    assert fresh(schedule_id).next_run_at == utc(2028, 2, 29)
    assert scheduling.fire_due(now=utc(2027, 2, 28, 23, 59)).fired == 0
    assert scheduling.fire_due(now=utc(2028, 2, 29)).fired == 1
    assert due_times_fired(schedule_id) == [utc(2028, 2, 29)]
    assert fresh(schedule_id).next_run_at == utc(2032, 2, 29)


def test_a_day_31_schedule_skips_shorter_months(actors: Actors) -> None:
    schedule_id = make_schedule(actors, utc(2026, 1, 31, 1), cron_expression="0 0 31 * *")
    assert fresh(schedule_id).next_run_at == utc(2026, 3, 31)
    for now in (utc(2026, 2, 28), utc(2026, 3, 1), utc(2026, 3, 31), utc(2026, 4, 30)):
        scheduling.fire_due(now=now)
    assert due_times_fired(schedule_id) == [utc(2026, 3, 31)]
    assert fresh(schedule_id).next_run_at == utc(2026, 5, 31)


def test_a_seconds_cron_fires_each_second_it_names(actors: Actors) -> None:
    schedule_id = make_schedule(actors, T0, cron_expression="*/20 * * * * *")
    run_clock(T0, T0 + MINUTE, timedelta(seconds=1))
    assert due_times_fired(schedule_id) == [T0 + timedelta(seconds=s) for s in (20, 40, 60)]


# ---------------------------------------------------------------------------------------
# One-time schedules
# ---------------------------------------------------------------------------------------


def test_a_one_time_schedule_fires_once_then_completes(actors: Actors) -> None:
    run_at = T0 + timedelta(hours=1)
    schedule_id = make_schedule(actors, T0, run_at=run_at.isoformat())
    assert fresh(schedule_id).next_run_at == run_at
    assert scheduling.fire_due(now=run_at - timedelta(seconds=1)).fired == 0

    assert scheduling.fire_due(now=run_at + timedelta(seconds=2)).fired == 1

    assert fired(schedule_id) == [(run_at, "schedule")]
    schedule = fresh(schedule_id)
    assert schedule.status == ScheduleStatus.COMPLETED
    assert schedule.next_run_at is None
    assert schedule.last_run_at == run_at + timedelta(seconds=2)
    for later in (run_at + timedelta(seconds=3), run_at + timedelta(days=400)):
        assert scheduling.fire_due(now=later).fired == 0
    assert len(executions(schedule_id)) == 1 and task_count() == 1


def test_a_one_time_schedule_missed_under_skip_ends_failed(actors: Actors) -> None:
    run_at = T0 + timedelta(hours=1)
    schedule_id = make_schedule(actors, T0, run_at=run_at.isoformat(), misfire_policy="skip")

    scheduling.fire_due(now=run_at + GRACE + timedelta(milliseconds=1))

    assert executions(schedule_id) == [] and task_count() == 0
    schedule = fresh(schedule_id)
    assert schedule.status == ScheduleStatus.FAILED
    assert schedule.next_run_at is None and schedule.last_run_at is None
    assert schedule.last_error is not None and "missed" in schedule.last_error


def test_a_one_time_schedule_late_within_the_grace_fires_under_skip(actors: Actors) -> None:
    run_at = T0 + timedelta(hours=1)
    schedule_id = make_schedule(actors, T0, run_at=run_at.isoformat(), misfire_policy="skip")
    scheduling.fire_due(now=run_at + GRACE)
    assert fired(schedule_id) == [(run_at, "schedule")]
    assert fresh(schedule_id).status == ScheduleStatus.COMPLETED


def test_a_missed_one_time_schedule_catches_up_under_fire_once(actors: Actors) -> None:
    run_at = T0 + timedelta(hours=1)
    schedule_id = make_schedule(actors, T0, run_at=run_at.isoformat())
    scheduling.fire_due(now=run_at + timedelta(hours=5))
    assert fired(schedule_id) == [(run_at, "catch_up")]
    assert fresh(schedule_id).status == ScheduleStatus.COMPLETED


# ---------------------------------------------------------------------------------------
# Misfire policies after downtime
# ---------------------------------------------------------------------------------------


def every_minute_after_downtime(actors: Actors, policy: str) -> str:
    """An every-minute schedule that fired 09:01, then no clock ran until 09:11:30.

    Due times 09:02 … 09:11 (ten) were all missed by more than the grace.
    """
    schedule_id = make_schedule(actors, T0, cron_expression="* * * * *", misfire_policy=policy)
    scheduling.fire_due(now=T0 + MINUTE)
    assert fired(schedule_id) == [(T0 + MINUTE, "schedule")]
    scheduling.fire_due(now=T0 + 11 * MINUTE + timedelta(seconds=30))
    assert fresh(schedule_id).next_run_at == T0 + 12 * MINUTE
    return schedule_id


def test_fire_once_makes_one_catch_up_run_after_downtime(actors: Actors) -> None:
    schedule_id = every_minute_after_downtime(actors, "fire_once")
    assert fired(schedule_id)[1:] == [(T0 + 11 * MINUTE, "catch_up")]
    assert task_count() == 2


def test_skip_makes_no_run_for_due_times_missed_in_downtime(actors: Actors) -> None:
    schedule_id = every_minute_after_downtime(actors, "skip")
    assert fired(schedule_id)[1:] == []
    assert task_count() == 1
    scheduling.fire_due(now=T0 + 12 * MINUTE)
    assert fired(schedule_id)[1:] == [(T0 + 12 * MINUTE, "schedule")]


def test_fire_all_makes_one_run_per_missed_due_time(actors: Actors) -> None:
    schedule_id = every_minute_after_downtime(actors, "fire_all")
    assert fired(schedule_id)[1:] == [(T0 + k * MINUTE, "catch_up") for k in range(2, 12)]
    assert task_count() == 11
    # Each run is its own task, in due-time order in the queue.
    tasks = [db.session.get(Task, e.task_id) for e in executions(schedule_id)[1:]]
    assert len({t.id for t in tasks if t}) == 10
    enqueued = [t.enqueued_at for t in tasks if t]
    assert enqueued == sorted(enqueued)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # Missed: 09:02-09:10; 09:11 is 10 s late, within the grace.
        ("skip", [(T0 + 11 * MINUTE, "schedule")]),
        (
            "fire_all",
            [(T0 + k * MINUTE, "catch_up") for k in range(2, 11)]
            + [(T0 + 11 * MINUTE, "schedule")],
        ),
        ("fire_once", [(T0 + 11 * MINUTE, "catch_up")]),
    ],
)
def test_a_due_time_within_the_grace_still_fires_after_downtime(
    actors: Actors, policy: str, expected: list[tuple[datetime, str]]
) -> None:
    schedule_id = make_schedule(actors, T0, cron_expression="* * * * *", misfire_policy=policy)
    scheduling.fire_due(now=T0 + MINUTE)
    scheduling.fire_due(now=T0 + 11 * MINUTE + timedelta(seconds=10))
    assert fired(schedule_id)[1:] == expected


def test_late_within_the_grace_is_not_a_misfire(actors: Actors) -> None:
    schedule_id = make_schedule(actors, T0, cron_expression="* * * * *", misfire_policy="skip")
    scheduling.fire_due(now=T0 + MINUTE + GRACE)
    scheduling.fire_due(now=T0 + 2 * MINUTE + GRACE)
    assert fired(schedule_id) == [(T0 + MINUTE, "schedule"), (T0 + 2 * MINUTE, "schedule")]


@pytest.mark.parametrize("timing", [{"cron_expression": "* * * * *"}, {"interval_seconds": 60}])
def test_fire_all_catches_up_on_the_latest_100_at_most(
    actors: Actors, timing: dict[str, Any]
) -> None:
    schedule_id = make_schedule(actors, T0, misfire_policy="fire_all", **timing)
    # Three hours down: 180 due times missed, 09:01 … 12:00.
    now = T0 + timedelta(hours=3, seconds=30)

    result = scheduling.fire_due(now=now)

    assert result.fired == 100
    times = due_times_fired(schedule_id)
    assert times == [T0 + k * MINUTE for k in range(81, 181)]
    assert task_count() == 100
    assert fresh(schedule_id).next_run_at == T0 + 181 * MINUTE


def test_a_long_downtime_under_fire_once_is_one_run(actors: Actors) -> None:
    schedule_id = make_schedule(actors, T0, interval_seconds=1)
    scheduling.fire_due(now=T0 + timedelta(days=3, milliseconds=500))
    assert fired(schedule_id) == [(T0 + timedelta(days=3), "catch_up")]
    assert fresh(schedule_id).next_run_at == T0 + timedelta(days=3, seconds=1)


# ---------------------------------------------------------------------------------------
# Overlap policies
# ---------------------------------------------------------------------------------------


def test_overlap_skip_skips_while_the_previous_task_is_unfinished(actors: Actors) -> None:
    schedule_id = make_schedule(
        actors, T0, cron_expression="* * * * *", overlap_policy="skip", timeout_seconds=600
    )
    # Registered as the run fires: a fresh heartbeat, so the task is routed to it.
    agent = make_agent(actors.fleet, T0 + MINUTE)
    scheduling.fire_due(now=T0 + MINUTE)
    [first] = executions(schedule_id)
    # Claimed and running: still unfinished.
    assert [t.id for t in claim_tasks(actors.fleet, agent.id, 1, now=T0 + MINUTE)] == [
        first.task_id
    ]

    result = scheduling.fire_due(now=T0 + 2 * MINUTE)

    assert result.as_dict() == {"schedules": 1, "fired": 0, "skipped": 1}
    skipped = executions(schedule_id)[1]
    assert skipped.scheduled_for == T0 + 2 * MINUTE
    assert skipped.task_id is None
    assert skipped.note is not None and first.task_id in skipped.note
    shown = skipped.to_dict(None)
    assert shown["status"] == "SKIPPED" and shown["error_message"] == skipped.note
    assert task_count() == 1
    assert fresh(schedule_id).next_run_at == T0 + 3 * MINUTE
    # Skipped runs neither count as runs nor move last_run_at.
    assert fresh(schedule_id).last_run_at == T0 + MINUTE
    counts = scheduling.run_counts([schedule_id])[schedule_id]
    assert (counts.total, counts.failed) == (1, 0)

    assert first.task_id is not None
    complete_task(actors.fleet, first.task_id, {"ok": True}, now=T0 + 2 * MINUTE + GRACE)
    scheduling.fire_due(now=T0 + 3 * MINUTE)

    assert [(e.scheduled_for, e.task_id is not None) for e in executions(schedule_id)] == [
        (T0 + MINUTE, True),
        (T0 + 2 * MINUTE, False),
        (T0 + 3 * MINUTE, True),
    ]


def test_overlap_skip_fires_again_once_the_previous_task_failed_or_was_cancelled(
    actors: Actors,
) -> None:
    schedule_id = make_schedule(
        actors, T0, cron_expression="* * * * *", overlap_policy="skip", max_retries=0
    )
    agent = make_agent(actors.fleet, T0 + MINUTE)  # fresh when the run fires
    scheduling.fire_due(now=T0 + MINUTE)
    [first] = executions(schedule_id)
    assert first.task_id is not None
    claim_tasks(actors.fleet, agent.id, 1, now=T0 + MINUTE)
    fail_task(actors.fleet, first.task_id, "boom", retryable=False, now=T0 + MINUTE)
    scheduling.fire_due(now=T0 + 2 * MINUTE)
    second = executions(schedule_id)[1]
    assert second.task_id is not None
    cancel_task(actors.client, second.task_id, "not now", now=T0 + 2 * MINUTE)
    scheduling.fire_due(now=T0 + 3 * MINUTE)
    assert all(e.task_id is not None for e in executions(schedule_id))
    assert len(executions(schedule_id)) == 3
    counts = scheduling.run_counts([schedule_id])[schedule_id]
    assert (counts.total, counts.failed) == (3, 2)


def test_overlap_allow_fires_whatever_the_previous_task_is_doing(actors: Actors) -> None:
    schedule_id = make_schedule(actors, T0, cron_expression="* * * * *")
    run_clock(T0 + MINUTE, T0 + 3 * MINUTE)
    assert [e.task_id is not None for e in executions(schedule_id)] == [True, True, True]
    assert task_count() == 3


def test_overlap_skip_with_fire_all_makes_one_task_per_catch_up(actors: Actors) -> None:
    schedule_id = make_schedule(
        actors, T0, cron_expression="* * * * *", overlap_policy="skip", misfire_policy="fire_all"
    )
    result = scheduling.fire_due(now=T0 + 5 * MINUTE + timedelta(seconds=30))
    assert result.as_dict() == {"schedules": 1, "fired": 1, "skipped": 4}
    assert [e.task_id is not None for e in executions(schedule_id)] == [
        True,
        False,
        False,
        False,
        False,
    ]


# ---------------------------------------------------------------------------------------
# Exactly once
# ---------------------------------------------------------------------------------------


def test_firing_twice_for_the_same_instant_creates_nothing_the_second_time(
    actors: Actors,
) -> None:
    schedule_id = make_schedule(actors, T0, cron_expression="* * * * *", misfire_policy="fire_all")
    now = T0 + 3 * MINUTE + timedelta(seconds=40)
    assert scheduling.fire_due(now=now).fired == 3
    assert scheduling.fire_due(now=now).as_dict() == {"schedules": 0, "fired": 0, "skipped": 0}
    assert scheduling.fire_due(now=now - MINUTE).fired == 0
    assert len(executions(schedule_id)) == 3 and task_count() == 3


def test_clocks_racing_fire_each_due_time_once(app: Flask, actors: Actors) -> None:
    """Several clock processes at once: the row lock and the unique due time settle it.

    On PostgreSQL the passes really overlap (one locks, the others skip or find the
    schedule no longer due); on SQLite the single writer serialises them.
    """
    ids = [
        make_schedule(actors, T0, cron_expression="* * * * *", misfire_policy="fire_all")
        for _ in range(5)
    ]
    db.session.remove()
    clocks = 6
    start = threading.Barrier(clocks)
    results: list[scheduling.FireResult | BaseException] = []

    def clock(now: datetime) -> None:
        with app.app_context():
            start.wait()
            try:
                results.append(scheduling.fire_due(now=now))
            except BaseException as exc:  # reported below, not lost in the thread
                results.append(exc)
            finally:
                db.session.remove()

    # Each clock's own reading of the time, a few milliseconds apart, 20 minutes late.
    nows = [T0 + 20 * MINUTE + timedelta(seconds=30, milliseconds=k) for k in range(clocks)]
    threads = [threading.Thread(target=clock, args=(now,)) for now in nows]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)

    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sum(r.fired for r in results if isinstance(r, scheduling.FireResult)) == 5 * 20
    for schedule_id in ids:
        assert due_times_fired(schedule_id) == [T0 + k * MINUTE for k in range(1, 21)]
    assert task_count() == 5 * 20


def test_a_due_time_that_already_has_an_execution_makes_no_second_task(actors: Actors) -> None:
    schedule_id = make_schedule(actors, T0, cron_expression="* * * * *")
    other = make_schedule(actors, T0, cron_expression="* * * * *")
    # Another clock got this due time in (its row is there) while this one still sees it due.
    db.session.add(
        ScheduleExecution(
            id=new_id("exec"),
            schedule_id=schedule_id,
            scheduled_for=T0 + MINUTE,
            fired_at=T0 + MINUTE,
            trigger="schedule",
            note="fired elsewhere",
        )
    )
    db.session.commit()

    scheduling.fire_due(now=T0 + MINUTE)

    [execution] = executions(schedule_id)
    assert execution.note == "fired elsewhere" and execution.task_id is None
    # The other schedule due at the same instant is not held up by it.
    assert due_times_fired(other) == [T0 + MINUTE]
    assert task_count() == 1
    # Nor is this schedule stuck on that due time: the next one fires normally.
    assert fresh(schedule_id).next_run_at == T0 + 2 * MINUTE
    scheduling.fire_due(now=T0 + 2 * MINUTE)
    assert due_times_fired(schedule_id) == [T0 + MINUTE, T0 + 2 * MINUTE]
    assert task_count() == 3


def test_a_schedule_that_cannot_make_its_task_fails_alone(actors: Actors) -> None:
    broken = make_schedule(actors, T0, cron_expression="* * * * *")
    healthy = make_schedule(actors, T0, cron_expression="* * * * *")
    # A stored expression that no longer parses (written before a validation change).
    db.session.execute(
        db.update(Schedule).where(Schedule.id == broken).values(cron_expression="61 * * * *")
    )
    db.session.commit()

    scheduling.fire_due(now=T0 + MINUTE)

    schedule = fresh(broken)
    assert schedule.status == ScheduleStatus.FAILED
    assert schedule.next_run_at is None
    assert schedule.last_error is not None and "minute" in schedule.last_error
    assert executions(broken) == []
    assert due_times_fired(healthy) == [T0 + MINUTE]


# ---------------------------------------------------------------------------------------
# Edits, pauses and deletes take effect on the next pass
# ---------------------------------------------------------------------------------------


def test_a_paused_schedule_never_fires_and_resumes_from_now(actors: Actors) -> None:
    schedule_id = make_schedule(actors, T0, cron_expression="* * * * *")
    scheduling.pause_schedule(actors.client, schedule_id, True, now=T0 + timedelta(seconds=30))
    run_clock(T0 + MINUTE, T0 + 5 * MINUTE)
    assert executions(schedule_id) == []

    resumed = scheduling.pause_schedule(
        actors.client, schedule_id, False, now=T0 + 5 * MINUTE + timedelta(seconds=30)
    )
    assert resumed.next_run_at == T0 + 6 * MINUTE
    scheduling.fire_due(now=T0 + 6 * MINUTE)
    # The runs due during the pause are not owed: no catch-up.
    assert fired(schedule_id) == [(T0 + 6 * MINUTE, "schedule")]


def test_an_edit_takes_effect_on_the_next_pass(actors: Actors) -> None:
    schedule_id = make_schedule(actors, T0, cron_expression="* * * * *", priority=2)
    scheduling.fire_due(now=T0 + MINUTE)
    scheduling.update_schedule(
        actors.client,
        schedule_id,
        {"cron_expression": "0 10 * * *", "priority": 9, "input_data": {"v": 2}},
        now=T0 + MINUTE + timedelta(seconds=5),
    )
    run_clock(T0 + 2 * MINUTE, T0 + 5 * MINUTE)
    assert due_times_fired(schedule_id) == [T0 + MINUTE]
    assert fresh(schedule_id).next_run_at == utc(2026, 3, 2, 10)

    scheduling.fire_due(now=utc(2026, 3, 2, 10))
    latest = executions(schedule_id)[-1]
    assert latest.scheduled_for == utc(2026, 3, 2, 10)
    task = db.session.get(Task, latest.task_id)
    assert task is not None and (task.priority, task.input_data) == (9, {"v": 2})


def test_a_deleted_schedule_never_fires_again(actors: Actors) -> None:
    schedule_id = make_schedule(actors, T0, interval_seconds=60)
    scheduling.fire_due(now=T0 + MINUTE)
    scheduling.delete_schedule(actors.client, schedule_id, now=T0 + MINUTE + timedelta(seconds=1))
    run_clock(T0 + 2 * MINUTE, T0 + 10 * MINUTE)
    assert due_times_fired(schedule_id) == [T0 + MINUTE]
    schedule = fresh(schedule_id)
    assert schedule.status == ScheduleStatus.DELETED and schedule.next_run_at is None
    assert scheduling.next_fire_at() is None


def test_run_now_leaves_the_next_due_time_alone(actors: Actors) -> None:
    schedule_id = make_schedule(actors, T0, cron_expression="0 * * * *", overlap_policy="skip")
    execution, task = scheduling.run_now(actors.client, schedule_id, now=T0 + MINUTE)
    assert (execution.trigger, execution.scheduled_for, execution.task_id) == (
        "run_now",
        T0 + MINUTE,
        task.id,
    )
    schedule = fresh(schedule_id)
    assert schedule.next_run_at == utc(2026, 3, 2, 10)
    assert schedule.last_run_at == T0 + MINUTE
    # Its task is unfinished, so under overlap skip the 10:00 run is skipped.
    scheduling.fire_due(now=utc(2026, 3, 2, 10))
    assert [e.task_id is None for e in executions(schedule_id)] == [False, True]


# ---------------------------------------------------------------------------------------
# Long outages, stale edits and failures stay cheap and contained
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["fire_once", "fire_all"])
def test_a_seconds_cron_after_days_down_catches_up_on_the_latest_due_times(
    actors: Actors, policy: str
) -> None:
    schedule_id = make_schedule(actors, T0, cron_expression="* * * * * *", misfire_policy=policy)
    now = T0 + timedelta(days=3, milliseconds=500)
    started = datetime.now(UTC)

    scheduling.fire_due(now=now)

    # Counted back from now, not walked forward through 259,200 missed seconds.
    assert datetime.now(UTC) - started < timedelta(seconds=5)
    latest = T0 + timedelta(days=3)
    expected = (
        [latest]
        if policy == "fire_once"
        else [latest - timedelta(seconds=k) for k in range(99, -1, -1)]
    )
    assert due_times_fired(schedule_id) == expected
    assert fresh(schedule_id).next_run_at == latest + timedelta(seconds=1)


def test_a_timing_sent_back_unchanged_keeps_the_anchor_and_the_due_run(actors: Actors) -> None:
    schedule_id = make_schedule(actors, T0, interval_seconds=3600)
    later = T0 + timedelta(minutes=59)
    scheduling.update_schedule(
        actors.client, schedule_id, {"interval_seconds": 3600, "description": "x"}, now=later
    )
    assert fresh(schedule_id).next_run_at == T0 + timedelta(hours=1)

    cron_id = make_schedule(actors, T0, cron_expression="0 10 * * *")
    # Re-sent 5 s after 10:00, before any clock fired it: the 10:00 run is still owed.
    scheduling.update_schedule(
        actors.client,
        cron_id,
        {"cron_expression": "0  10 * * *", "timezone": None},
        now=utc(2026, 3, 2, 10, 0, 5),
    )
    assert fresh(cron_id).next_run_at == utc(2026, 3, 2, 10)
    assert fresh(cron_id).cron_expression == "0 10 * * *"


def test_resuming_a_one_time_schedule_whose_time_passed_is_refused(actors: Actors) -> None:
    schedule_id = make_schedule(actors, T0, run_at=(T0 + MINUTE).isoformat())
    scheduling.pause_schedule(actors.client, schedule_id, True, now=T0)
    with pytest.raises(Conflict, match="passed while it was paused"):
        scheduling.pause_schedule(actors.client, schedule_id, False, now=T0 + 2 * MINUTE)
    assert fresh(schedule_id).status == ScheduleStatus.PAUSED
    assert task_count() == 0


def test_an_unexpected_error_on_one_schedule_does_not_hold_up_the_others(
    actors: Actors, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = make_schedule(actors, T0 - MINUTE, cron_expression="* * * * *")
    healthy = make_schedule(actors, T0, cron_expression="* * * * *")
    real = scheduling.plan_runs

    def flaky(schedule: Schedule, now: datetime) -> list[scheduling.Run]:
        if schedule.id == broken:
            raise RuntimeError("connection reset (injected)")
        return real(schedule, now)

    monkeypatch.setattr(scheduling, "plan_runs", flaky)
    scheduling.fire_due(now=T0 + MINUTE)

    assert due_times_fired(healthy) == [T0 + MINUTE]
    # Retried on the next pass, not failed for good.
    assert fresh(broken).status == ScheduleStatus.ACTIVE
    assert executions(broken) == []
    monkeypatch.setattr(scheduling, "plan_runs", real)
    scheduling.fire_due(now=T0 + MINUTE)
    assert due_times_fired(broken) == [T0 + MINUTE]


def test_a_failing_schedule_deleted_meanwhile_stays_deleted(actors: Actors) -> None:
    schedule_id = make_schedule(actors, T0, cron_expression="* * * * *")
    scheduling.delete_schedule(actors.client, schedule_id, now=T0)
    scheduling.mark_failed(schedule_id, "could not fire: injected", T0 + MINUTE)
    assert fresh(schedule_id).status == ScheduleStatus.DELETED
