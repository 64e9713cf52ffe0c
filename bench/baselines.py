"""Celery and RQ baselines for the issue-11 benchmark (S1 submit, S2 drain, S3 latency).

Run with the baselines' own environment, never the AINS one::

    bench/.venv/bin/python bench/baselines.py --system {celery,rq-fork,rq-simple} \
        --scenario {s1,s2,s3} --redis-url redis://127.0.0.1:6379/N [--tasks 20000] \
        [--workers 4] [--concurrency 8] [--rate R] [--duration S] [--json OUT]

Prints a human-readable summary to stderr and one JSON object to stdout (and to OUT):
``{"system", "scenario", "params", "figures", "checks": {"ok", "problems"}, "cpu"}``.
The exit status is 0 whenever that JSON was written (``checks.ok`` says whether the
run is valid), 1 if the harness itself crashed (a JSON object with the traceback is
still printed), 2 on bad arguments.

The systems, as real processes on this machine:

* ``celery``: ``--workers`` worker processes, each ``-P threads -c --concurrency``,
  prefetch multiplier 4 (the default: 32 messages per worker for -c 8, AINS's claim
  batch), Redis broker, no result backend (``ignore_result``), ``-l WARNING
  --without-gossip --without-mingle --without-heartbeat``.
* ``rq-fork``: ``rq worker-pool -n --workers`` with RQ's forking ``Worker`` (one job at a
  time per worker, a fork per job).
* ``rq-simple``: the same pool with ``rq.worker.SimpleWorker`` (no fork).
  RQ keeps its defaults (pickle serializer, ``result_ttl`` 500 s: results are stored).
  Both RQ pools log at WARNING.

The task and its bookkeeping are in ``bench/baseline_tasks.py``. The Redis db given by
``--redis-url`` is flushed at the start and at the end; no other db is touched. Every
worker runs in its own process group and is killed at the end, also on error, Ctrl-C
or SIGTERM. Every wait is bounded; a timeout or a miscount is reported in ``checks``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil
import redis

BENCH_DIR = Path(__file__).resolve().parent
SYSTEMS = ("celery", "rq-fork", "rq-simple")
SCENARIOS = ("s1", "s2", "s3")
BATCH = 100
TEXT = "x" * 100


def log(msg: str) -> None:
    """Print a progress or summary line to stderr."""
    print(msg, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float | None:
    """Return the q-th percentile (0-100) by linear interpolation, None if empty."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def rnd(x: float | None, nd: int = 3) -> float | None:
    """Round for the JSON output, keeping None."""
    return None if x is None else round(x, nd)


def payload(n: int) -> dict[str, Any]:
    """The task payload, the same as AINS's scenarios use."""
    return {"n": n, "text": TEXT}


# ----------------------------------------------------------------------------- workers


