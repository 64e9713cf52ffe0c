"""Exactly-once claim under concurrent claimers: threads, and separate processes.

The claimers heartbeat as real agents do, and the lease is cut to a few seconds, so the
PostgreSQL drains outlive it many times over on any machine: routing skips agents silent
for a lease, and claimers that did not heartbeat once failed only on slow CI runs, the ones
that went past the 30-second default lease, leaving the rest of the queue unassigned.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import func

from app.extensions import db
from app.lib.clock import utcnow
from app.models import Task, TaskEvent, TaskStatus
from app.services import dispatch
from app.services.principal import Principal
from app.services.settings import settings
from tests.conftest import IS_POSTGRES
from tests.e2e.claimers import drain, drain_in_process

CAPABILITY = "drain-v1"
# Heartbeat every 2 s, lease 6 s (3 misses): a PostgreSQL drain lasts several leases.
HEARTBEAT_SECONDS = 2


@pytest.fixture(autouse=True)
def short_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    """Routing's freshness window, shorter than a drain (the spawned processes are given
    the same interval)."""
    monkeypatch.setattr(settings, "heartbeat_interval_seconds", HEARTBEAT_SECONDS)
    monkeypatch.setattr(settings, "heartbeat_misses_allowed", 3)


def seed_tasks(app: Flask, count: int) -> None:
    client = Principal(role="client", name="c", client_id="client-1")
    fields = {
        "task_type": "t",
        "capability_required": CAPABILITY,
        "input_data": {},
        "priority": 5,
        "max_retries": 0,
        "retry_policy": "fixed",
        "timeout_seconds": 300,
    }
    with app.app_context():
        now = utcnow() - timedelta(seconds=5)
        for start in range(0, count, 100):
            items = [
                dict(fields, input_data={"n": n}) for n in range(start, min(count, start + 100))
            ]
            dispatch.submit_batch(client, items, atomic=True, now=now)
        db.session.remove()


def assert_drained_once(app: Flask, claimed: list[str], count: int) -> None:
    duplicates = [task_id for task_id, n in Counter(claimed).items() if n > 1]
    assert duplicates == [], f"{len(duplicates)} tasks handed out twice"
    assert len(claimed) == count
    with app.app_context():
        by_status = dict(
            db.session.execute(db.select(Task.status, func.count()).group_by(Task.status)).all()
        )
        assert by_status == {TaskStatus.COMPLETED: count}
        claims = db.session.scalar(
            db.select(func.count())
            .select_from(TaskEvent)
            .where(TaskEvent.to_status == TaskStatus.ACTIVE)
        )
        assert claims == count, "every task is claimed by exactly one event"
        db.session.remove()


def run_threads(app: Flask, threads: int, batch: int) -> list[str]:
    def worker() -> list[str]:
        with app.app_context():
            return drain(CAPABILITY, batch)

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(worker) for _ in range(threads)]
    errors = [repr(f.exception()) for f in futures if f.exception() is not None]
    assert errors == [], f"{len(errors)} claim loops failed: {errors}"
    return [task_id for f in futures for task_id in f.result()]


@pytest.mark.postgres_only
@pytest.mark.slow
def test_it_hands_each_task_to_one_of_32_threads_on_postgresql(app: Flask) -> None:
    seed_tasks(app, 2000)
    claimed = run_threads(app, threads=32, batch=8)
    assert_drained_once(app, claimed, 2000)


@pytest.mark.postgres_only
@pytest.mark.slow
def test_it_hands_each_task_to_one_of_4_processes_on_postgresql(app: Flask) -> None:
    seed_tasks(app, 2000)
    ctx = multiprocessing.get_context("spawn")
    args = (
        app.config["SQLALCHEMY_DATABASE_URI"],
        app.config["REDIS_URL"],
        CAPABILITY,
        32,
        HEARTBEAT_SECONDS,
    )
    with ctx.Pool(4) as pool:
        results = [pool.apply_async(drain_in_process, args) for _ in range(4)]
        claimed = [task_id for r in results for task_id in r.get(timeout=240)]
    assert_drained_once(app, claimed, 2000)
    assert sum(1 for r in results if r.get()) >= 2, "work was shared between processes"


@pytest.mark.skipif(IS_POSTGRES, reason="the SQLite single-writer variant")
def test_it_hands_each_task_to_one_of_8_threads_on_sqlite(app: Flask) -> None:
    seed_tasks(app, 300)
    claimed = run_threads(app, threads=8, batch=4)
    assert_drained_once(app, claimed, 300)
