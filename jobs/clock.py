"""The ``clock`` process: rq-scheduler enqueueing the periodic jobs, and schedule firing.

Several clocks are safe: rq-scheduler lets one hold its lock per pass, the jobs are
idempotent, and a schedule's due time fires once whoever tries (see services/scheduling).
rq-scheduler's job registrations live only in Redis, so each pass re-registers them: a
flushed or restarted Redis costs at most one interval.

Schedules fire from a thread of this process (SCHEDULE_FIRING=precise, the default) that
sleeps until the earliest due time, at most a second, so a run starts within milliseconds of
its time instead of up to a tick late; SCHEDULE_FIRING=tick fires them from a job enqueued
every second instead, as rq-scheduler alone would.

SIGTERM or SIGINT stops it gracefully: the pass under way (enqueueing, or firing schedules)
finishes, then the process exits 0, within about a second. A due time fires in one
transaction, so a stop never loses or doubles one; a second signal exits at once.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from rq import Queue
from rq.job import JobStatus
from rq_scheduler import Scheduler

from app.extensions import db, redis_client
from app.lib.clock import utcnow
from app.services import lifecycle, scheduling
from jobs.context import app_context, get_app

TICK_JOB_ID = "ains-maintenance-tick"
TICK_FUNC = "jobs.maintenance.tick"
FIRE_JOB_ID = "ains-schedule-tick"
FIRE_FUNC = "jobs.maintenance.fire_schedules"
# The firing thread looks at the database at least this often, so edits, pauses and new
# schedules take effect within it.
MAX_SLEEP_SECONDS = 1.0
# After a pass that fired nothing although something was due (another clock holds it).
BUSY_SLEEP_SECONDS = 0.02

log = logging.getLogger(__name__)


class Clock(Scheduler):
    """rq-scheduler that keeps AINS's periodic jobs registered."""

    def __init__(self, *args: Any, tick_seconds: int, fire_by_tick: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stopping = threading.Event()
        self.tick_seconds = tick_seconds
        self.periodic = {TICK_JOB_ID: TICK_FUNC}
        if fire_by_tick:
            self.periodic[FIRE_JOB_ID] = FIRE_FUNC

    def ensure_periodic_jobs(self) -> None:
        if FIRE_JOB_ID not in self.periodic and FIRE_JOB_ID in self:
            self.cancel(FIRE_JOB_ID)  # left by a clock in tick mode; this one fires itself
        for job_id, func in self.periodic.items():
            if job_id not in self:
                self.schedule(
                    scheduled_time=datetime.now(UTC),
                    func=func,
                    interval=self.tick_seconds,
                    repeat=None,
                    id=job_id,
                    result_ttl=60,
                    ttl=30,
                )
                log.info("scheduled %s every %ss", func, self.tick_seconds)

    def _install_signal_handlers(self) -> None:
        """The first SIGTERM/SIGINT ends the loop after this pass; a second exits at once."""

        def stop(signum: int, frame: FrameType | None) -> None:
            if self.stopping.is_set():
                raise SystemExit(128 + signum)
            log.info("stopping after the current pass (signal %s)", signum)
            self.stopping.set()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)

    def run(self, burst: bool = False) -> None:
        """rq-scheduler's loop, stoppable between passes (its own handler exits mid-pass)."""
        self.register_birth()
        self._install_signal_handlers()
        try:
            while not self.stopping.is_set():
                self.heartbeat()
                started = time.time()
                if self.acquire_lock():
                    self.enqueue_jobs()
                    self.heartbeat()
                    self.remove_lock()
                    if burst:
                        break
                else:
                    self.log.warning("Lock already taken - skipping run")  # as rq-scheduler
                self.stopping.wait(max(0.0, self._interval - (time.time() - started)))
        finally:
            self.remove_lock()
            self.register_death()

    def enqueue_job(self, job: Any) -> None:
        """Push a due job, unless it is one of ours still waiting in its queue.

        rq-scheduler pushes a periodic job's id again every interval. When the worker is
        slower than that (a busy machine, a long sweep), the copies pile up in the main
        queue, which the worker reads first, so the webhook queue behind it starved. One
        waiting copy is enough: the next is scheduled as usual.
        """
        if (
            job.id in self.periodic
            and job.get_status(refresh=False) == JobStatus.QUEUED
            and job.id in self.get_queue_for_job(job).get_job_ids()
        ):
            interval = int(job.meta.get("interval") or self.tick_seconds)
            self.connection.zadd(self.scheduled_jobs_key, {job.id: time.time() + interval})
            return
        super().enqueue_job(job)

    def enqueue_jobs(self) -> list[Any]:
        self.ensure_periodic_jobs()
        with app_context():
            lifecycle.record_process_beat(
                "clock", {"host": socket.gethostname(), "pid": os.getpid()}
            )
        return super().enqueue_jobs()


class ScheduleFirer(threading.Thread):
    """Fires due schedules, then sleeps until the next due time (at most a second)."""

    def __init__(self) -> None:
        super().__init__(name="schedule-firer", daemon=True)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.stopping.wait(self.fire_once())

    def fire_once(self) -> float:
        """One pass; returns how long to sleep before the next."""
        try:
            with app_context():
                result = scheduling.fire_due()
                if result.fired or result.skipped:
                    log.info("schedules: %s", result.as_dict())
                upcoming = scheduling.next_fire_at()
                db.session.rollback()
        except Exception:  # the database may be restarting: keep trying, never die
            log.exception("firing schedules failed; retrying in %ss", MAX_SLEEP_SECONDS)
            return MAX_SLEEP_SECONDS
        if upcoming is None:
            return MAX_SLEEP_SECONDS
        wait = (upcoming - utcnow()).total_seconds()
        return min(MAX_SLEEP_SECONDS, max(BUSY_SLEEP_SECONDS, wait))


def main() -> None:
    app = get_app()
    connection = redis_client(app.config["REDIS_URL"])
    queue = Queue(app.config["RQ_QUEUE"], connection=connection)
    interval = app.config["CLOCK_INTERVAL_SECONDS"]
    precise = app.config["SCHEDULE_FIRING"] == "precise"
    clock = Clock(
        queue=queue,
        connection=connection,
        interval=interval,
        tick_seconds=interval,
        fire_by_tick=not precise,
    )
    logging.getLogger("rq_scheduler.scheduler").setLevel(logging.INFO)
    firer = ScheduleFirer() if precise else None
    if firer is not None:
        firer.start()
    try:
        clock.run()
    finally:
        if firer is not None:  # let its pass finish: a due time fires whole or not at all
            firer.stopping.set()
            firer.join(timeout=30)
    log.info("clock stopped")


if __name__ == "__main__":
    main()