class Workers:
    """The worker processes of one system, each in its own process group."""

    def __init__(self, system: str, redis_url: str, workers: int, concurrency: int) -> None:
        self.system = system
        self.redis_url = redis_url
        self.workers = workers
        self.concurrency = concurrency
        self.procs: list[Any] = []
        self.logdir = Path(tempfile.mkdtemp(prefix=f"bench-{system}-"))
        self.started_at: float | None = None

    def commands(self) -> list[list[str]]:
        """The command lines to start."""
        py = sys.executable
        if self.system == "celery":
            opts = (
                f"-A baseline_tasks worker -P threads -c {self.concurrency} -l WARNING -Q celery"
                " --without-gossip --without-mingle --without-heartbeat"
            )
            return [
                [py, "-m", "celery", *opts.split(), "-n", f"w{i}@%h"]
                for i in range(1, self.workers + 1)
            ]
        cmd = [py, "-m", "rq.cli", "worker-pool", "-n", str(self.workers), "-u", self.redis_url]
        cmd += ["-P", str(BENCH_DIR), "--logging-level", "WARNING"]
        if self.system == "rq-simple":
            cmd += ["-w", "rq.worker.SimpleWorker"]
        return [[*cmd, "bench"]]

    def start(self) -> None:
        """Start the workers (each command in a new session, so its own process group)."""
        env = dict(os.environ, BENCH_REDIS_URL=self.redis_url, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_DIR), env.get("PYTHONPATH")]))
        self.started_at = time.time()
        for i, cmd in enumerate(self.commands()):
            out = open(self.logdir / f"worker{i}.log", "wb")  # noqa: SIM115 (closed in stop)
            p = subprocess.Popen(
                cmd,
                cwd=BENCH_DIR,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            p._bench_log = out  # type: ignore[attr-defined]
            self.procs.append(p)

    def tree(self) -> list[psutil.Process]:
        """The live processes of every worker tree."""
        found: list[psutil.Process] = []
        for p in self.procs:
            try:
                root = psutil.Process(p.pid)
                found.append(root)
                found.extend(root.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
        return found

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) used so far by the worker trees.

        Live processes count their own time plus that of their reaped children (RQ's
        work horses), so nothing is counted twice.
        """
        total = 0.0
        for proc in self.tree():
            try:
                t = proc.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                pass
        return total

    def dead(self) -> list[str]:
        """Workers that exited, with the tail of their log."""
        out = []
        for i, p in enumerate(self.procs):
            if p.poll() is not None:
                out.append(f"worker {i} exited with {p.returncode}: {self.log_tail(i)}")
        return out

    def log_tail(self, i: int, chars: int = 600) -> str:
        """The last characters of worker i's output."""
        try:
            return (self.logdir / f"worker{i}.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM every process group, SIGKILL what is left after 5 s."""
        leftovers = self.tree()
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.time() + 5
        for p in self.procs:
            with contextlib.suppress(Exception):
                p.wait(timeout=max(0.1, deadline - time.time()))
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                p.wait(timeout=5)
            p._bench_log.close()  # type: ignore[attr-defined]
        for proc in leftovers:  # descendants that left the process group, if any
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    proc.kill()
            except psutil.NoSuchProcess:
                pass
        self.procs = []


# ---------------------------------------------------------------------------- producers


class Producer:
    """Enqueues the no-op task for one system."""

    batch_method = ""
    single_method = ""

    def enqueue_one(self, p: dict[str, Any]) -> None:
        """Enqueue one task."""
        raise NotImplementedError

    def enqueue_batch(self, ps: list[dict[str, Any]]) -> None:
        """Enqueue a batch of tasks."""
        raise NotImplementedError

    def queued(self) -> int:
        """Messages waiting in the broker queue."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""


class CeleryProducer(Producer):
    """Celery: ``delay`` for single tasks; batches by the method chosen."""

    def __init__(self, r: redis.Redis, method: str) -> None:
        import baseline_tasks as bt

        self.r = r
        self.task = bt.celery_noop
        self.app = bt.app
        self.method = method
        self.single_method = "celery_noop.delay(payload)"
        self.batch_method = {
            "kombu-batch": (
                "apply_async(producer=p) inside kombu's Producer.batch(max_size=100): "
                "one Redis pipeline per 100"
            ),
            "loop": "apply_async(producer=p) in a loop under one held producer connection",
            "group": "celery.group(noop.s(p) for p in batch).apply_async()",
        }[method]
        self._pool_cm = self.app.producer_pool.acquire(block=True)
        self.producer = self._pool_cm.__enter__()

    def enqueue_one(self, p: dict[str, Any]) -> None:
        self.task.delay(p)

    def enqueue_batch(self, ps: list[dict[str, Any]]) -> None:
        if self.method == "group":
            from celery import group

            group(self.task.s(p) for p in ps).apply_async(producer=self.producer)
        elif self.method == "kombu-batch":
            with self.producer.batch(max_size=len(ps)):
                for p in ps:
                    self.task.apply_async((p,), producer=self.producer)
        else:
            for p in ps:
                self.task.apply_async((p,), producer=self.producer)

    def queued(self) -> int:
        return int(self.r.llen("celery"))

    def close(self) -> None:
        self._pool_cm.__exit__(None, None, None)
        self.app.close()


class RQProducer(Producer):
    """RQ: ``Queue.enqueue`` for single tasks, ``Queue.enqueue_many`` in one pipeline per batch."""

    def __init__(self, r: redis.Redis) -> None:
        import baseline_tasks as bt
        from rq import Callback, Queue

        self.r = r
        self.Queue = Queue
        self.q = Queue(bt.RQ_QUEUE, connection=r)
        self.func = bt.rq_noop
        self.cb = Callback(bt.rq_on_success)
        self.single_method = "Queue.enqueue(rq_noop, payload, on_success=Callback(rq_on_success))"
        self.batch_method = (
            "Queue.enqueue_many([Queue.prepare_data(...) x100], pipeline=p); p.execute()"
        )

    def enqueue_one(self, p: dict[str, Any]) -> None:
        self.q.enqueue(self.func, p, on_success=self.cb)

    def enqueue_batch(self, ps: list[dict[str, Any]]) -> None:
        datas = [self.Queue.prepare_data(self.func, (p,), on_success=self.cb) for p in ps]
        with self.r.pipeline() as pipe:
            self.q.enqueue_many(datas, pipeline=pipe)
            pipe.execute()

    def queued(self) -> int:
        return int(self.q.count)


# ---------------------------------------------------------------------------- scenarios


class Run:
    """One system x one scenario, with its Redis, workers, figures and problems."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.r = redis.Redis.from_url(args.redis_url)
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.figures_checks: dict[str, int] = {}
        self.figures: dict[str, Any] = {}
        self.cpu: dict[str, Any] = {}
        self.workers: Workers | None = None
        self.producer: Producer | None = None

    # -- helpers
    def make_producer(self) -> Producer:
        """The producer of the system under test."""
        if self.args.system == "celery":
            return CeleryProducer(self.r, self.args.celery_batch)
        return RQProducer(self.r)

    def start_workers(self) -> Workers:
        """Start the system's workers."""
        a = self.args
        self.workers = Workers(a.system, a.redis_url, a.workers, a.concurrency)
        self.workers.start()
        return self.workers

    def done(self) -> int:
        """Completions recorded so far."""
        return int(self.r.get("bench:done") or 0)

    def wait_done(self, target: int, timeout: float, stall: float, what: str) -> bool:
        """Poll the completion counter until it reaches target; False on timeout/stall."""
        deadline = time.time() + timeout
        last, last_change = -1, time.time()
        while True:
            n = self.done()
            if n >= target:
                return True
            now = time.time()
            if n != last:
                last, last_change = n, now
            dead = self.workers.dead() if self.workers else []
            if dead:
                self.problems.append(f"{what}: worker died: " + " | ".join(dead))
                return False
            if now > deadline:
                self.problems.append(
                    f"{what}: timed out after {timeout:.0f} s at {n}/{target} completions"
                )
                return False
            if now - last_change > stall:
                self.problems.append(
                    f"{what}: no progress for {stall:.0f} s at {n}/{target} completions"
                )
                return False
            time.sleep(0.05)

    def ready_workers(self) -> int:
        """Workers that are up and consuming (Celery: answer a ping; RQ: registered)."""
        if self.args.system == "celery":
            import baseline_tasks as bt

            return len(bt.app.control.ping(timeout=1.0) or [])
        from rq import Worker

        return int(Worker.count(connection=self.r))

    def wait_ready(self, timeout: float) -> bool:
        """Wait until all --workers workers are up; False (and a problem) on timeout."""
        deadline = time.time() + timeout
        n = 0
        while time.time() < deadline:
            n = self.ready_workers()
            if n >= self.args.workers:
                return True
            dead = self.workers.dead() if self.workers else []
            if dead:
                self.problems.append("worker died: " + " | ".join(dead))
                return False
            time.sleep(0.2)
        self.problems.append(f"only {n}/{self.args.workers} workers up after {timeout:.0f} s")
        return False

    def exactly_once(self, expected: int) -> None:
        """Check the bookkeeping: every payload n completed exactly once."""
        time.sleep(0.3)  # let a late duplicate show up
        done = self.done()
        ids = int(self.r.scard("bench:ids"))
        dup = int(self.r.get("bench:dup") or 0)
        self.figures_checks = {
            "completions": done,
            "distinct": ids,
            "duplicates": dup,
            "expected": expected,
        }
        if done != expected or ids != expected or dup:
            self.problems.append(
                f"exactly-once: expected {expected}, got {done} completions, "
                f"{ids} distinct, {dup} duplicates"
            )

    def paced(self, rate: float, duration: float, fn: Callable[[int], None]) -> tuple[int, float]:
        """Call fn(i) open-loop at a steady rate for duration seconds; return (count, elapsed)."""
        total = int(rate * duration)
        start = time.perf_counter()
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            fn(i)
        return total, time.perf_counter() - start

    def cpu_sample(self) -> tuple[float, float, float]:
        """(wall time, worker-tree CPU s, this process's CPU s)."""
        me = psutil.Process().cpu_times()
        return (
            time.time(),
            (self.workers.cpu_seconds() if self.workers else 0.0),
            me.user + me.system,
        )

    def cpu_record(self, start: tuple[float, float, float], phase: str) -> None:
        """Store the CPU used since the sample start, for the JSON's "cpu"."""
        end = self.cpu_sample()
        wall = end[0] - start[0]
        self.cpu.update(
            {
                "phase": phase,
                "wall_s": rnd(wall),
                "workers_cpu_s": rnd(end[1] - start[1]),
                "workers_cores": rnd((end[1] - start[1]) / wall if wall > 0 else None),
                "producer_cpu_s": rnd(end[2] - start[2]),
            }
        )

    # -- scenarios
    def s1(self) -> None:
        """Submit: single enqueues at a steady rate (call latency), then batches of 100."""
        a = self.args
        p = self.producer = self.make_producer()
        warm = 20
        for i in range(warm):  # warm the connection and imports (not timed)
            p.enqueue_one(payload(-1 - i))
        lat: list[float] = []

        def one(i: int) -> None:
            t = time.perf_counter()
            p.enqueue_one(payload(i))
            lat.append((time.perf_counter() - t) * 1000)

        c0 = self.cpu_sample()
        n, elapsed = self.paced(a.rate, a.duration, one)
        self.figures["single_p50_ms"] = rnd(percentile(lat, 50))
        self.figures["single_p99_ms"] = rnd(percentile(lat, 99))
        self.figures["single_rate_achieved"] = rnd(n / elapsed, 1)
        self.figures["single_n"] = n
        single_cpu = self.cpu_sample()[2] - c0[2]

        t = time.perf_counter()
        for b in range(0, a.tasks, BATCH):
            p.enqueue_batch([payload(n + i) for i in range(b, min(b + BATCH, a.tasks))])
        elapsed_b = time.perf_counter() - t
        self.figures["batch_tasks_per_s"] = rnd(a.tasks / elapsed_b, 1)
        self.figures["batch_seconds"] = rnd(elapsed_b)
        self.cpu_record(c0, "s1 single + batch (no workers run)")
        self.cpu["producer_cpu_s_single"] = rnd(single_cpu)
        queued = p.queued()
        if queued != warm + n + a.tasks:
            self.problems.append(f"s1: {queued} tasks in the queue, expected {warm + n + a.tasks}")
        if n / elapsed < 0.9 * a.rate:
            self.problems.append(
                f"s1: single rate achieved {n / elapsed:.0f}/s < 90% of {a.rate:.0f}/s"
            )

    def s2(self) -> None:
        """Drain: enqueue --tasks with no worker running, then start the workers and time it."""
        a = self.args
        p = self.producer = self.make_producer()
        for b in range(0, a.tasks, BATCH):
            p.enqueue_batch([payload(i) for i in range(b, min(b + BATCH, a.tasks))])
        queued = p.queued()
        if queued != a.tasks:
            self.problems.append(
                f"s2: {queued} tasks queued before the workers started, expected {a.tasks}"
            )
        w = self.start_workers()
        c0 = self.cpu_sample()
        launched = w.started_at or c0[0]
        timeout = a.timeout or max(120.0, a.tasks / 25.0)
        ok = self.wait_done(a.tasks, timeout, a.stall, "s2")
        self.cpu_record(c0, "s2 from worker launch to the last completion (includes start-up)")
        first = float(self.r.get("bench:first") or "nan")
        last = float(self.r.get("bench:last") or "nan")
        done = self.done()
        secs = last - first
        self.figures.update(
            {
                "tasks_per_s": rnd(done / secs, 1) if ok and secs > 0 else None,
                "tasks": done,
                "seconds": rnd(secs) if ok else None,
                "seconds_with_startup": rnd(last - launched) if ok else None,
                "startup_s": rnd(first - launched) if ok else None,
            }
        )
        if ok:
            self.exactly_once(a.tasks)

    def s3(self) -> None:
        """Latency: idle workers; single enqueues at a steady rate carry t0; start/end - t0."""
        a = self.args
        p = self.producer = self.make_producer()
        self.start_workers()
        if not self.wait_ready(a.timeout or 120.0):
            return
        warm = a.workers * (a.concurrency if a.system == "celery" else 1) * 2
        for i in range(warm):
            p.enqueue_one(payload(-1 - i))
        if not self.wait_done(warm, a.timeout or 120.0, a.stall, "s3 warm-up"):
            return
        time.sleep(1.0)  # workers idle
        self.r.delete(
            "bench:done", "bench:ids", "bench:dup", "bench:first", "bench:last", "bench:lat"
        )

        def one(i: int) -> None:
            pl = payload(i)
            pl["t0"] = time.time()
            p.enqueue_one(pl)

        c0 = self.cpu_sample()
        n, elapsed = self.paced(a.rate, a.duration, one)
        last_enqueue = time.time()
        ok = self.wait_done(n, max(60.0, a.timeout), a.stall, "s3")
        self.cpu_record(c0, "s3 paced phase, idle workers running")
        claimed: list[float] = []
        completed: list[float] = []
        for raw in self.r.hvals("bench:lat"):
            t0, start, end = (float(x) for x in raw.decode().split(","))
            claimed.append((start - t0) * 1000)
            completed.append((end - t0) * 1000)
        self.figures.update(
            {
                "claimed_p50_ms": rnd(percentile(claimed, 50)),
                "claimed_p99_ms": rnd(percentile(claimed, 99)),
                "completed_p50_ms": rnd(percentile(completed, 50)),
                "completed_p99_ms": rnd(percentile(completed, 99)),
                "rate_achieved": rnd(n / elapsed, 1),
                "n": len(claimed),
                "claimed_max_ms": rnd(max(claimed) if claimed else None),
            }
        )
        backlog_s = float(self.r.get("bench:last") or "nan") - last_enqueue
        self.figures["backlog_s"] = rnd(backlog_s)
        if ok:
            self.exactly_once(n)
        if backlog_s > 1.0:
            self.warnings.append(
                f"s3: the workers did not keep up with {a.rate:.0f}/s: the last task completed "
                f"{backlog_s:.1f} s after the last enqueue, so latency includes queueing"
            )
        if n / elapsed < 0.9 * a.rate:
            self.problems.append(f"s3: rate achieved {n / elapsed:.0f}/s < 90% of {a.rate:.0f}/s")

    def execute(self) -> None:
        """Run the scenario; always stop the workers and release the producer."""
        try:
            getattr(self, self.args.scenario)()
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the clean-up finish
            if self.workers:
                self.workers.stop()
            if self.producer:
                self.producer.close()


# ---------------------------------------------------------------------------- main


def versions() -> dict[str, str]:
    """Versions of what is measured."""
    out = {"python": platform.python_version()}
    for pkg in ("celery", "kombu", "redis", "rq"):
        try:
            out[pkg] = version(pkg)
        except Exception:
            out[pkg] = "?"
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line (the contract the orchestrator relies on)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--system", required=True, choices=SYSTEMS)
    ap.add_argument("--scenario", required=True, choices=SCENARIOS)
    ap.add_argument("--redis-url", required=True, help="redis://host:port/db; this db is flushed")
    ap.add_argument("--tasks", type=int, default=20000, help="S1 batch total and S2 queue size")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument(
        "--concurrency", type=int, default=8, help="Celery threads per worker (RQ: 1 per worker)"
    )
    ap.add_argument(
        "--rate", type=float, help="S1 single (default 200/s) and S3 (default 100/s) rate"
    )
    ap.add_argument(
        "--duration", type=float, help="paced phase seconds (S1 default 10, S3 default 20)"
    )
    ap.add_argument(
        "--timeout", type=float, default=0.0, help="bound on the drain wait (default: auto)"
    )
    ap.add_argument(
        "--stall", type=float, default=30.0, help="give up after this long without progress"
    )
    ap.add_argument(
        "--celery-batch",
        default="kombu-batch",
        choices=("kombu-batch", "loop", "group"),
        help="Celery batch method",
    )
    ap.add_argument("--json", help="also write the JSON object to this file")
    a = ap.parse_args(argv)
    if a.rate is None:
        a.rate = 100.0 if a.scenario == "s3" else 200.0
    if a.duration is None:
        a.duration = 20.0 if a.scenario == "s3" else 10.0
    if a.tasks <= 0 or a.workers <= 0 or a.concurrency <= 0 or a.rate <= 0 or a.duration <= 0:
        ap.error("--tasks, --workers, --concurrency, --rate and --duration must be positive")
    if not a.redis_url.startswith("redis://"):
        ap.error(f"--redis-url must be redis://host:port/db, got {a.redis_url!r}")
    return a


def params_of(a: argparse.Namespace) -> dict[str, Any]:
    """The parameters that shaped the run, for the JSON."""
    p: dict[str, Any] = {"redis_url": a.redis_url, "workers": a.workers}
    if a.scenario == "s1":
        p.update(rate=a.rate, duration=a.duration, tasks=a.tasks, batch=BATCH)
    elif a.scenario == "s2":
        p.update(tasks=a.tasks)
    else:
        p.update(rate=a.rate, duration=a.duration)
    if a.system == "celery":
        p.update(
            concurrency=a.concurrency,
            pool="threads",
            prefetch_multiplier=4,
            slots=a.workers * a.concurrency,
        )
        if a.scenario in ("s1", "s2"):
            p["celery_batch"] = a.celery_batch
    else:
        p.update(
            worker_class="SimpleWorker" if a.system == "rq-simple" else "Worker (fork per job)"
        )
        p.update(slots=a.workers, result_ttl="default (500 s)")
    p["versions"] = versions()
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one system x scenario and print its JSON; see the module docstring."""
    a = parse_args(argv)
    os.environ["BENCH_REDIS_URL"] = a.redis_url  # read by baseline_tasks at import
    sys.path.insert(0, str(BENCH_DIR))

    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    run = Run(a)
    crashed = False
    try:
        run.r.ping()
        run.r.flushdb()
        log(f"[{a.system} {a.scenario}] start, redis {a.redis_url}")
        run.execute()
    except (KeyboardInterrupt, SystemExit) as exc:
        run.problems.append(f"interrupted: {exc!r}")
        crashed = True
    except Exception:
        run.problems.append("crashed: " + traceback.format_exc(limit=8))
        crashed = True
    finally:
        with contextlib.suppress(Exception):
            run.r.flushdb()
    if run.producer is not None:
        run.params_extra = {
            "single_method": run.producer.single_method,
            "batch_method": run.producer.batch_method,
        }
    params = params_of(a)
    params.update(getattr(run, "params_extra", {}))
    result = {
        "system": a.system,
        "scenario": a.scenario,
        "params": params,
        "figures": run.figures,
        "checks": {
            "ok": not run.problems,
            "problems": run.problems,
            "warnings": run.warnings,
            "exactly_once": run.figures_checks,
        },
        "cpu": run.cpu,
    }
    text = json.dumps(result)
    if a.json:
        Path(a.json).write_text(text + "\n")
    log(
        f"[{a.system} {a.scenario}] figures: "
        + ", ".join(f"{k}={v}" for k, v in run.figures.items())
    )
    log(f"[{a.system} {a.scenario}] cpu: " + ", ".join(f"{k}={v}" for k, v in run.cpu.items()))
    log(
        f"[{a.system} {a.scenario}] checks: "
        + ("ok" if not run.problems else "; ".join(run.problems))
    )
    if run.figures_checks:
        log(f"[{a.system} {a.scenario}] exactly-once: {run.figures_checks}")
    for w in run.warnings:
        log(f"[{a.system} {a.scenario}] warning: {w}")
    print(text, flush=True)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
