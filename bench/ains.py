"""AINS side of the issue-11 benchmark (``make bench``, bench/run.py): scenarios S1-S5.

Each scenario starts the real server (gunicorn with gunicorn.conf.py) on a fresh PostgreSQL
schema and a flushed Redis DB, drives it over HTTP only with the same no-op payload as the
baselines (``{"n": i, "text": "x" * 100}``) and returns ``{"figures", "params", "checks",
"cpu"}``; the figure names are those of bench/baselines.py.

    .venv/bin/python bench/ains.py --scenario s2 --tasks 2000 \
        --database-url postgresql://postgres@127.0.0.1:5432/ains_bench --redis-url redis://127.0.0.1:6379/13

It DROPS the public schema of --database-url and FLUSHES the Redis DB of --redis-url.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # bench/ is not a package
    HTTP_TIMEOUT,
    TMP_DIR,
    Api,
    Child,
    ErrorLog,
    Server,
    check_bench_database,
    checkout,
    machine_cpu_ticks,
    parse_time,
    percentile,
    pg_transactions,
    pids_named,
    process_cpu_seconds,
    reset_database,
    tree_pids,
)

CAPABILITY = "bench-v1"
CLIENT_ID = "bench-client"
BATCH_SIZE = 100  # the API's maximum per POST /ains/tasks/batch (and per batch complete)
TEXT = "x" * 100  # the payload every system gets
BATCH_COMPLETE_PATH = "/ains/agents/{agent_id}/tasks/complete"
ERROR_PAUSE = 0.1
WARMUP_SECONDS = 1.0  # S1, S3: untimed singles at the scenario's rate before the timed ones
SOAK_SUBMITTERS = 4  # S5: submitter threads (open loop)
S4_SETTLE_SECONDS = 15  # S4: from the agents' start to the measurement
# S5: how long the retention job rests once caught up (REST_AFTER_CAUGHT_UP in
# app/services/retention.py).
RETENTION_REST_S = 60
PROBLEM_WORDS = ("Traceback", " ERROR ", "CRITICAL", "TIMEOUT", "deadlock")
# Tables the retention job prunes with their tasks (S5 judges whether they stay bounded).
PRUNED_TABLES = ("tasks", "task_events", "task_attempts", "trust_records")
# Tables that grow with every task or submit (S5 counts them each interval).
GROWING_TABLES = (
    "tasks",
    "task_events",
    "task_attempts",
    "trust_records",
    "audit_events",
    "webhook_events",
)


SETUP_SNIPPET = """
import json, sys
from flask_migrate import upgrade
from app import create_app
from app.extensions import db
from app.services import auth

app = create_app()
with app.app_context():
    if sys.argv[2] == "1":
        upgrade()
    keys = {}
    for role, name, client_id in (
        ("admin", "bench admin", None),
        ("client", "bench client", sys.argv[1]),
        ("agent", "bench agents", None),
    ):
        keys[role] = auth.create_api_key(name=name, role=role, client_id=client_id)[1]
    db.session.remove()
print("BENCH-KEYS", json.dumps(keys))
"""


# (database URL, code directory) pairs this process has migrated: later deployments on them
# truncate the tables instead.
MIGRATED: set[tuple[str, str]] = set()


def truncate_all(database_url: str) -> None:
    """Empty every table of the public schema but Alembic's version."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename <> 'alembic_version'"
            )
        ]
        if tables:
            names = ", ".join(f'public."{t}"' for t in tables)
            conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")


@dataclass
class Target:
    """Where and how to run AINS."""

    database_url: str
    redis_url: str
    port: int = 8102
    web_workers: int = 2
    web_threads: int = 32
    ref: str | None = None


def task_body(index: int) -> dict[str, Any]:
    return {
        "client_id": CLIENT_ID,
        "task_type": "bench",
        "capability_required": CAPABILITY,
        "input_data": {"n": index, "text": TEXT},
        "max_retries": 0,
    }


