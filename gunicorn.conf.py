"""Gunicorn settings, from the app's config (the only reader of the environment)."""

import os
import shutil
import signal
import tempfile
import threading
from typing import Any

from app.config import Config, prometheus_multiproc_dir

# GET /metrics sums the HTTP metrics of all workers (app/api/metrics.py): prometheus_client
# keeps them in files in this directory, in multiprocess mode, which it picks from this
# variable when first imported. That is in each worker (the app is not preloaded), after
# this file ran: the variable is set here, to a fresh private directory when not given.
_MULTIPROC_GIVEN = prometheus_multiproc_dir()
MULTIPROC_DIR = _MULTIPROC_GIVEN or tempfile.mkdtemp(prefix="ains-prometheus-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = MULTIPROC_DIR

bind = f"0.0.0.0:{Config.PORT}"
# Threads, because claim long polls hold a request open for up to 30 s while waiting.
worker_class = "gthread"
workers = Config.WEB_CONCURRENCY
threads = Config.WEB_THREADS
timeout = 60
# SIGTERM: stop accepting, let in-flight requests finish for up to this long, then exit 0.
# Below Heroku's 30 s between SIGTERM and SIGKILL; waiting long polls answer at once (see
# post_worker_init), so only ordinary requests are waited for.
graceful_timeout = 25
keepalive = 75
# No access log: the app writes one line per request (app/lib/logs.py) with the request id,
# caller and duration; gunicorn's own lines take the app's LOG_FORMAT.
accesslog = None
logger_class = "app.lib.gunicorn_logging.GunicornLogger"
loglevel = Config.LOG_LEVEL.lower()
# The control socket lives at one fixed path per user; several servers on a host (tests,
# benchmarks, two apps) would fight over it, and nothing here uses it.
control_socket_disable = True


def post_worker_init(worker: Any) -> None:
    """On the worker's SIGTERM, also wake its waiting claim long polls before draining."""
    from app.services.wakeups import wakeups

    drain = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        # Redis calls do not belong in a signal handler: a thread pushes the wake-ups.
        threading.Thread(target=wakeups.shut_down, name="wake-long-polls", daemon=True).start()
        if callable(drain):
            drain(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn set it: no EINTR in requests


def on_starting(server: Any) -> None:
    """Start the metrics from zero: files left by an earlier run would be summed in."""
    os.makedirs(MULTIPROC_DIR, exist_ok=True)
    for entry in os.scandir(MULTIPROC_DIR):
        if entry.name.endswith(".db") and entry.is_file():
            os.unlink(entry.path)


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited: its live gauges leave the sums (its counters stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, MULTIPROC_DIR)


def on_exit(server: Any) -> None:
    if _MULTIPROC_GIVEN is None:
        shutil.rmtree(MULTIPROC_DIR, ignore_errors=True)
