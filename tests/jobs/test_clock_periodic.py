"""The clock pushes a periodic job only when its previous copy is no longer waiting.

rq-scheduler pushes a periodic job's id every interval; a worker slower than that let the
copies pile up in the main queue, which it reads before the webhook queue (found by the
monitoring demo: 53 copies of the maintenance tick, 796 deliveries starved).
"""

from __future__ import annotations

import time

from flask import Flask
from rq import Queue
from rq.job import Job

from app.extensions import redis_client
from jobs.clock import TICK_JOB_ID, Clock


def make_clock(app: Flask) -> tuple[Clock, Queue]:
    connection = redis_client(app.config["REDIS_URL"])
    queue = Queue(app.config["RQ_QUEUE"], connection=connection)
    clock = Clock(
        queue=queue, connection=connection, interval=1, tick_seconds=1, fire_by_tick=False
    )
    clock.ensure_periodic_jobs()
    return clock, queue


def push_due(clock: Clock) -> None:
    """What one pass does for the tick once it is due."""
    clock.enqueue_job(Job.fetch(TICK_JOB_ID, connection=clock.connection))


def test_a_waiting_tick_is_not_pushed_again_but_stays_scheduled(app: Flask) -> None:
    clock, queue = make_clock(app)
    push_due(clock)
    push_due(clock)
    push_due(clock)
    assert queue.get_job_ids().count(TICK_JOB_ID) == 1
    score = clock.connection.zscore(clock.scheduled_jobs_key, TICK_JOB_ID)
    assert score is not None and score > time.time()  # the next push is still planned


def test_once_the_worker_took_the_tick_the_next_one_is_pushed(app: Flask) -> None:
    clock, queue = make_clock(app)
    push_due(clock)
    job = queue.dequeue_any([queue], timeout=None, connection=clock.connection)
    assert job is not None and job[0].id == TICK_JOB_ID
    assert queue.get_job_ids() == []
    push_due(clock)
    assert queue.get_job_ids() == [TICK_JOB_ID]