def ms_stats(seconds: list[float]) -> tuple[float | None, float | None]:
    """(p50, p99) in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return percentile(ms, 50), percentile(ms, 99)


# --------------------------------------------------------------------------- deployment


class Deployment:
    """A fresh AINS: schema reset, Redis flushed, keys, gunicorn, and optionally the RQ worker
    and the clock (as the Procfile runs them). A context manager: everything stops on exit."""

    def __init__(
        self,
        target: Target,
        label: str,
        jobs: bool = False,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.target = target
        self.label = label
        self.jobs = jobs
        self.base = f"http://127.0.0.1:{target.port}"
        self.env = dict(os.environ)
        self.env.update(
            DATABASE_URL=target.database_url,
            REDIS_URL=target.redis_url,
            SECRET_KEY="bench-secret-key",
            PORT=str(target.port),
            WEB_CONCURRENCY=str(target.web_workers),
            WEB_THREADS=str(target.web_threads),
            PYTHONUNBUFFERED="1",
            **(extra_env or {}),
        )
        self.server: Server | None = None
        self.children: list[Child] = []
        self.apis: list[Api] = []
        self.problems: list[str] = []
        self.logs: list[Path] = []

    def __enter__(self) -> Deployment:
        TMP_DIR.mkdir(parents=True, exist_ok=True)
        self.app_dir, self.app_label = checkout(self.target.ref)
        fresh = (self.target.database_url, str(self.app_dir))
        if fresh in MIGRATED:
            # The schema this process migrated earlier: emptying it is as good and much
            # quicker than dropping it and running every migration again.
            truncate_all(self.target.database_url)
        else:
            reset_database(self.target.database_url)
        redis.Redis.from_url(self.target.redis_url).flushdb()
        # One process migrates and makes the keys (each flask command imports the app anew).
        made = subprocess.run(
            [sys.executable, "-c", SETUP_SNIPPET, CLIENT_ID, "0" if fresh in MIGRATED else "1"],
            cwd=self.app_dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if made.returncode != 0 or "BENCH-KEYS" not in made.stdout:
            raise RuntimeError(f"migration and keys failed:\n{made.stderr[-3000:]}")
        MIGRATED.add(fresh)
        keys = json.loads(made.stdout.split("BENCH-KEYS", 1)[1])
        self.admin_key, self.client_key, self.agent_key = (
            keys["admin"],
            keys["client"],
            keys["agent"],
        )
        stamp = time.strftime("%Y%m%d-%H%M%S")
        log = TMP_DIR / f"ains-{stamp}-{self.label}-web.log"
        self.logs.append(log)
        try:
            self.server = Server(self.app_dir, self.env, log)
            self.server.wait_healthy(self.base)
            if self.jobs:
                for name, module in (("worker", "jobs.worker"), ("clock", "jobs.clock")):
                    path = TMP_DIR / f"ains-{stamp}-{self.label}-{name}.log"
                    self.logs.append(path)
                    self.children.append(Child(name, module, self.app_dir, self.env, path))
                time.sleep(3)  # they import the app
        except BaseException:
            self.stop()
            raise
        self.admin = self.api(self.admin_key)
        self.client = self.api(self.client_key)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for api in self.apis:
            api.close()
        for child in self.children:
            child.stop()
        if self.server is not None:
            self.server.stop()
            self.server = None
        for path in self.logs:
            if path.exists():
                self.problems += [
                    f"{path.name}: {line[:300]}"
                    for line in path.read_text(errors="replace").splitlines()
                    if any(word in line for word in PROBLEM_WORDS)
                ][:20]

    def api(self, key: str) -> Api:
        api = Api(self.base, key)
        self.apis.append(api)
        return api

    def gunicorn_pids(self) -> list[int]:
        return tree_pids(self.server.proc.pid) if self.server else []

    def job_pids(self) -> list[int]:
        return [pid for child in self.children for pid in child.pids()]

    def has_batch_complete(self) -> bool:
        """Whether the server offers POST /ains/agents/<id>/tasks/complete."""
        paths = self.admin.ok("GET", "/openapi.json").get("paths", {})
        return any(p.rstrip("/").endswith("/tasks/complete") and "agents" in p for p in paths)

    def retention_setting(self) -> bool:
        """Whether the served code knows TASK_RETENTION_DAYS (the retention job)."""
        config = self.app_dir / "app" / "config.py"
        return config.exists() and "TASK_RETENTION_DAYS" in config.read_text()

    def register_agents(self, count: int, max_concurrent: int) -> list[tuple[str, str]]:
        """(agent_id, own key) of ``count`` new agents with the bench capability."""
        registrar = self.api(self.agent_key)
        agents = []
        for index in range(count):
            body = {
                "display_name": f"bench agent {index}",
                "public_key": f"bench-{uuid.uuid4().hex}",
                "capabilities": [{"name": CAPABILITY, "version": "1"}],
                "max_concurrent_tasks": max_concurrent,
            }
            registered = registrar.ok("POST", "/ains/agents", body)
            agents.append((registered["agent_id"], registered["api_key"]))
        return agents

    def tasks_by_status(self) -> dict[str, int]:
        return self.admin.ok("GET", "/ains/queue/metrics")["tasks_by_status"]


class CpuMeter:
    """CPU seconds of groups of processes between start and read, from /proc, as % of one
    core; plus the machine's busy share and this load generator's CPU."""

    def __init__(self, groups: dict[str, Any]) -> None:
        self.groups = groups  # name -> callable returning pids
        self.start = {name: self.snapshot(pids()) for name, pids in groups.items()}
        self.busy0, self.total0 = machine_cpu_ticks()
        self.self0 = time.process_time()
        self.wall0 = time.monotonic()

    @staticmethod
    def snapshot(pids: list[int]) -> dict[int, float]:
        return {pid: process_cpu_seconds([pid]) for pid in set(pids)}

    def read(self) -> dict[str, Any]:
        wall = time.monotonic() - self.wall0
        busy, total = machine_cpu_ticks()
        out: dict[str, Any] = {"wall_s": round(wall, 2)}
        for name, pids in self.groups.items():
            now = self.snapshot(pids())
            before = self.start[name]
            seconds = sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in now.items())
            out[f"{name}_cpu_s"] = round(seconds, 2)
            out[f"{name}_pct_of_core"] = round(100 * seconds / wall, 2) if wall else None
        loadgen = time.process_time() - self.self0
        out["loadgen_cpu_s"] = round(loadgen, 2)
        out["machine_busy_pct"] = (
            round(100 * (busy - self.busy0) / (total - self.total0), 1)
            if total > self.total0
            else None
        )
        out["cpus"] = os.cpu_count()
        return out


def bench_backend_pids(database_url: str) -> list[int]:
    """The PostgreSQL backends connected to the bench database (not other users')."""
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            ).fetchall()
    except psycopg.Error:
        return []
    return [int(r[0]) for r in rows]


def standard_meter(dep: Deployment) -> CpuMeter:
    groups: dict[str, Any] = {
        "gunicorn": dep.gunicorn_pids,
        "postgres_bench": lambda: bench_backend_pids(dep.target.database_url),
        "postgres_all": lambda: pids_named("postgres"),
        "redis": lambda: pids_named("redis-server"),
    }
    if dep.jobs:
        groups["jobs"] = dep.job_pids
    return CpuMeter(groups)


def meter_into(dep: Deployment, meters: list[CpuMeter]) -> Callable[[], None]:
    """A callback that starts the standard meter and keeps it in ``meters``."""
    return lambda: meters.append(standard_meter(dep))


