"""The no-op task for the Celery and RQ baselines of the issue-11 benchmark.

Imported by the Celery workers (``celery -A baseline_tasks worker``), by the RQ
workers (``rq worker-pool -P bench``) and by ``bench/baselines.py`` (the producer).
It runs in ``bench/.venv``, never in the AINS environment.

The task takes the payload AINS's scenarios use, ``{"n": i, "text": "x" * 100}``
(S3 adds ``"t0"``, the producer's ``time.time()`` just before the enqueue call), and
returns ``{"ok": True}``. It only notes its start time in process memory. The
bookkeeping the harness needs is written to Redis by the framework's post-run hook,
one ``EVALSHA`` round trip per task, identical for both systems:

* Celery: the ``task_postrun`` signal (after the task returned; the message was
  already acknowledged on receipt, ``acks_late`` is off; no result backend).
* RQ: the job's ``on_success`` callback (after the job returned, in the process that
  ran it; RQ then writes the FINISHED status and the result).

So "claimed" is the task's first line and "completed" is the post-run hook: the
earliest point after the task body that each framework offers to user code.

Keys (all in the benchmark's own Redis db, flushed by the harness):
``bench:done`` completions, ``bench:ids`` set of payload ``n``, ``bench:dup``
repeated completions, ``bench:first`` earliest start, ``bench:last`` latest
completion, ``bench:lat`` (S3 only) hash ``n -> "t0,start,end"``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import redis

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/1")
RQ_QUEUE = "bench"

KEYS = ("bench:done", "bench:ids", "bench:dup", "bench:first", "bench:last", "bench:lat")

# KEYS: done, ids, dup, first, last, lat. ARGV: n, start, end, t0 ('' outside S3).
RECORD_LUA = """
local c = redis.call('INCR', KEYS[1])
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then redis.call('INCR', KEYS[3]) end
local f = redis.call('GET', KEYS[4])
if (not f) or tonumber(ARGV[2]) < tonumber(f) then redis.call('SET', KEYS[4], ARGV[2]) end
local l = redis.call('GET', KEYS[5])
if (not l) or tonumber(ARGV[3]) > tonumber(l) then redis.call('SET', KEYS[5], ARGV[3]) end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[6], ARGV[1], ARGV[4] .. ',' .. ARGV[2] .. ',' .. ARGV[3])
end
return c
"""

_starts: dict[int, float] = {}
_client_lock = threading.Lock()
_client: tuple[int, redis.Redis, Any] | None = None


def _record_script(connection: redis.Redis | None = None) -> Any:
    """Return the registered bookkeeping script, bound to a client of this process."""
    global _client
    if connection is not None:
        return connection.register_script(RECORD_LUA)
    pid = os.getpid()
    with _client_lock:
        if _client is None or _client[0] != pid:
            client = redis.Redis.from_url(REDIS_URL)
            _client = (pid, client, client.register_script(RECORD_LUA))
        return _client[2]


def _record(payload: dict[str, Any], end: float, connection: redis.Redis | None = None) -> None:
    """Write one completion (start, end and S3's enqueue time) to Redis."""
    n = int(payload["n"])
    start = _starts.pop(n, end)
    t0 = payload.get("t0")
    script = _record_script(connection)
    script(keys=KEYS, args=[n, repr(start), repr(end), "" if t0 is None else repr(t0)])


# ---------------------------------------------------------------------------- Celery
# Built on first access to ``app`` or ``celery_noop`` (PEP 562), so that RQ's work
# horses, which import this module for each job, do not pay for importing Celery.

_celery: dict[str, Any] = {}


def _make_celery() -> dict[str, Any]:
    """Create the Celery app, its no-op task and the post-run hook (once)."""
    if _celery:
        return _celery
    from celery import Celery
    from celery.signals import task_postrun

    app = Celery("bench", broker=REDIS_URL)
    app.conf.update(
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=4,
        worker_disable_rate_limits=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        task_default_queue="celery",
    )

    @app.task(name="bench.noop", ignore_result=True)
    def celery_noop(payload: dict[str, Any]) -> dict[str, bool]:
        """The no-op task (Celery): note the start time and return."""
        _starts[payload["n"]] = time.time()
        return {"ok": True}

    @task_postrun.connect(weak=False)
    def _celery_postrun(sender: Any = None, args: Any = None, **_: Any) -> None:
        """Celery's post-run hook: record the completion."""
        end = time.time()
        if sender is not None and sender.name == "bench.noop" and args:
            _record(args[0], end)

    _celery.update(app=app, celery_noop=celery_noop)
    return _celery


def __getattr__(name: str) -> Any:
    """``app`` (found by ``celery -A baseline_tasks``) and ``celery_noop``, built lazily."""
    if name in ("app", "celery_noop"):
        return _make_celery()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -------------------------------------------------------------------------------- RQ


def rq_noop(payload: dict[str, Any]) -> dict[str, bool]:
    """The no-op task (RQ): note the start time and return."""
    _starts[payload["n"]] = time.time()
    return {"ok": True}


def rq_on_success(
    job: Any, connection: redis.Redis, result: Any, *args: Any, **kwargs: Any
) -> None:
    """RQ's post-run hook (``on_success`` callback): record the completion.

    Uses the worker's own connection, so the forking worker opens no extra one.
    """
    _record(job.args[0], time.time(), connection)
