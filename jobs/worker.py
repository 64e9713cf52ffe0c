"""The ``worker`` process: an RQ worker bound to the app's Redis and queue.

It runs jobs in-process (SimpleWorker): jobs are short service calls, and forking a work
horse per job would rebuild the app every second on a 2-core machine.
"""

from __future__ import annotations

from rq import Queue, SimpleWorker

from app.extensions import redis_client
from jobs.context import get_app


def main() -> None:
    app = get_app()
    connection = redis_client(app.config["REDIS_URL"])
    queue = Queue(app.config["RQ_QUEUE"], connection=connection)
    worker = SimpleWorker([queue], connection=connection)
    # RQ logs three lines per job at INFO; a tick every second would drown the log.
    worker.work(logging_level="WARNING")


if __name__ == "__main__":
    main()