# --------------------------------------------------------------------------- the agent


@dataclass
class Tally:
    """What the agents saw, thread-safe."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    claimed: list[str] = field(default_factory=list)
    first_claim: float | None = None  # monotonic
    last_completion: float | None = None
    completed: int = 0
    claim_calls: int = 0
    complete_calls: int = 0
    not_first_attempt: int = 0
    claimed_gap: dict[str, float] = field(default_factory=dict)  # server created -> claimed
    created_at: dict[str, float] = field(default_factory=dict)  # server epoch
    done_at: list[tuple[float, float]] = field(default_factory=list)  # (epoch ack, created)
    keep_times: bool = False


class BenchAgent:
    """An agent as a real deployment would run one: a claim loop that asks for up to
    ``claim_max`` tasks whenever ``refill`` of its ``slots`` are free (long-polling
    ``wait_seconds``), ``executors`` threads running the no-op, completions sent in batches
    (``POST /ains/agents/<id>/tasks/complete``) when the server has it, else one by one, and
    a heartbeat every ``next_heartbeat_in`` seconds."""

    def __init__(
        self,
        base: str,
        agent_id: str,
        key: str,
        tally: Tally,
        errors: ErrorLog,
        scenario: str,
        *,
        executors: int = 8,
        slots: int = 32,
        claim_max: int = 32,
        refill: int = 8,
        wait_seconds: int = 1,
        batch_complete: bool = True,
    ) -> None:
        self.base, self.agent_id, self.key = base, agent_id, key
        self.tally, self.errors, self.scenario = tally, errors, scenario
        self.executors, self.slots, self.claim_max = executors, slots, claim_max
        self.refill = min(refill, slots)
        self.wait_seconds = wait_seconds
        self.batch_complete = batch_complete
        self.stop = threading.Event()
        self.free = threading.Condition()
        self.in_flight = 0
        self.work: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.results: queue.Queue[tuple[dict[str, Any], dict[str, Any]]] = queue.Queue()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        targets = [(self.claim_loop, "claim"), (self.heartbeat_loop, "heartbeat")]
        targets += [(self.executor, f"exec-{i}") for i in range(self.executors)]
        if self.batch_complete:
            targets.append((self.completer, "complete"))
        for target, name in targets:
            thread = threading.Thread(target=target, name=f"{self.agent_id}-{name}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def shut(self) -> None:
        """Stop claiming; a waiting long poll ends when it answers (or the server stops)."""
        self.stop.set()
        with self.free:
            self.free.notify_all()
        for _ in range(self.executors):
            self.work.put(None)

    def error(self, what: str, status: int | None, detail: str) -> None:
        if not self.stop.is_set():
            self.errors.add(self.scenario, what, status, detail)

    def claim_loop(self) -> None:
        api = Api(self.base, self.key)
        path = f"/ains/agents/{self.agent_id}/tasks/claim"
        try:
            while not self.stop.is_set():
                with self.free:
                    while self.slots - self.in_flight < self.refill and not self.stop.is_set():
                        self.free.wait(0.5)
                    want = min(self.claim_max, self.slots - self.in_flight)
                if self.stop.is_set():
                    return
                body = {"max_tasks": want, "wait_seconds": self.wait_seconds}
                sent = time.monotonic()
                with self.tally.lock:
                    if self.tally.first_claim is None:
                        self.tally.first_claim = sent
                try:
                    response = api.call(
                        "POST", path, body, timeout=HTTP_TIMEOUT + self.wait_seconds
                    )
                except requests.RequestException as exc:
                    self.error("claim", None, repr(exc))
                    time.sleep(ERROR_PAUSE)
                    continue
                if not response.ok:
                    self.error("claim", response.status_code, response.text)
                    time.sleep(ERROR_PAUSE)
                    continue
                tasks = response.json()["tasks"]
                with self.tally.lock:
                    self.tally.claim_calls += 1
                    for task in tasks:
                        tid = task["task_id"]
                        self.tally.claimed.append(tid)
                        if task["attempt"] != 1:
                            self.tally.not_first_attempt += 1
                        if self.tally.keep_times:
                            created = parse_time(task["created_at"])
                            self.tally.created_at[tid] = created
                            self.tally.claimed_gap[tid] = parse_time(task["claimed_at"]) - created
                with self.free:
                    self.in_flight += len(tasks)
                for task in tasks:
                    self.work.put(task)
        finally:
            api.close()

    def executor(self) -> None:
        api = None if self.batch_complete else Api(self.base, self.key)
        try:
            while (task := self.work.get()) is not None:
                result = {"n": task["input_data"].get("n"), "ok": True}  # the no-op
                if self.batch_complete:
                    self.results.put((task, result))
                    continue
                body = {"result_data": result, "attempt": task["attempt"]}
                try:
                    response = api.call("POST", f"/ains/tasks/{task['task_id']}/complete", body)
                except requests.RequestException as exc:
                    self.error("complete", None, repr(exc))
                    self.finished(task, ok=False)
                    continue
                if not response.ok:
                    self.error("complete", response.status_code, response.text)
                self.finished(task, ok=response.ok, calls=1)
        finally:
            if api:
                api.close()

    def completer(self) -> None:
        api = Api(self.base, self.key)
        path = BATCH_COMPLETE_PATH.format(agent_id=self.agent_id)
        try:
            while not (self.stop.is_set() and self.results.empty()):
                try:
                    batch = [self.results.get(timeout=0.2)]
                except queue.Empty:
                    continue
                while len(batch) < BATCH_SIZE:
                    try:
                        batch.append(self.results.get_nowait())
                    except queue.Empty:
                        break
                body = {
                    "results": [
                        {"task_id": t["task_id"], "result": r, "attempt": t["attempt"]}
                        for t, r in batch
                    ]
                }
                try:
                    response = api.call("POST", path, body)
                except requests.RequestException as exc:
                    self.error("batch complete", None, repr(exc))
                    for task, _ in batch:
                        self.finished(task, ok=False)
                    continue
                if not response.ok:
                    self.error("batch complete", response.status_code, response.text)
                    for task, _ in batch:
                        self.finished(task, ok=False)
                    continue
                answers = {a["task_id"]: a for a in response.json()["results"]}
                with self.tally.lock:
                    self.tally.complete_calls += 1
                for task, _ in batch:
                    answer = answers.get(task["task_id"], {})
                    if not answer.get("ok"):
                        self.error("batch complete item", 200, json.dumps(answer)[:300])
                    self.finished(task, ok=bool(answer.get("ok")))
        finally:
            api.close()

    def finished(self, task: dict[str, Any], ok: bool, calls: int = 0) -> None:
        now = time.monotonic()
        epoch = time.time()
        with self.tally.lock:
            self.tally.complete_calls += calls
            if ok:
                self.tally.completed += 1
                self.tally.last_completion = now
                created = self.tally.created_at.get(task["task_id"])
                if self.tally.keep_times and created is not None:
                    self.tally.done_at.append((epoch, created))
        with self.free:
            self.in_flight -= 1
            self.free.notify_all()

    def heartbeat_loop(self) -> None:
        api = Api(self.base, self.key)
        started = time.monotonic()
        interval = 10.0
        try:
            while True:
                body = {
                    "timestamp": int(time.time()),
                    "status": "ACTIVE",
                    "uptime_ms": int((time.monotonic() - started) * 1000),
                    "metrics": {"running_tasks": self.in_flight},
                }
                try:
                    response = api.call("POST", f"/ains/agents/{self.agent_id}/heartbeat", body)
                    if response.ok:
                        interval = max(1.0, float(response.json().get("next_heartbeat_in") or 10))
                    else:
                        self.error("heartbeat", response.status_code, response.text)
                except requests.RequestException as exc:
                    self.error("heartbeat", None, repr(exc))
                if self.stop.wait(interval):
                    return
        finally:
            api.close()


# --------------------------------------------------------------------------- submitting


def batch_submit(dep: Deployment, total: int, clients: int, errors: ErrorLog, scenario: str) -> int:
    """Submit ``total`` tasks, ``BATCH_SIZE`` per call, from ``clients`` threads; how many
    the server accepted."""
    lock = threading.Lock()
    next_call = [0]
    accepted = [0]
    calls = (total + BATCH_SIZE - 1) // BATCH_SIZE

    def client() -> None:
        api = Api(dep.base, dep.client_key)
        try:
            while True:
                with lock:
                    call = next_call[0]
                    next_call[0] += 1
                if call >= calls:
                    return
                first = call * BATCH_SIZE
                items = [task_body(i) for i in range(first, min(first + BATCH_SIZE, total))]
                try:
                    response = api.call("POST", "/ains/tasks/batch", {"tasks": items})
                except requests.RequestException as exc:
                    errors.add(scenario, "batch submit", None, repr(exc))
                    continue
                if response.status_code != 201:
                    errors.add(scenario, "batch submit", response.status_code, response.text)
                    continue
                answer = response.json()
                if answer["failed"]:
                    errors.add(scenario, "batch submit items", 201, json.dumps(answer["failed"]))
                with lock:
                    accepted[0] += len(answer["submitted"])
        finally:
            api.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return accepted[0]


def open_loop_singles(
    dep: Deployment,
    rate: float,
    seconds: float,
    senders: int,
    errors: ErrorLog,
    scenario: str,
    warmup_seconds: float = WARMUP_SECONDS,
    at_timed_start: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """``rate`` single ``POST /ains/tasks`` per second for ``seconds``, on a fixed schedule
    (open loop: a slow answer does not delay the next send), from ``senders`` keep-alive
    sessions. Round trips, achieved rate, how late the sends left.

    The schedule starts ``warmup_seconds`` earlier, at the same rate and from the same
    sessions, untimed: a freshly booted server's first requests open its database
    connections and compile its statements (the baselines likewise send untimed enqueues
    first). ``offered``/``ok`` count every submit; ``ids`` and the figures only the timed
    ones. ``at_timed_start`` is called when the timed part is due (to start a CpuMeter)."""
    warm = int(rate * warmup_seconds)
    total = warm + int(rate * seconds)
    interval = 1.0 / rate
    lock = threading.Lock()
    next_index = [0]
    rtts: list[float] = []
    late: list[float] = []
    ids: list[str] = []
    accepted = [0]
    start = time.monotonic() + 0.2
    timed_start = start + warm * interval
    give_up = timed_start + seconds + 30
    last_answer = [timed_start]

    def sender() -> None:
        api = Api(dep.base, dep.client_key)
        try:
            while True:
                with lock:
                    index = next_index[0]
                    next_index[0] += 1
                if index >= total or time.monotonic() > give_up:
                    return
                due = start + index * interval
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                sent = time.monotonic()
                try:
                    response = api.call("POST", "/ains/tasks", task_body(index))
                except requests.RequestException as exc:
                    errors.add(scenario, "submit", None, repr(exc))
                    continue
                answered = time.monotonic()
                if response.status_code != 201:
                    errors.add(scenario, "submit", response.status_code, response.text)
                    continue
                with lock:
                    accepted[0] += 1
                    if index < warm:
                        continue
                    rtts.append(answered - sent)
                    late.append(sent - due)
                    ids.append(response.json()["task_id"])
                    last_answer[0] = max(last_answer[0], answered)
        finally:
            api.close()

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(senders)]
    for thread in threads:
        thread.start()
    if at_timed_start is not None:
        time.sleep(max(0.0, timed_start - time.monotonic()))
        at_timed_start()
    for thread in threads:
        thread.join()
    wall = last_answer[0] - timed_start
    p50, p99 = ms_stats(rtts)
    return {
        "offered": total,
        "ok": accepted[0],
        "warmup": warm,
        "timed_ok": len(rtts),
        "ids": ids,
        "p50_ms": p50,
        "p99_ms": p99,
        "rate_achieved": len(rtts) / wall if wall > 0 else None,
        "late_p99_ms": ms_stats(late)[1],
    }


def common_checks(dep: Deployment, errors: ErrorLog) -> list[str]:
    problems = [f"client errors: {errors.counts()}"] if errors.entries else []
    return problems + dep.problems


# --------------------------------------------------------------------------- scenarios


def s1_submit(
    target: Target,
    rate: float = 200,
    seconds: float = 10,
    batch_tasks: int = 20_000,
    batch_clients: int = 2,
    senders: int = 16,
) -> dict[str, Any]:
    """S1: single submits at a steady open-loop ``rate``; then batches of 100."""
    errors = ErrorLog()
    with Deployment(target, "s1") as dep:
        meters: list[CpuMeter] = []  # from the timed singles on
        single = open_loop_singles(
            dep, rate, seconds, senders, errors, "s1", at_timed_start=meter_into(dep, meters)
        )
        started = time.monotonic()
        accepted = batch_submit(dep, batch_tasks, batch_clients, errors, "s1")
        batch_seconds = time.monotonic() - started
        cpu = meters[0].read()
        by_status = dep.tasks_by_status()
    expected = {"PENDING": single["ok"] + accepted}
    problems = common_checks(dep, errors)
    if by_status != expected:
        problems.append(f"tasks_by_status {by_status} != {expected}")
    if accepted != batch_tasks or single["ok"] != single["offered"]:
        problems.append(f"accepted {single['ok']}/{single['offered']} singles, {accepted} batch")
    return {
        "figures": {
            "single_p50_ms": single["p50_ms"],
            "single_p99_ms": single["p99_ms"],
            "single_rate_achieved": single["rate_achieved"],
            "batch_tasks_per_s": accepted / batch_seconds if batch_seconds else None,
        },
        "params": {
            "rate": rate,
            "duration_s": seconds,
            "senders": senders,
            "batch_tasks": batch_tasks,
            "batch_size": BATCH_SIZE,
            "batch_clients": batch_clients,
            "agents": "none registered (tasks stay PENDING; nothing to route to)",
            "single_late_p99_ms": single["late_p99_ms"],
            "single_warmup": f"{single['warmup']} untimed singles first, at the same rate",
            "batch_seconds": batch_seconds,
            "web": f"{target.web_workers} gunicorn workers x {target.web_threads} threads",
        },
        "checks": {"ok": not problems, "problems": problems},
        "cpu": cpu,
    }


def run_agents(
    dep: Deployment,
    count: int,
    tally: Tally,
    errors: ErrorLog,
    scenario: str,
    wait_seconds: int,
    batch_complete: bool,
    executors: int = 8,
    slots: int = 32,
) -> list[BenchAgent]:
    agents = [
        BenchAgent(
            dep.base,
            agent_id,
            key,
            tally,
            errors,
            scenario,
            executors=executors,
            slots=slots,
            claim_max=slots,
            refill=executors,
            wait_seconds=wait_seconds,
            batch_complete=batch_complete,
        )
        for agent_id, key in dep.register_agents(count, slots)
    ]
    for agent in agents:
        agent.start()
    return agents


def wait_for(condition: Any, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())


def agent_checks(tally: Tally, expected: int) -> list[str]:
    problems = []
    duplicates = [tid for tid, n in Counter(tally.claimed).items() if n > 1]
    if duplicates:
        problems.append(f"{len(duplicates)} tasks claimed more than once")
    if tally.not_first_attempt:
        problems.append(f"{tally.not_first_attempt} claims with attempt > 1")
    if len(set(tally.claimed)) != expected or tally.completed != expected:
        problems.append(
            f"claimed {len(set(tally.claimed))}, completed {tally.completed} of {expected}"
        )
    return problems


def s2_drain(
    target: Target, tasks: int = 20_000, agents: int = 4, executors: int = 8, slots: int = 32
) -> dict[str, Any]:
    """S2: ``tasks`` queued first, then ``agents`` agents drain them (claim <= ``slots``)."""
    errors = ErrorLog()
    tally = Tally()
    with Deployment(target, "s2") as dep:
        batch = dep.has_batch_complete()
        started = time.monotonic()
        accepted = batch_submit(dep, tasks, 2, errors, "s2")
        submit_seconds = time.monotonic() - started
        meter = standard_meter(dep)
        xacts0 = sum(pg_transactions(target.database_url))
        running = run_agents(dep, agents, tally, errors, "s2", 1, batch, executors, slots)
        finished = wait_for(lambda: tally.completed >= accepted, max(120.0, tasks / 20), 0.1)
        for agent in running:
            agent.shut()
        cpu = meter.read()
        xacts = sum(pg_transactions(target.database_url)) - xacts0
        by_status = dep.tasks_by_status()
    seconds = (tally.last_completion or time.monotonic()) - (tally.first_claim or started)
    problems = common_checks(dep, errors) + agent_checks(tally, accepted)
    if not finished:
        problems.append("did not finish in time")
    if by_status != {"COMPLETED": accepted}:
        problems.append(f"tasks_by_status {by_status} != COMPLETED {accepted}")
    if accepted != tasks:
        problems.append(f"only {accepted} of {tasks} submitted")
    return {
        "figures": {
            "tasks_per_s": tally.completed / seconds if seconds > 0 else None,
            "tasks": tally.completed,
            "seconds": seconds,
        },
        "params": {
            "tasks": tasks,
            "agents": agents,
            "executors_per_agent": executors,
            "max_concurrent_tasks": slots,
            "claim_max_tasks": slots,
            "claim_when_free_slots": executors,
            "claim_wait_seconds": 1,
            "completion": "batch POST /ains/agents/<id>/tasks/complete"
            if batch
            else "single POST /ains/tasks/<id>/complete",
            "submit_untimed_seconds": submit_seconds,
            "claim_calls": tally.claim_calls,
            "complete_calls": tally.complete_calls,
            "pg_transactions_per_task": xacts / tally.completed if tally.completed else None,
        },
        "checks": {"ok": not problems, "problems": problems},
        "cpu": cpu,
    }


def list_task_times(dep: Deployment) -> dict[str, tuple[float, float | None, float | None]]:
    """task id -> (created, claimed, completed) epoch seconds, for every task (paged)."""
    times: dict[str, tuple[float, float | None, float | None]] = {}
    cursor = None
    while True:
        params = f"?capability={CAPABILITY}&limit=500" + (f"&cursor={cursor}" if cursor else "")
        page = dep.admin.ok("GET", "/ains/tasks" + params)
        for task in page["tasks"]:
            times[task["task_id"]] = tuple(
                parse_time(task[k]) if task.get(k) else None
                for k in ("created_at", "claimed_at", "completed_at")
            )
        cursor = page.get("next_cursor")
        if not cursor:
            return times


def s3_latency(
    target: Target, rate: float = 100, seconds: float = 20, agents: int = 4, senders: int = 8
) -> dict[str, Any]:
    """S3: agents idle in their long poll; single submits at ``rate``/s for ``seconds``."""
    errors = ErrorLog()
    tally = Tally(keep_times=True)
    with Deployment(target, "s3") as dep:
        batch = dep.has_batch_complete()
        running = run_agents(dep, agents, tally, errors, "s3", 20, batch)
        time.sleep(2)  # every agent reaches its long poll on the empty queue
        meters: list[CpuMeter] = []  # from the timed singles on
        single = open_loop_singles(
            dep, rate, seconds, senders, errors, "s3", at_timed_start=meter_into(dep, meters)
        )
        finished = wait_for(lambda: tally.completed >= single["ok"], 30)
        cpu = meters[0].read()
        for agent in running:
            agent.shut()
        times = list_task_times(dep)
        by_status = dep.tasks_by_status()
    mine = [times[tid] for tid in single["ids"] if tid in times]
    claimed = [c - a for a, c, _ in mine if c is not None]
    completed = [d - a for a, _, d in mine if d is not None]
    problems = common_checks(dep, errors) + agent_checks(tally, single["ok"])
    if not finished:
        problems.append("not every task completed within 30 s of the last submit")
    if single["ok"] != single["offered"]:
        problems.append(
            f"only {single['ok']} of {single['offered']} submits answered 201 within 30 s "
            "of the schedule's end: the server could not absorb the rate"
        )
    if by_status != {"COMPLETED": single["ok"]}:
        problems.append(f"tasks_by_status {by_status} != COMPLETED {single['ok']}")
    claimed_p50, claimed_p99 = ms_stats(claimed)
    completed_p50, completed_p99 = ms_stats(completed)
    return {
        "figures": {
            "claimed_p50_ms": claimed_p50,
            "claimed_p99_ms": claimed_p99,
            "completed_p50_ms": completed_p50,
            "completed_p99_ms": completed_p99,
            "rate_achieved": single["rate_achieved"],
            "n": len(claimed),
        },
        "params": {
            "rate": rate,
            "duration_s": seconds,
            "agents": agents,
            "executors_per_agent": 8,
            "claim_max_tasks": 32,
            "claim_wait_seconds": 20,
            "completion": "batch" if batch else "single",
            "times": "server created_at -> claimed_at / completed_at (GET /ains/tasks after)",
            "warmup": f"{single['warmup']} untimed singles first, at the same rate",
            "submit_p50_ms": single["p50_ms"],
            "submit_p99_ms": single["p99_ms"],
        },
        "checks": {"ok": not problems, "problems": problems},
        "cpu": cpu,
    }


class RedisMonitor:
    """Counts the commands Redis runs on one DB (MONITOR: the INFO counter is server-wide,
    and Redis here is shared with other users)."""

    def __init__(self, url: str) -> None:
        self.db = int(urlsplit(url).path.lstrip("/") or 0)
        self.client = redis.Redis.from_url(url)
        self.count = 0
        self.other = 0
        self.monitor = self.client.monitor()
        self.monitor.__enter__()
        self.thread = threading.Thread(target=self.listen, daemon=True)
        self.thread.start()

    def listen(self) -> None:
        with contextlib.suppress(Exception):
            for command in self.monitor.listen():
                if int(command.get("db", -1)) == self.db:
                    self.count += 1
                else:
                    self.other += 1

    def stop(self) -> tuple[int, int]:
        counts = (self.count, self.other)
        with contextlib.suppress(Exception):
            self.monitor.connection.disconnect()
        return counts


def s4_idle(
    target: Target, agents: int = 20, seconds: float = 60, wait_seconds: int = 20
) -> dict[str, Any]:
    """S4: ``agents`` agents heartbeating and long-polling an empty queue (as the sample
    agent does: wait_seconds 20, heartbeat every next_heartbeat_in); gunicorn alone."""
    errors = ErrorLog()
    tally = Tally()
    with Deployment(target, "s4") as dep:
        running = [
            BenchAgent(
                dep.base,
                agent_id,
                key,
                tally,
                errors,
                "s4",
                executors=1,
                slots=1,
                claim_max=1,
                refill=1,
                wait_seconds=wait_seconds,
                batch_complete=False,
            )
            for agent_id, key in dep.register_agents(agents, 1)
        ]
        for agent in running:
            agent.start()
        # Steady state: both workers booted and warm (a worker's first requests compile its
        # statement caches), every agent heartbeating and in its long poll.
        time.sleep(S4_SETTLE_SECONDS)
        info = redis.Redis.from_url(target.redis_url)
        commands0 = int(info.info("stats")["total_commands_processed"])
        monitor = RedisMonitor(target.redis_url)
        xacts0 = pg_transactions(target.database_url)
        claims0 = tally.claim_calls
        meter = standard_meter(dep)
        time.sleep(seconds)
        cpu = meter.read()
        xacts1 = pg_transactions(target.database_url)
        db_commands, other_commands = monitor.stop()
        commands = int(info.info("stats")["total_commands_processed"]) - commands0
        claims = tally.claim_calls - claims0
        for agent in running:
            agent.shut()
    wall = cpu["wall_s"]
    xacts = sum(xacts1) - sum(xacts0)
    server_db = cpu["gunicorn_pct_of_core"] + cpu["postgres_bench_pct_of_core"]
    problems = common_checks(dep, errors)
    return {
        "figures": {
            "server_db_cpu_pct": server_db,
            "gunicorn_cpu_pct": cpu["gunicorn_pct_of_core"],
            "postgres_bench_cpu_pct": cpu["postgres_bench_pct_of_core"],
            "postgres_all_cpu_pct": cpu["postgres_all_pct_of_core"],
            "redis_cpu_pct": cpu["redis_pct_of_core"],
            "pg_transactions_per_s": xacts / wall,
            "redis_commands_per_s": db_commands / wall,
            "redis_commands_per_s_server_wide": commands / wall,
            "claims_per_s": claims / wall,
        },
        "params": {
            "agents": agents,
            "seconds": seconds,
            "wait_seconds": wait_seconds,
            "heartbeat": "every next_heartbeat_in seconds (HEARTBEAT_INTERVAL_SECONDS, 10)",
            "processes": "gunicorn only (no RQ worker or clock: bench/schedules.py measures "
            "their idle cost)",
            "queries": "pg_stat_database xact_commit + xact_rollback of the bench database "
            "(pg_stat_statements is not loaded here: not in shared_preload_libraries)",
            "redis": "commands on the bench Redis DB counted with MONITOR; the server-wide "
            "INFO counter includes the machine's other Redis users",
            "cpu": "% of one core: gunicorn process tree + the bench database's PostgreSQL "
            "backends (postgres_all: every postgres process, other users included)",
            "redis_commands_other_dbs": other_commands,
        },
        "checks": {"ok": not problems, "problems": problems},
        "cpu": cpu,
    }


def table_counts(database_url: str) -> dict[str, int]:
    counts = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        for table in GROWING_TABLES:
            with contextlib.suppress(psycopg.Error):
                counts[table] = int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    return counts


def s5_soak(
    target: Target,
    rate: float,
    seconds: float = 600,
    bucket: float = 60,
    retention_days: float = 0.001,
    agents: int = 4,
) -> dict[str, Any]:
    """S5: batches submitted at ``rate`` tasks/s for ``seconds`` while ``agents`` drain as in
    S2, with the RQ worker and the clock running and TASK_RETENTION_DAYS = ``retention_days``;
    per ``bucket`` seconds: completed/s, created -> completed p99, table row counts."""
    errors = ErrorLog()
    tally = Tally(keep_times=True)
    extra = {"TASK_RETENTION_DAYS": str(retention_days)}
    per_call = max(1, min(BATCH_SIZE, round(rate / 10)))  # about ten batch calls a second
    calls_per_s = rate / per_call
    samples: list[dict[str, Any]] = []
    submitted = [0]
    with Deployment(target, "s5", jobs=True, extra_env=extra) as dep:
        batch = dep.has_batch_complete()
        retention_known = dep.retention_setting()
        running = run_agents(dep, agents, tally, errors, "s5", 20, batch)
        time.sleep(1)
        meter = standard_meter(dep)
        stop = threading.Event()
        start_epoch = time.time()
        start = time.monotonic()

        next_call = [0]
        lock = threading.Lock()

        def submitter() -> None:
            # Open loop: call k is due at start + k / calls_per_s whatever the server's speed;
            # a few threads keep the schedule when one call takes longer than the interval.
            api = Api(dep.base, dep.client_key)
            try:
                while not stop.is_set():
                    with lock:
                        call = next_call[0]
                        next_call[0] += 1
                    due = start + call / calls_per_s
                    if due >= start + seconds:
                        return
                    pause = due - time.monotonic()
                    if pause > 0 and stop.wait(pause):
                        return
                    items = [task_body(call * per_call + i) for i in range(per_call)]
                    try:
                        response = api.call("POST", "/ains/tasks/batch", {"tasks": items})
                    except requests.RequestException as exc:
                        errors.add("s5", "batch submit", None, repr(exc))
                        continue
                    if response.status_code != 201:
                        errors.add("s5", "batch submit", response.status_code, response.text)
                        continue
                    with lock:
                        submitted[0] += len(response.json()["submitted"])
            finally:
                api.close()

        threads = [threading.Thread(target=submitter, daemon=True) for _ in range(SOAK_SUBMITTERS)]
        for thread in threads:
            thread.start()
        buckets = int(seconds // bucket)
        try:
            for index in range(1, buckets + 1):
                end = start + index * bucket
                while time.monotonic() < end:
                    time.sleep(min(1.0, max(0.0, end - time.monotonic())))
                counts = table_counts(target.database_url)
                samples.append({"t_s": round(index * bucket), "rows": counts})
                print(
                    f"    s5 {index * bucket:.0f}/{seconds:.0f} s: submitted {submitted[0]}, "
                    f"completed {tally.completed}, rows {counts}",
                    flush=True,
                )
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        finished = wait_for(lambda: tally.completed >= submitted[0], 60, 0.2)
        cpu = meter.read()
        for agent in running:
            agent.shut()
        by_status = dep.tasks_by_status()
    with tally.lock:
        done = list(tally.done_at)
    for index, sample in enumerate(samples):
        low, high = start_epoch + index * bucket, start_epoch + (index + 1) * bucket
        inside = [(ack, created) for ack, created in done if low <= ack < high]
        sample["completed_per_s"] = len(inside) / bucket
        sample["created_to_completed_p99_ms"] = ms_stats([ack - c for ack, c in inside])[1]
    first, last = (samples[0], samples[-1]) if samples else ({}, {})

    def drift(key: str) -> float | None:
        if not samples or not first.get(key) or last.get(key) is None:
            return None
        return (last[key] - first[key]) / first[key]

    # The retention job rests RETENTION_REST_S after a pass that caught up, so a finished
    # task goes between retention and retention + rest after its end: the row counts saw-tooth.
    # Bounded = the largest count of the last third of the run within 1.2 x (+100) the largest
    # of the middle third; judged when the middle third starts after the first prune.
    window = retention_days * 86400 + RETENTION_REST_S
    plateau: dict[str, Any] = {}
    verdict: bool | None = None
    if seconds < 3 * window or len(samples) < 3:
        plateau_note = (
            f"run ({seconds:.0f} s) shorter than 3 x (retention {retention_days * 86400:.0f} s "
            f"+ the job's rest {RETENTION_REST_S} s): not judged"
        )
    else:
        third = len(samples) // 3
        middle, last_third = samples[third : 2 * third], samples[2 * third :]
        for table in PRUNED_TABLES:
            high_mid = max(x["rows"].get(table, 0) for x in middle)
            high_last = max(x["rows"].get(table, 0) for x in last_third)
            plateau[table] = high_last <= 1.2 * high_mid + 100
        verdict = all(plateau.values())
        plateau_note = (
            "largest count in the last third <= 1.2 x (+100) the middle third's, for each "
            f"table the retention job prunes ({', '.join(PRUNED_TABLES)}); audit_events gets "
            "a row per submit call and keeps AUDIT_RETENTION_DAYS (>= 1 day): not judged"
        )
    problems = common_checks(dep, errors) + agent_checks(tally, submitted[0])
    if not finished:
        problems.append("backlog not drained within 60 s of the last submit")
    offered = int(rate * seconds)
    if submitted[0] < 0.9 * offered:
        problems.append(
            f"only {submitted[0]} of {offered} tasks submitted: the server could not absorb "
            f"{rate:.0f}/s"
        )
    unexpected = {k: v for k, v in by_status.items() if k != "COMPLETED"}
    if unexpected:
        problems.append(f"tasks not COMPLETED at the end: {unexpected}")
    return {
        "figures": {
            "completed_per_s_first": first.get("completed_per_s"),
            "completed_per_s_last": last.get("completed_per_s"),
            "throughput_drift": drift("completed_per_s"),
            "p99_ms_first": first.get("created_to_completed_p99_ms"),
            "p99_ms_last": last.get("created_to_completed_p99_ms"),
            "p99_drift": drift("created_to_completed_p99_ms"),
            "submitted_per_s": submitted[0] / seconds,
            "tables_plateaued": verdict,
            "rows_last": last.get("rows"),
        },
        "params": {
            "rate": rate,
            "seconds": seconds,
            "bucket_s": bucket,
            "batch_per_call": per_call,
            "agents": agents,
            "completion": "batch" if batch else "single",
            "processes": "gunicorn + jobs.worker + jobs.clock",
            "TASK_RETENTION_DAYS": retention_days,
            "retention_setting_in_code": retention_known,
            "plateau_rule": plateau_note,
            "p99": "server created_at (claim answer) -> completion acknowledged (client clock, "
            "same machine)",
            "submitted": submitted[0],
        },
        "samples": samples,
        "plateau": plateau,
        "checks": {"ok": not problems, "problems": problems},
        "cpu": cpu,
    }


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=("s1", "s2", "s3", "s4", "s5"), required=True)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/ains_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--port", type=int, default=8102)
    parser.add_argument("--tasks", type=int, default=20_000, help="S1 batch, S2")
    parser.add_argument("--rate", type=float, default=None, help="S1 200, S3 100, S5 required")
    parser.add_argument("--seconds", type=float, default=None, help="S1 10, S3 20, S4 60, S5 600")
    parser.add_argument("--retention-days", type=float, default=0.001, help="S5")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers (2)")
    parser.add_argument("--web-threads", type=int, default=32, help="threads per worker (32)")
    parser.add_argument("--reset-any-database", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    refused = check_bench_database(args.database_url, args.reset_any_database)
    if refused:
        parser.error(refused)
    target = Target(
        args.database_url, args.redis_url, args.port, args.web_workers, args.web_threads
    )
    if args.scenario == "s1":
        result = s1_submit(target, args.rate or 200, args.seconds or 10, args.tasks)
    elif args.scenario == "s2":
        result = s2_drain(target, args.tasks)
    elif args.scenario == "s3":
        result = s3_latency(target, args.rate or 100, args.seconds or 20)
    elif args.scenario == "s4":
        result = s4_idle(target, seconds=args.seconds or 60)
    else:
        if not args.rate:
            parser.error("--rate is required for s5")
        seconds = args.seconds or 600
        result = s5_soak(target, args.rate, seconds, min(60, seconds / 3), args.retention_days)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0 if result["checks"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
