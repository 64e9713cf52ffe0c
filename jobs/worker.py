"""The ``worker`` process: an RQ worker bound to the app's Redis and queues.

It runs jobs in-process (SimpleWorker): jobs are short service calls, and forking a work
horse per job would rebuild the app every second on a 2-core machine.

It listens to the main queue (maintenance) first and the webhook queue second, so a
backlog of deliveries never holds up the sweep for more than one request. Name queues to
split them over processes: ``python -m jobs.worker webhooks`` runs a delivery-only worker
(``main`` names the other one).

SIGTERM or SIGINT is RQ's warm shutdown: the job under way finishes, then the worker exits
0; a second signal stops it at once (jobs are idempotent, and the maintenance sweep queues
again any webhook delivery whose job was cut short).
"""

from __future__ import annotations

import sys
from typing import Any

from rq import Queue, SimpleWorker

from app import webhook_queue_name
from app.extensions import redis_client
from app.lib.logs import job_context
from jobs.context import get_app

# RQ's worker registry: an idle worker sends a heartbeat every TTL - 15 s (45 s), and one
# after each job; GET /health/ready looks there (READY_MAX_SILENCE_SECONDS, 120 s).
WORKER_TTL_SECONDS = 60


class Worker(SimpleWorker):
    """SimpleWorker whose log lines about a job carry its id and its request's id."""

    def execute_job(self, job: Any, queue: Queue) -> None:
        with job_context(job.id, job.meta):
            super().execute_job(job, queue)


def queue_names(config: dict, wanted: list[str]) -> list[str]:
    names = {"main": config["RQ_QUEUE"], "webhooks": webhook_queue_name(config)}
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise SystemExit(f"unknown queue {unknown[0]!r}; choose from: {', '.join(names)}")
    return [names[w] for w in (wanted or list(names))]


def main(argv: list[str] | None = None) -> None:
    app = get_app()
    connection = redis_client(app.config["REDIS_URL"])
    names = queue_names(app.config, sys.argv[1:] if argv is None else argv)
    queues = [Queue(name, connection=connection) for name in names]
    worker = Worker(queues, connection=connection, worker_ttl=WORKER_TTL_SECONDS)
    # RQ logs three lines per job at INFO; a tick every second would drown the log.
    worker.work(logging_level="WARNING")


if __name__ == "__main__":
    main()
