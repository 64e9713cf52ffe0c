"""Webhook benchmark: event-to-receipt latency and burst delivery rate with real processes.

Starts gunicorn, --workers RQ workers (``python -m jobs.worker``) and the clock on a fresh
database, a local HTTP receiver in this process, and one webhook on ``task.created`` (made
with the service layer), then drives the task API over HTTP only:

1. steady - single tasks (POST /ains/tasks) on an open-loop schedule of --rate per second
   for --seconds; latency = receipt time - the body's ``timestamp`` (the event's time);
2. burst  - --burst tasks submitted as fast as possible (POST /ains/tasks/batch, 100 per
   call); the time from the first submit to the last receipt, and deliveries/s.

    .venv/bin/python bench/webhooks.py --json bench/results/webhooks-$(date +%F).json

It DROPS the public schema of --database-url (PostgreSQL) or deletes its file (SQLite),
and FLUSHES the Redis DB of --redis-url. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import platform
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # bench/ is not a package
    ROOT,
    TMP_DIR,
    Api,
    Server,
    checkout,
    create_key,
    flask_cli,
    fmt,
    free_port,
    machine_cpu_ticks,
    process_cpu_seconds,
    reset_database,
    run_main,
    stop_group,
    summary_ms,
    without_password,
)

CLIENT_ID = "bench-client"
CAPABILITY = "bench-webhooks-v1"  # no agent has it: the tasks stay PENDING
BATCH_SIZE = 100  # the API's maximum per POST /ains/tasks/batch
DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/ains_bench_webhooks"
DEFAULT_REDIS = "redis://127.0.0.1:6379/12"
# "maintenance: {..., 'webhooks_queued': 12, ...}": deliveries the sweep put on the queue.
SWEEP_LINE = re.compile(r"'webhooks_queued': (\d+)")
PROBLEM_WORDS = ("Traceback", " ERROR ", "CRITICAL", "deadlock")

# Run inside the app (its directory and environment): make the webhook as an admin would.
CREATE_SNIPPET = """
import sys
from app import create_app
from app.extensions import db
from app.services import webhooks
from app.services.principal import SYSTEM

app = create_app()
with app.app_context():
    hook, secret = webhooks.create_webhook(
        SYSTEM, url=sys.argv[1], events=["task.created"], description="bench"
    )
    print("BENCH-HOOK", hook.id, secret)
    db.session.remove()
"""


# --------------------------------------------------------------------------- receiver


@dataclass
class Receipt:
    at: float  # time.time() on arrival
    mono: float  # time.monotonic() on arrival
    event_id: str
    task_id: str
    timestamp: float  # the body's timestamp, epoch seconds
    attempt: int
    signed: bool


@dataclass
class Receiver:
    """A local HTTP server that records each delivery and answers 200 at once."""

    secret: str = ""
    receipts: list[Receipt] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> str:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 128
        threading.Thread(target=self.server.serve_forever, name="receiver", daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        at, mono = time.time(), time.monotonic()
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        handler.send_response(200)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        try:
            event = json.loads(body)
            expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            receipt = Receipt(
                at=at,
                mono=mono,
                event_id=handler.headers["X-Webhook-Id"],
                task_id=event["task_id"],
                timestamp=datetime.fromisoformat(event["timestamp"]).timestamp(),
                attempt=int(handler.headers["X-Webhook-Attempt"]),
                signed=hmac.compare_digest(expected, handler.headers["X-Webhook-Signature"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            with self.lock:
                self.bad.append(f"{exc!r}: {body[:200]!r}")
            return
        with self.lock:
            self.receipts.append(receipt)
            self.lock.notify_all()

    def wait_for(self, task_ids: set[str], deadline: float) -> bool:
        """Wait until every task's event has arrived; False at the deadline."""
        with self.lock:
            while True:
                if not task_ids - {r.task_id for r in self.receipts}:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.lock.wait(min(remaining, 0.2))

    def of(self, task_ids: set[str]) -> list[Receipt]:
        with self.lock:
            return [r for r in self.receipts if r.task_id in task_ids]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------- processes


