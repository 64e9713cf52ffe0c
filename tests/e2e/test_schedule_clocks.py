"""Two clock processes and a real worker fire 20 every-second schedules: none twice, none missed.

Ten schedules are the cron `* * * * * *` (seconds first) and ten `interval_seconds: 1`.
After the processes have run for RUN_SECONDS, every due time inside the measured window
(which leaves out the start-up and the stop) must have exactly one execution, and every
execution exactly one task. Run in both firing modes: `precise` (the clocks fire from their
own thread) and `tick` (the clocks enqueue a firing job every second for the worker).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
from flask import Flask

from app.extensions import db
from app.lib.clock import utcnow
from app.models import Schedule, ScheduleExecution, ScheduleStatus, Task
from app.services import scheduling
from app.services.principal import SYSTEM
from tests.processes import ARTIFACTS, Process, process_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCHEDULES = 20
RUN_SECONDS = 30.0
WARM_UP_SECONDS = 30.0


def create_schedules(app: Flask) -> list[str]:
    with app.app_context():
        ids = []
        for n in range(SCHEDULES):
            timing = {"cron_expression": "* * * * * *"} if n % 2 == 0 else {"interval_seconds": 1}
            fields = {
                "client_id": "clocks",
                "task_type": f"tick-{n}",
                "capability_required": "nobody-v1",
                **timing,
            }
            ids.append(scheduling.create_schedule(SYSTEM, fields).id)
        return ids


def executions(app: Flask) -> list[tuple[str, datetime, datetime, str | None]]:
    with app.app_context():
        rows = db.session.execute(
            db.select(
                ScheduleExecution.schedule_id,
                ScheduleExecution.scheduled_for,
                ScheduleExecution.fired_at,
                ScheduleExecution.task_id,
            )
        ).all()
        db.session.rollback()
        return [tuple(r) for r in rows]  # type: ignore[misc]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


@pytest.mark.parametrize("mode", ["precise", "tick"])
def test_two_clocks_fire_every_due_time_exactly_once(
    app: Flask, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = create_schedules(app)
    env = process_env(app, SCHEDULE_FIRING=mode)
    processes = [
        Process(f"sched-{mode}-worker", [sys.executable, "-m", "jobs.worker"], env),
        Process(f"sched-{mode}-clock-1", [sys.executable, "-m", "jobs.clock"], env),
        Process(f"sched-{mode}-clock-2", [sys.executable, "-m", "jobs.clock"], env),
    ]
    try:
        deadline = time.monotonic() + WARM_UP_SECONDS
        while not executions(app):
            assert time.monotonic() < deadline, [p.output()[-2000:] for p in processes]
            time.sleep(0.2)
        # Both clocks and the worker are up by now (the slower one within a few seconds).
        window_start = utcnow() + timedelta(seconds=3)
        time.sleep(RUN_SECONDS)
        window_end = utcnow() - timedelta(seconds=2)
    finally:
        for process in processes:
            process.stop()
    for process in processes:
        assert "Traceback" not in process.output(), process.output()[-3000:]

    rows = executions(app)
    with app.app_context():
        schedules = {s.id: s for s in db.session.scalars(db.select(Schedule))}
        task_ids = set(db.session.scalars(db.select(Task.id)))
        expected: dict[str, list[datetime]] = {}
        for schedule_id in ids:
            schedule = schedules[schedule_id]
            assert schedule.status == ScheduleStatus.ACTIVE
            first = scheduling.next_due(schedule, window_start - timedelta(microseconds=1))
            assert first is not None
            expected[schedule_id] = scheduling.due_times(schedule, first, window_end)

    per_due = Counter((schedule_id, due) for schedule_id, due, _, _ in rows)
    duplicates = sum(n - 1 for n in per_due.values() if n > 1)
    missed = [
        (schedule_id, due.isoformat())
        for schedule_id, dues in expected.items()
        for due in dues
        if per_due[(schedule_id, due)] == 0
    ]
    linked = Counter(task_id for *_, task_id in rows)
    lateness = [
        (fired - due).total_seconds() * 1000
        for _, due, fired, _ in rows
        if window_start <= due <= window_end
    ]
    summary = {
        "mode": mode,
        "schedules": SCHEDULES,
        "window_seconds": round((window_end - window_start).total_seconds(), 1),
        "due_in_window": sum(len(d) for d in expected.values()),
        "executions": len(rows),
        "duplicates": duplicates,
        "missed": len(missed),
        "lateness_ms": {
            "p50": round(statistics.median(lateness), 1),
            "p99": round(percentile(lateness, 0.99), 1),
            "max": round(max(lateness), 1),
        },
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"schedule-clocks-{mode}.json").write_text(json.dumps(summary, indent=2))
    with capsys.disabled():
        print(f"\nschedule clocks: {json.dumps(summary)}")

    assert summary["due_in_window"] >= SCHEDULES * (RUN_SECONDS - 6)
    assert duplicates == 0
    assert missed == [], missed[:10]
    # Each execution made its own task, and every task came from one execution.
    assert all(task_id is not None for *_, task_id in rows)
    assert max(linked.values()) == 1
    assert set(linked) <= task_ids
    assert len(task_ids) == len(rows)
