"""The ``clock`` process: rq-scheduler enqueueing the maintenance tick every second.

Several clocks are safe: rq-scheduler lets one hold its lock per pass, and the tick job is
idempotent. The schedule lives only in Redis, so each pass re-registers it: a flushed or
restarted Redis costs at most one interval.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import UTC, datetime
from typing import Any

from rq import Queue
from rq_scheduler import Scheduler

from app.extensions import redis_client
from app.services import lifecycle
from jobs.context import app_context, get_app

TICK_JOB_ID = "ains-maintenance-tick"
TICK_FUNC = "jobs.maintenance.tick"

log = logging.getLogger(__name__)


class Clock(Scheduler):
    """rq-scheduler that keeps AINS's periodic jobs registered."""

    def __init__(self, *args: Any, tick_seconds: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tick_seconds = tick_seconds

    def ensure_periodic_jobs(self) -> None:
        if TICK_JOB_ID not in self:
            self.schedule(
                scheduled_time=datetime.now(UTC),
                func=TICK_FUNC,
                interval=self.tick_seconds,
                repeat=None,
                id=TICK_JOB_ID,
                result_ttl=60,
                ttl=30,
            )
            log.info("scheduled %s every %ss", TICK_FUNC, self.tick_seconds)

    def enqueue_jobs(self) -> list[Any]:
        self.ensure_periodic_jobs()
        with app_context():
            lifecycle.record_process_beat(
                "clock", {"host": socket.gethostname(), "pid": os.getpid()}
            )
        return super().enqueue_jobs()


def main() -> None:
    app = get_app()
    connection = redis_client(app.config["REDIS_URL"])
    queue = Queue(app.config["RQ_QUEUE"], connection=connection)
    interval = app.config["CLOCK_INTERVAL_SECONDS"]
    clock = Clock(queue=queue, connection=connection, interval=interval, tick_seconds=interval)
    logging.getLogger("rq_scheduler.scheduler").setLevel(logging.INFO)
    clock.run()


if __name__ == "__main__":
    main()