class Child:
    """A worker or clock in its own process group, output to a log file."""

    def __init__(self, name: str, module: str, app_dir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = TMP_DIR / f"webhooks-{time.strftime('%Y%m%d-%H%M%S')}-{name}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=app_dir,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_size(self) -> int:
        self.log.flush()
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        self.log.flush()
        with open(self.log_path, errors="replace") as log:
            log.seek(offset)
            return log.read()

    def stop(self) -> None:
        stop_group(self.proc, 15)
        self.log.close()


class Meter:
    """CPU of the machine and of each process over a scenario; the delivery queue's length."""

    def __init__(self, pids: dict[str, list[int]], redis_url: str, queue_key: str) -> None:
        self.pids = pids
        self.busy0, self.total0 = machine_cpu_ticks()
        self.cpu0 = {name: process_cpu_seconds(p) for name, p in pids.items()}
        self.self0 = time.process_time()
        self.wall0 = time.monotonic()
        self.queue_max = 0
        self.stop = threading.Event()
        self.redis = redis.Redis.from_url(redis_url)
        self.queue_key = queue_key
        self.sampler = threading.Thread(target=self.sample, name="queue-sampler", daemon=True)
        self.sampler.start()

    def sample(self) -> None:
        while not self.stop.wait(0.1):
            with contextlib.suppress(redis.RedisError):
                self.queue_max = max(self.queue_max, int(self.redis.llen(self.queue_key)))

    def read(self) -> dict[str, Any]:
        busy, total = machine_cpu_ticks()
        wall = time.monotonic() - self.wall0
        self.stop.set()
        self.sampler.join(2)
        share = (busy - self.busy0) / (total - self.total0) if total > self.total0 else None
        return {
            "wall_s": wall,
            "machine_busy_pct": None if share is None else 100 * share,
            "cpu_s": {
                name: process_cpu_seconds(p) - self.cpu0[name] for name, p in self.pids.items()
            }
            | {"bench": time.process_time() - self.self0},
            "queue_length_max": self.queue_max,
        }


# --------------------------------------------------------------------------- database


def reset(url: str) -> None:
    if url.startswith("sqlite"):
        path = Path(urlsplit(url).path.removeprefix("/"))
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        reset_database(url)


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(urlsplit(url).path.removeprefix("/"))) as conn:
            return list(conn.execute(sql))
    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(sql))


def delivery_counts(url: str) -> dict[str, Any]:
    rows = query(
        url,
        "SELECT status, count(*), sum(attempts) FROM webhook_deliveries GROUP BY status",
    )
    return {
        "by_status": {status: int(n) for status, n, _ in rows},
        "attempts": sum(int(a or 0) for _, _, a in rows),
        "events": int(query(url, "SELECT count(*) FROM webhook_events")[0][0]),
    }


# --------------------------------------------------------------------------- scenarios


def task_body(index: int) -> dict[str, Any]:
    return {
        "client_id": CLIENT_ID,
        "task_type": "bench-webhooks",
        "capability_required": CAPABILITY,
        "input_data": {"n": index},
    }


@dataclass
class Outcome:
    """What a scenario submitted: task id -> monotonic time its submit was sent."""

    sent: dict[str, float]
    started: float
    received_all: bool
    extra: dict[str, Any]


def analyse(receiver: Receiver, outcome: Outcome) -> dict[str, Any]:
    """Latency and counts of the events of the scenario's tasks."""
    sent, started = outcome.sent, outcome.started
    receipts = receiver.of(set(sent))
    per_event = Counter(r.event_id for r in receipts)
    first: dict[str, Receipt] = {}
    for receipt in sorted(receipts, key=lambda r: r.mono):
        first.setdefault(receipt.task_id, receipt)
    last_mono = max((r.mono for r in receipts), default=started)
    return {
        "tasks": len(sent),
        "received": len(first),
        "received_all": outcome.received_all,
        "duplicates": sum(n - 1 for n in per_event.values()),
        "retried": sum(1 for r in first.values() if r.attempt > 1),
        "bad_signatures": sum(1 for r in receipts if not r.signed),
        "event_to_receipt_ms": summary_ms([r.at - r.timestamp for r in first.values()]),
        "submit_to_receipt_ms": summary_ms([r.mono - sent[t] for t, r in first.items()]),
        "first_submit_to_last_receipt_s": last_mono - started,
        "deliveries_per_s": len(first) / (last_mono - started) if last_mono > started else None,
    }


def run_steady(base: str, key: str, receiver: Receiver, args: argparse.Namespace) -> Outcome:
    """Single submits on a fixed schedule; each task's event timed to the receiver."""
    total = int(args.rate * args.seconds)
    interval = 1.0 / args.rate
    lock = threading.Lock()
    sent: dict[str, float] = {}
    behind: list[float] = []
    errors: list[str] = []
    next_index = [0]
    start = time.monotonic()

    def submitter() -> None:
        api = Api(base, key)
        try:
            while True:
                with lock:
                    index = next_index[0]
                    next_index[0] += 1
                if index >= total:
                    return
                due = start + index * interval
                if (pause := due - time.monotonic()) > 0:
                    time.sleep(pause)
                at = time.monotonic()
                try:
                    response = api.call("POST", "/ains/tasks", task_body(index))
                except requests.RequestException as exc:
                    errors.append(repr(exc))
                    continue
                if response.status_code != 201:
                    errors.append(f"{response.status_code} {response.text[:200]}")
                    continue
                with lock:
                    sent[response.json()["task_id"]] = at
                    behind.append(at - due)
        finally:
            api.close()

    threads = [threading.Thread(target=submitter, daemon=True) for _ in range(args.submitters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    received_all = receiver.wait_for(set(sent), time.monotonic() + args.timeout)
    extra = {
        "submit_errors": errors[:20],
        "submit_late_ms": summary_ms(behind),
        "rate_achieved": len(sent) / (max(sent.values()) - start) if len(sent) > 1 else None,
    }
    return Outcome(sent, start, received_all, extra)


def run_burst(base: str, key: str, receiver: Receiver, args: argparse.Namespace) -> Outcome:
    """--burst tasks in batches of 100 from --submitters threads at once."""
    batches = [
        [task_body(100_000 + i) for i in range(n, min(n + BATCH_SIZE, args.burst))]
        for n in range(0, args.burst, BATCH_SIZE)
    ]
    lock = threading.Lock()
    sent: dict[str, float] = {}
    errors: list[str] = []
    start = time.monotonic()

    def submitter(mine: list[list[dict[str, Any]]]) -> None:
        api = Api(base, key)
        try:
            for batch in mine:
                at = time.monotonic()
                try:
                    response = api.call("POST", "/ains/tasks/batch", {"tasks": batch})
                except requests.RequestException as exc:
                    errors.append(repr(exc))
                    continue
                if response.status_code != 201:
                    errors.append(f"{response.status_code} {response.text[:200]}")
                    continue
                with lock:
                    for item in response.json()["submitted"]:
                        sent[item["task_id"]] = at
        finally:
            api.close()

    threads = [
        threading.Thread(target=submitter, args=(batches[i :: args.submitters],), daemon=True)
        for i in range(args.submitters)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    submitted = time.monotonic() - start
    received_all = receiver.wait_for(set(sent), time.monotonic() + args.timeout)
    return Outcome(sent, start, received_all, {"submit_errors": errors[:20], "submit_s": submitted})


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    TMP_DIR.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env.update(
        DATABASE_URL=args.database_url,
        REDIS_URL=args.redis_url,
        SECRET_KEY="bench-secret-key",
        PORT=str(port),
        WEB_CONCURRENCY=str(args.web_workers),
        WEB_THREADS=str(args.web_threads),
        PYTHONUNBUFFERED="1",
        WEBHOOK_ALLOW_PRIVATE="1",  # the receiver listens on 127.0.0.1
    )
    queue_key = f"rq:queue:{env.get('RQ_QUEUE', 'ains')}-webhooks"
    app_dir, app_label = checkout(args.ref)
    result: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "environment": {
            "cpu_count": os.cpu_count(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            "platform": f"{platform.platform()}, Python {platform.python_version()}",
            "database": without_password(args.database_url),
            "redis": args.redis_url,
            "app": app_label,
            "started_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        },
    }
    print(f"preparing {without_password(args.database_url)} and {args.redis_url} ...", flush=True)
    reset(args.database_url)
    redis.Redis.from_url(args.redis_url).flushdb()
    flask_cli(app_dir, env, "db", "upgrade")
    client_key = create_key(app_dir, env, "client", "bench client", "--client-id", CLIENT_ID)
    receiver = Receiver()
    url = receiver.start()
    made = subprocess.run(
        [sys.executable, "-c", CREATE_SNIPPET, url],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    hook_id, receiver.secret = made.split("BENCH-HOOK", 1)[1].split()[:2]
    result["webhook_id"] = hook_id

    server = Server(app_dir, env, TMP_DIR / f"webhooks-{time.strftime('%Y%m%d-%H%M%S')}-web.log")
    children: list[Child] = []
    try:
        print(f"starting gunicorn on {base}, {args.workers} worker(s), the clock ...", flush=True)
        server.wait_healthy(base)
        children += [Child(f"worker-{i}", "jobs.worker", app_dir, env) for i in range(args.workers)]
        children.append(Child("clock", "jobs.clock", app_dir, env))
        time.sleep(3)  # the worker and the clock import the app
        pids = {
            "gunicorn": server.pids(),
            "workers": [c.proc.pid for c in children if c.name.startswith("worker")],
            "clock": [c.proc.pid for c in children if c.name == "clock"],
        }
        for name, scenario in (("steady", run_steady), ("burst", run_burst)):
            if name == "steady":
                what = f"{int(args.rate * args.seconds)} tasks at {args.rate}/s"
            else:
                what = f"{args.burst} tasks in batches of {BATCH_SIZE}"
            print(f"{name}: {what} ...", flush=True)
            offsets = {c.name: c.log_size() for c in children}
            meter = Meter(pids, args.redis_url, queue_key)
            outcome = scenario(base, client_key, receiver, args)
            time.sleep(args.settle)  # late duplicates would arrive now
            figures = analyse(receiver, outcome) | outcome.extra
            figures["resources"] = meter.read()
            logs = "".join(c.log_since(offsets[c.name]) for c in children)
            figures["sweep_requeued"] = sum(int(n) for n in SWEEP_LINE.findall(logs))
            result[name] = figures
    finally:
        for child in children:
            child.stop()
        server.stop()
        receiver.stop()
    problems = []
    for path in [server.log_path, *(c.log_path for c in children)]:
        problems += [
            line[:300]
            for line in path.read_text(errors="replace").splitlines()
            if any(word in line for word in PROBLEM_WORDS)
        ]
    result["log_problems"] = problems[:50]
    result["logs"] = [
        str(p.relative_to(ROOT)) for p in (server.log_path, *(c.log_path for c in children))
    ]
    result["database_after"] = delivery_counts(args.database_url)
    result["bad_bodies"] = receiver.bad[:20]
    expected = sum(result[s]["tasks"] for s in ("steady", "burst"))
    result["checks"] = {
        "every event received": all(result[s]["received_all"] for s in ("steady", "burst")),
        "no duplicate receipts": all(result[s]["duplicates"] == 0 for s in ("steady", "burst")),
        "every signature valid": all(result[s]["bad_signatures"] == 0 for s in ("steady", "burst"))
        and not receiver.bad,
        "no submit errors": not any(result[s]["submit_errors"] for s in ("steady", "burst")),
        "every delivery delivered once": result["database_after"]["by_status"]
        == {"delivered": expected}
        and result["database_after"]["attempts"] == expected,
        "no errors in the logs": not problems,
    }
    result["passed"] = all(result["checks"].values())
    return result


def latency_row(name: str, stats: dict[str, Any]) -> str:
    cells = [fmt(stats[k]) for k in ("p50", "p95", "p99", "max")]
    return f"  {name:<36}{stats['n']:>6}" + "".join(f"{c:>9}" for c in cells)


def print_report(result: dict[str, Any]) -> None:
    env = result["environment"]
    print()
    print("=" * 78)
    print("AINS webhook delivery benchmark")
    print("=" * 78)
    print(f"  {env['cpu_count']} CPUs; load average at start {env['loadavg_start']}")
    print(f"  database: {env['database']}   redis: {env['redis']}")
    print(f"  app: {env['app']}; {result['args']['workers']} RQ worker(s), 1 clock")
    for name in ("steady", "burst"):
        s = result[name]
        r = s["resources"]
        print()
        if name == "steady":
            print(
                f"Steady: {s['tasks']} tasks at {result['args']['rate']}/s "
                f"(achieved {fmt(s['rate_achieved'])}/s), one task.created webhook"
            )
        else:
            print(
                f"Burst: {s['tasks']} tasks submitted in {fmt(s['submit_s'], 2)} s "
                f"(batches of {BATCH_SIZE}, {result['args']['submitters']} threads)"
            )
        print(f"  {'latency (ms)':<36}{'n':>6}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}")
        print(latency_row("event timestamp -> receipt", s["event_to_receipt_ms"]))
        print(latency_row("submit sent -> receipt", s["submit_to_receipt_ms"]))
        print(
            f"  received {s['received']}/{s['tasks']}, duplicates {s['duplicates']}, "
            f"retried {s['retried']}, bad signatures {s['bad_signatures']}"
        )
        print(
            f"  first submit -> last receipt {fmt(s['first_submit_to_last_receipt_s'], 2)} s "
            f"= {fmt(s['deliveries_per_s'])} deliveries/s"
        )
        cpu = ", ".join(f"{k} {fmt(v)}" for k, v in r["cpu_s"].items())
        print(
            f"  CPU over {fmt(r['wall_s'])} s: machine {fmt(r['machine_busy_pct'])}% busy; "
            f"CPU-s: {cpu}"
        )
        print(
            f"  delivery queue length max {r['queue_length_max']}; "
            f"re-queued by the sweep {s['sweep_requeued']}"
        )
    db = result["database_after"]
    print()
    print(
        f"Database after: deliveries {db['by_status']}, attempts {db['attempts']}, "
        f"events {db['events']}"
    )
    for check, ok in result["checks"].items():
        print(f"  [{'ok' if ok else 'FAIL'}] {check}")
    for line in result["log_problems"][:10]:
        print(f"  log: {line}")
    print(f"Verdict: {'PASS' if result['passed'] else 'FAIL'}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL") or DEFAULT_DATABASE,
        help="PostgreSQL database whose public schema is DROPPED, or a SQLite file that is "
        f"deleted (default: $DATABASE_URL, else {DEFAULT_DATABASE})",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL") or DEFAULT_REDIS,
        help=f"Redis DB that is FLUSHED (default: $REDIS_URL, else {DEFAULT_REDIS})",
    )
    parser.add_argument("--rate", type=float, default=50, help="steady: tasks per second")
    parser.add_argument("--seconds", type=float, default=20, help="steady: how long")
    parser.add_argument("--burst", type=int, default=1000, help="burst: tasks at once")
    parser.add_argument("--submitters", type=int, default=4, help="submitting threads")
    parser.add_argument("--workers", type=int, default=1, help="RQ worker processes")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--web-threads", type=int, default=32, help="gunicorn threads each")
    parser.add_argument(
        "--timeout", type=float, default=120, help="seconds to wait for a scenario's receipts"
    )
    parser.add_argument(
        "--settle", type=float, default=3, help="seconds to wait after each scenario"
    )
    parser.add_argument(
        "--ref",
        default=None,
        help="run this git revision (exported to bench/results/tmp/) instead of the working tree",
    )
    parser.add_argument(
        "--reset-any-database",
        action="store_true",
        help="allow a --database-url whose name lacks 'bench' (it is dropped or deleted)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.burst < 1 or args.workers < 1:
        parser.error("--rate, --seconds, --burst and --workers must be positive")
    scheme = urlsplit(args.database_url).scheme
    if not scheme.startswith(("postgres", "sqlite")):
        parser.error("--database-url must be a postgresql:// or sqlite:/// URL")
    if scheme.startswith("sqlite") and not args.database_url.startswith("sqlite:////"):
        parser.error("a SQLite --database-url needs an absolute path: sqlite:////path/to/file")
    name = urlsplit(args.database_url).path.rsplit("/", 1)[-1]
    if "bench" not in name and not args.reset_any_database:
        parser.error(
            f"--database-url names {name!r}, not a 'bench' database; it would be dropped "
            "(pass --reset-any-database if that is what you want)"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    return run_main(parse_args(argv), run, print_report, "processes")


if __name__ == "__main__":
    sys.exit(main())
