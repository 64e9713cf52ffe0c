"""What each hot API request costs the server, in process: CPU time, SQL statements and
Python function calls per request, so a change can be judged request by request.

    .venv/bin/python bench/request_costs.py [--only submit,claim] [--n 400] [--repeats 3]
        [--json FILE] [--profile KIND] [--sql]

It builds the app (``create_app`` with the test suite's config) on ``--database-url``
(default postgresql://postgres@127.0.0.1:5432/ains_bench_h1, created if missing; its public
schema is DROPPED and migrated again; names without "bench" are refused) and the Redis DB of
``--redis-url`` (default redis://127.0.0.1:6379/11, FLUSHED), then sends each kind of
request through the Flask test client: no HTTP server, one thread. Every kind starts on
emptied tables with fresh keys and agents. Per kind: a warm-up, ``--repeats`` timed runs of
``--n`` requests (process CPU and wall time; SQL statements counted with a
``before_cursor_execute`` listener), then one run of 100 under cProfile (function calls:
nearly deterministic, so a much steadier signal than CPU time). Whatever a request needs
(tasks to claim or complete, a drained agent) is prepared with the clock stopped.

The figures include the test client's own work (building the WSGI environ, reading the
response), the same for every kind; request bodies are encoded before the clock starts.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import gc
import io
import json
import logging
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
# Before the app is imported: keep its instance folder (secret key) out of the repository.
INSTANCE = tempfile.mkdtemp(prefix="ains-bench-requests-")
os.environ["AINS_INSTANCE_DIR"] = INSTANCE
atexit.register(shutil.rmtree, INSTANCE, ignore_errors=True)

from common import check_bench_database, checkout, reset_database, without_password  # noqa: E402

DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/ains_bench_h1"
DEFAULT_REDIS = "redis://127.0.0.1:6379/11"
CLIENT_ID = "bench-client"
TEXT = "x" * 100  # the payload of bench/ains.py and the baselines
WARMUP = 50  # requests before the timed runs, scaled like --n
PROFILE_REQUESTS = 100  # requests of the cProfile run, scaled like --n
SLOTS = 100  # an agent's max_concurrent_tasks: the API's maximum
BATCH = 100  # tasks per POST /ains/tasks/batch and per batch completion: the API's maximum
UNLIMITED = "1000000/second"  # rate-limit budgets no run reaches: counted, never refused
COMMIT, ROLLBACK = "COMMIT", "ROLLBACK"  # counted with the statements, reported apart


def task_body(index: int, capability: str) -> dict[str, Any]:
    """A submit body, as bench/ains.py sends it."""
    return {
        "client_id": CLIENT_ID,
        "task_type": "bench",
        "capability_required": capability,
        "input_data": {"n": index, "text": TEXT},
        "max_retries": 0,
    }


def encode(body: Any) -> bytes:
    return json.dumps(body).encode()


# --------------------------------------------------------------------------- metering


class Meter:
    """What the timed regions of one run cost: process CPU and wall seconds, SQL statements
    (by text) and, when given a profiler, the function calls it records.

    Only the regions between ``start()`` and ``stop()`` count: preparation in between is
    free.
    """

    def __init__(self, profiler: cProfile.Profile | None = None) -> None:
        self.profiler = profiler
        self.cpu = 0.0
        self.wall = 0.0
        self.statements: Counter[str] = Counter()
        self.running = False
        self._cpu0 = 0.0
        self._wall0 = 0.0

    def start(self) -> None:
        self.running = True
        self._wall0 = time.perf_counter()
        self._cpu0 = time.process_time()
        if self.profiler is not None:
            self.profiler.enable()

    def stop(self) -> None:
        if self.profiler is not None:
            self.profiler.disable()
        self.cpu += time.process_time() - self._cpu0
        self.wall += time.perf_counter() - self._wall0
        self.running = False

    @contextmanager
    def timed(self) -> Iterator[None]:
        self.start()
        try:
            yield
        finally:
            self.stop()

    @contextmanager
    def paused(self) -> Iterator[None]:
        self.stop()
        try:
            yield
        finally:
            self.start()


class StatementCounter:
    """Engine listeners counting, while the current meter runs, the statements sent
    (``before_cursor_execute``: a dict increment, as the statement strings of cached
    compilations are the same objects, so their hashes are cached too) and the commits and
    rollbacks (each a round trip too), as ``COMMIT`` and ``ROLLBACK``."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.meter: Meter | None = None

    @contextmanager
    def counting(self, meter: Meter) -> Iterator[Meter]:
        """Count into ``meter`` (its timed regions only) during the block."""
        from sqlalchemy import event

        listeners = (
            ("before_cursor_execute", self.statement),
            ("commit", self.commit),
            ("rollback", self.rollback),
        )
        self.meter = meter
        for name, listener in listeners:
            event.listen(self.engine, name, listener)
        try:
            yield meter
        finally:
            for name, listener in listeners:
                event.remove(self.engine, name, listener)
            self.meter = None

    def count(self, statement: str) -> None:
        meter = self.meter
        if meter is not None and meter.running:
            meter.statements[statement] += 1

    def statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.count(statement)

    def commit(self, _conn: Any) -> None:
        self.count(COMMIT)

    def rollback(self, _conn: Any) -> None:
        self.count(ROLLBACK)


# --------------------------------------------------------------------------- the kinds


@dataclass
class Kind:
    """A request kind: ``run(calls, meter)`` makes ``calls`` timed calls, each of
    ``tasks_per_call`` tasks; ``scale`` calls fewer than ``--n`` (a batch call is worth
    many single ones)."""

    name: str
    what: str
    setup: Callable[[int], None]  # given the calls the kind will make in all, untimed
    run: Callable[[int, Meter], None]
    tasks_per_call: int = 1
    scale: int = 1

    def calls(self, requests: int) -> int:
        return max(1, -(-requests // self.scale))


@dataclass
class Agent:
    agent_id: str
    headers: dict[str, str]


@dataclass
class Bench:
    """The app, its test client, the keys of the current kind and the request kinds."""

    app: Any
    client: Any
    client_headers: dict[str, str] = field(default_factory=dict)
    fleet_headers: dict[str, str] = field(default_factory=dict)
    agent: Agent = field(init=False)  # the current kind's agent, if it has one

    # ------------------------------------------------------------------ plumbing

    def post(self, path: str, data: bytes, headers: dict[str, str]) -> Any:
        return self.client.post(path, data=data, headers=headers)

    def ok(self, path: str, body: Any, headers: dict[str, str], status: int = 200) -> Any:
        """The JSON of an answer with this status (untimed preparation); else raise."""
        response = self.post(path, encode(body), headers)
        if response.status_code != status:
            raise RuntimeError(f"POST {path} -> {response.status_code}: {response.text[:500]}")
        return response.get_json()

    def fresh_state(self) -> None:
        """Empty every table but Alembic's, flush Redis, make a client and a fleet key."""
        from sqlalchemy import text

        from app.extensions import db, redis_client
        from app.services.auth import create_api_key, key_cache

        with self.app.app_context():
            tables = [t.name for t in reversed(db.metadata.sorted_tables)]
            with db.engine.begin() as conn:
                if db.engine.dialect.name == "postgresql":
                    conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
                else:
                    for table in tables:
                        conn.execute(text(f"DELETE FROM {table}"))
            key_cache.clear()
            redis_client(self.app.config["REDIS_URL"]).flushdb()
            _, client_key = create_api_key(name="bench client", role="client", client_id=CLIENT_ID)
            _, fleet_key = create_api_key(name="bench fleet", role="agent")
            db.session.remove()
        self.client_headers = bearer(client_key)
        self.fleet_headers = bearer(fleet_key)

    def register(self, capability: str, slots: int = SLOTS) -> Agent:
        body = {
            "display_name": f"bench {capability}",
            "public_key": f"bench-{capability}",
            "capabilities": [{"name": capability, "version": "1"}],
            "max_concurrent_tasks": slots,
        }
        made = self.ok("/ains/agents", body, self.fleet_headers, status=201)
        return Agent(made["agent_id"], bearer(made["api_key"]))

    def heartbeat(self, agent: Agent) -> None:
        """Keeps the agent fresh for routing (untimed)."""
        self.ok(f"/ains/agents/{agent.agent_id}/heartbeat", heartbeat_body(), agent.headers)

    def submit_many(self, capability: str, count: int) -> list[dict[str, Any]]:
        """``count`` tasks by batches of 100; their batch answers."""
        made: list[dict[str, Any]] = []
        for first in range(0, count, BATCH):
            items = [task_body(i, capability) for i in range(first, min(first + BATCH, count))]
            answer = self.ok("/ains/tasks/batch", {"tasks": items}, self.client_headers, 201)
            if answer["failed"]:
                raise RuntimeError(f"batch submit failed: {answer['failed'][:3]}")
            made += answer["submitted"]
        return made

    def claim(self, agent: Agent, count: int) -> list[dict[str, Any]]:
        """Exactly ``count`` tasks claimed (untimed preparation)."""
        body = {"max_tasks": count, "wait_seconds": 0}
        tasks = self.ok(f"/ains/agents/{agent.agent_id}/tasks/claim", body, agent.headers)["tasks"]
        if len(tasks) != count:
            raise RuntimeError(f"claimed {len(tasks)} tasks, expected {count}")
        return tasks

    def complete_all(self, agent: Agent, tasks: list[dict[str, Any]]) -> None:
        for first in range(0, len(tasks), BATCH):
            body = batch_results(tasks[first : first + BATCH])
            answer = self.ok(f"/ains/agents/{agent.agent_id}/tasks/complete", body, agent.headers)
            refused = [r for r in answer["results"] if not r["ok"]]
            if refused:
                raise RuntimeError(f"batch completion refused: {refused[:3]}")

    def routed(self, capability: str, agent: Agent, count: int) -> list[dict[str, Any]]:
        """``count`` (at most the agent's free slots) tasks submitted and routed to it."""
        self.heartbeat(agent)
        made = self.submit_many(capability, count)
        statuses = Counter(t["status"] for t in made)
        if statuses != Counter({"ASSIGNED": count}):
            raise RuntimeError(f"tasks not routed at submit: {dict(statuses)}")
        return made

    # ------------------------------------------------------------------ kinds

    def kinds(self) -> list[Kind]:
        return [
            Kind("submit", "POST /ains/tasks, no agent (stays PENDING)", noop, self.run_submit),
            Kind(
                "submit_routed",
                "POST /ains/tasks, one idle agent with free slots (routed at submit)",
                self.setup_agent("routed"),
                self.run_submit_routed,
            ),
            Kind(
                "batch100",
                "POST /ains/tasks/batch of 100, no agent",
                noop,
                self.run_batch100,
                tasks_per_call=100,
                scale=10,
            ),
            Kind(
                "claim",
                "claim, wait_seconds 0, gets the 1 task routed to it at submit",
                self.setup_agent("claim"),
                self.run_claim,
            ),
            Kind(
                "claim_empty",
                "claim, wait_seconds 0, nothing to claim",
                self.setup_agent("empty", slots=1),
                self.run_claim_empty,
            ),
            Kind(
                "complete",
                "POST /ains/tasks/<id>/complete of a running task",
                self.setup_agent("complete"),
                self.run_complete,
            ),
            Kind(
                "complete_batch32",
                "POST /ains/agents/<id>/tasks/complete of 32 running tasks",
                self.setup_agent("complete32", slots=96),
                self.run_complete_batch32,
                tasks_per_call=32,
                scale=8,
            ),
            Kind(
                "heartbeat",
                "POST /ains/agents/<id>/heartbeat, nothing waiting",
                self.setup_agent("heartbeat", slots=1),
                self.run_heartbeat,
            ),
            Kind(
                "drain32",
                "claim 32 (routing them from the queue) + batch-complete 32; a call is both",
                self.setup_drain,
                self.run_drain32,
                tasks_per_call=32,
                scale=8,
            ),
        ]

    def setup_agent(self, name: str, slots: int = SLOTS) -> Callable[[int], None]:
        def setup(_calls: int) -> None:
            self.agent = self.register(f"bench-{name}-v1", slots)

        return setup

    def timed_posts(
        self, meter: Meter, posts: list[tuple[str, bytes, dict[str, str]]]
    ) -> list[Any]:
        """Send prepared requests with the clock running; their responses."""
        responses = []
        with meter.timed():
            for path, data, headers in posts:
                responses.append(self.post(path, data, headers))
        return responses

    def run_submit(self, calls: int, meter: Meter) -> None:
        posts = [
            ("/ains/tasks", encode(task_body(i, "bench-nobody-v1")), self.client_headers)
            for i in range(calls)
        ]
        expect(self.timed_posts(meter, posts), 201, lambda b: b["status"] == "PENDING")

    def run_submit_routed(self, calls: int, meter: Meter) -> None:
        agent = self.agent
        for first in range(0, calls, SLOTS):
            size = min(SLOTS, calls - first)
            self.heartbeat(agent)
            data = [encode(task_body(i, "bench-routed-v1")) for i in range(size)]
            posts = [("/ains/tasks", d, self.client_headers) for d in data]
            responses = self.timed_posts(meter, posts)
            expect(responses, 201, lambda b: b["status"] == "ASSIGNED")
            # Drain the agent so the next chunk finds free slots again.
            self.complete_all(agent, self.claim(agent, size))

    def run_batch100(self, calls: int, meter: Meter) -> None:
        items = [task_body(i, "bench-nobody-v1") for i in range(BATCH)]
        data = encode({"tasks": items})
        posts = [("/ains/tasks/batch", data, self.client_headers)] * calls
        expect(
            self.timed_posts(meter, posts),
            201,
            lambda b: len(b["submitted"]) == BATCH and not b["failed"],
        )

    def run_claim(self, calls: int, meter: Meter) -> None:
        agent = self.agent
        path = f"/ains/agents/{agent.agent_id}/tasks/claim"
        data = encode({"max_tasks": 1, "wait_seconds": 0})
        for first in range(0, calls, SLOTS):
            size = min(SLOTS, calls - first)
            self.routed("bench-claim-v1", agent, size)
            responses = self.timed_posts(meter, [(path, data, agent.headers)] * size)
            expect(responses, 200, lambda b: len(b["tasks"]) == 1)
            self.complete_all(agent, [r.get_json()["tasks"][0] for r in responses])

    def run_claim_empty(self, calls: int, meter: Meter) -> None:
        agent = self.agent
        path = f"/ains/agents/{agent.agent_id}/tasks/claim"
        data = encode({"max_tasks": 1, "wait_seconds": 0})
        responses = self.timed_posts(meter, [(path, data, agent.headers)] * calls)
        expect(responses, 200, lambda b: b["tasks"] == [])

    def run_complete(self, calls: int, meter: Meter) -> None:
        agent = self.agent
        for first in range(0, calls, SLOTS):
            size = min(SLOTS, calls - first)
            self.routed("bench-complete-v1", agent, size)
            posts = [
                (
                    f"/ains/tasks/{t['task_id']}/complete",
                    encode({"result_data": {"n": i, "ok": True}, "attempt": t["attempt"]}),
                    agent.headers,
                )
                for i, t in enumerate(self.claim(agent, size))
            ]
            expect(self.timed_posts(meter, posts), 200, lambda b: b["status"] == "COMPLETED")

    def run_complete_batch32(self, calls: int, meter: Meter) -> None:
        agent = self.agent
        path = f"/ains/agents/{agent.agent_id}/tasks/complete"
        per_chunk = 3  # 96 slots
        for first in range(0, calls, per_chunk):
            size = min(per_chunk, calls - first)
            self.routed("bench-complete32-v1", agent, 32 * size)
            tasks = self.claim(agent, 32 * size)
            posts = [
                (path, encode(batch_results(tasks[i : i + 32])), agent.headers)
                for i in range(0, len(tasks), 32)
            ]
            expect(
                self.timed_posts(meter, posts),
                200,
                lambda b: len(b["results"]) == 32 and all(r["ok"] for r in b["results"]),
            )

    def run_heartbeat(self, calls: int, meter: Meter) -> None:
        agent = self.agent
        path = f"/ains/agents/{agent.agent_id}/heartbeat"
        data = encode(heartbeat_body())
        responses = self.timed_posts(meter, [(path, data, agent.headers)] * calls)
        expect(responses, 200, lambda b: b["agent_status"] == "AVAILABLE")

    def setup_drain(self, calls: int) -> None:
        """Every task the kind will drain waits in the queue first (as in make bench's S2);
        the agent registers after them, so each claim routes its 32 from the queue."""
        self.submit_many("bench-drain-v1", 32 * calls)
        self.agent = self.register("bench-drain-v1", slots=32)

    def run_drain32(self, calls: int, meter: Meter) -> None:
        agent = self.agent
        claim_path = f"/ains/agents/{agent.agent_id}/tasks/claim"
        complete_path = f"/ains/agents/{agent.agent_id}/tasks/complete"
        claim_data = encode({"max_tasks": 32, "wait_seconds": 0})
        for done in range(calls):
            with meter.timed():
                claimed = self.post(claim_path, claim_data, agent.headers)
                with meter.paused():
                    [body] = expect([claimed], 200, lambda b: len(b["tasks"]) == 32)
                    data = encode(batch_results(body["tasks"]))
                    if done % 20 == 0:
                        # Fresh, so routing keeps choosing it; sent while it is full, so
                        # this heartbeat routes nothing and every claim routes its 32.
                        self.heartbeat(agent)
                completed = self.post(complete_path, data, agent.headers)
            expect([completed], 200, lambda b: all(r["ok"] for r in b["results"]))


def noop(_calls: int) -> None:
    pass


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def heartbeat_body() -> dict[str, Any]:
    """As the agents of bench/ains.py send it."""
    return {
        "timestamp": int(time.time()),
        "status": "ACTIVE",
        "uptime_ms": 60_000,
        "metrics": {"running_tasks": 0},
    }


def batch_results(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "results": [
            {
                "task_id": t["task_id"],
                "result": {"n": t["input_data"].get("n"), "ok": True},
                "attempt": t["attempt"],
            }
            for t in tasks
        ]
    }


def expect(responses: list[Any], status: int, check: Callable[[Any], bool]) -> list[Any]:
    """The JSON bodies, every one with this status and passing ``check``; else raise."""
    bodies = []
    for response in responses:
        body = response.get_json(silent=True)
        if response.status_code != status or body is None or not check(body):
            raise RuntimeError(
                f"{response.request.method} {response.request.path} -> "
                f"{response.status_code}: {response.text[:500]}"
            )
        bodies.append(body)
    return bodies


# --------------------------------------------------------------------------- running


def measure(
    bench: Bench, kind: Kind, args: argparse.Namespace, counter: StatementCounter
) -> dict[str, Any]:
    """Warm-up, the timed repeats, the cProfile run: one kind's figures."""
    calls = kind.calls(args.n)
    warmup = kind.calls(WARMUP)
    profiled = kind.calls(PROFILE_REQUESTS)
    bench.fresh_state()
    kind.setup(warmup + calls * args.repeats + profiled)
    kind.run(warmup, Meter())
    cpu: list[float] = []
    wall: list[float] = []
    statements: Counter[str] = Counter()
    for _ in range(args.repeats):
        gc.collect()
        with counter.counting(Meter()) as meter:
            kind.run(calls, meter)
        cpu.append(meter.cpu / calls)
        wall.append(meter.wall / calls)
        statements.update(meter.statements)
    # The listener is off under cProfile: its calls are not the app's.
    gc.collect()
    profiler = cProfile.Profile()
    kind.run(profiled, Meter(profiler))
    stats = pstats.Stats(profiler)
    if kind.name in args.profile:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
        print(f"\n--- cProfile of {kind.name}: {profiled} calls, top 40 by cumulative time")
        print(out.getvalue())
    per = kind.tasks_per_call
    timed_calls = calls * args.repeats
    ends = statements.pop(COMMIT, 0) + statements.pop(ROLLBACK, 0)
    sql_calls = sum(statements.values()) / timed_calls
    python_calls = stats.total_calls / profiled  # type: ignore[attr-defined]
    return {
        "kind": kind.name,
        "what": kind.what,
        "calls_per_repeat": calls,
        "repeats": args.repeats,
        "warmup_calls": warmup,
        "profiled_calls": profiled,
        "tasks_per_call": per,
        "cpu_ms_per_call": {
            "min": 1000 * min(cpu),
            "median": 1000 * statistics.median(cpu),
            "repeats": [1000 * c for c in cpu],
        },
        "wall_ms_per_call": {"min": 1000 * min(wall), "median": 1000 * statistics.median(wall)},
        "cpu_ms_per_task": {
            "min": 1000 * min(cpu) / per,
            "median": 1000 * statistics.median(cpu) / per,
        },
        "statements_per_call": sql_calls,
        "statements_per_task": sql_calls / per,
        "commits_rollbacks_per_call": ends / timed_calls,
        "python_calls_per_call": python_calls,
        "python_calls_per_task": python_calls / per,
        # In the order first sent (most_common keeps it among equal counts).
        "statements": {
            " ".join(sql.split()): count / timed_calls for sql, count in statements.most_common()
        },
    }


def build_app(args: argparse.Namespace) -> Any:
    """The app as the test suite builds it, on the bench database and Redis, with the rate
    limits counting (or off) and the API key cache of ``--key-cache-seconds``."""
    from app import create_app
    from app.config import TestConfig, normalise_database_url

    class BenchConfig(TestConfig):
        SQLALCHEMY_DATABASE_URI = normalise_database_url(args.database_url)
        REDIS_URL = args.redis_url
        RATE_LIMIT_ENABLED = not args.no_rate_limits
        RATE_LIMIT_SUBMIT = RATE_LIMIT_AGENT = RATE_LIMIT_READ = UNLIMITED
        RATE_LIMIT_WRITE = RATE_LIMIT_PER_ADDRESS = UNLIMITED
        AUTH_KEY_CACHE_SECONDS = args.key_cache_seconds

    app = create_app(BenchConfig)
    # One log line per request is part of a request's cost: formatted as in production,
    # written to /dev/null instead of the terminal.
    for handler in logging.getLogger().handlers:
        if getattr(handler, "ains", False) and isinstance(handler, logging.StreamHandler):
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 (lives as long as the run)
    return app


def reset_schema(app: Any, database_url: str) -> None:
    """A fresh schema through the migrations (as the test suite builds it)."""
    from flask_migrate import upgrade

    from app.extensions import db

    if database_url.startswith("sqlite"):
        sqlite_path(database_url).unlink(missing_ok=True)
    else:
        # psycopg wants a libpq URL: postgresql://, not SQLAlchemy's postgresql+psycopg://.
        reset_database(database_url.replace("+psycopg", "", 1))
    with app.app_context():
        upgrade()
        db.session.remove()


def loop_ms() -> float:
    """CPU ms of a fixed pure-Python loop of a million additions, best of 3: tells a slower
    (or busier) machine from a slower app when runs are compared."""
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        total = 0
        for i in range(1_000_000):
            total += i
        best = min(best, time.process_time() - start)
    return 1000 * best


def sqlite_path(url: str) -> Path:
    """The file of a sqlite:/// URL (four slashes: absolute; three: relative)."""
    return Path(url.split(":///", 1)[1] if ":///" in url else "")


def refusal(url: str, reset_any: bool) -> str | None:
    """Why this database must not be reset (None if it may)."""
    if url.startswith("sqlite:"):
        path = sqlite_path(url)
        if not path.name or ":memory:" in url:
            return "give SQLite a file: sqlite:////tmp/ains-bench.db"
        if path.exists() and "bench" not in path.name and not reset_any:
            return f"{path} exists and its name lacks 'bench': it would be deleted"
        return None
    return check_bench_database(url.replace("+psycopg", "", 1), reset_any)


def print_table(results: list[dict[str, Any]]) -> None:
    """One line per kind: per call, then per task for the kinds of many tasks a call."""
    head = ("kind", "calls", "CPU min", "CPU med", "wall med", "SQL", "tx", "py calls")
    tail = ("CPU/task", "SQL/task", "py/task")
    print("\n" + f"{head[0]:17}{head[1]:>8}" + "".join(f"{h:>10}" for h in head[2:]), end="")
    print("".join(f"{h:>10}" for h in tail))
    print(f"{'':25}{'ms':>10}{'ms':>10}{'ms':>10}")
    for r in results:
        cpu, wall = r["cpu_ms_per_call"], r["wall_ms_per_call"]
        line = (
            f"{r['kind']:17}{r['calls_per_repeat']:>5}x{r['repeats']:<2}"
            f"{cpu['min']:10.2f}{cpu['median']:10.2f}{wall['median']:10.2f}"
            f"{r['statements_per_call']:10.2f}{r['commits_rollbacks_per_call']:10.2f}"
            f"{r['python_calls_per_call']:10,.0f}"
        )
        if r["tasks_per_call"] > 1:
            line += (
                f"{r['cpu_ms_per_task']['median']:10.3f}{r['statements_per_task']:10.2f}"
                f"{r['python_calls_per_task']:10,.0f}"
            )
        print(line)


def print_statements(results: list[dict[str, Any]]) -> None:
    for r in results:
        print(f"\n--- SQL of {r['kind']}, statements per call:")
        for sql, per_call in r["statements"].items():
            print(f"  {per_call:6.2f}  {sql[:150]}")
        print(f"  {r['commits_rollbacks_per_call']:6.2f}  (commits + rollbacks)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE)
    parser.add_argument(
        "--reset-any-database",
        action="store_true",
        help="reset --database-url even if its name lacks 'bench'",
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="this DB is flushed")
    parser.add_argument("--only", default="", help="comma-separated kinds (default: all)")
    parser.add_argument("--n", type=int, default=400, help="requests per timed repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--profile", default="", help="print cProfile's top 40 for these kinds")
    parser.add_argument("--sql", action="store_true", help="print each kind's statements")
    parser.add_argument(
        "--key-cache-seconds",
        type=int,
        default=60,
        help="AUTH_KEY_CACHE_SECONDS (production: 5; 60 keeps every timed call a cache hit, "
        "as nearly all are in production; 0 reads the key on every call)",
    )
    parser.add_argument(
        "--no-rate-limits",
        action="store_true",
        help="RATE_LIMIT_ENABLED=false (by default the limits count, in Redis, as in "
        "production, with budgets no run reaches)",
    )
    args = parser.parse_args()
    if args.n < 1 or args.repeats < 1:
        parser.error("--n and --repeats must be at least 1")
    args.profile = {k for k in args.profile.split(",") if k}
    if args.database_url.startswith("postgres://"):
        args.database_url = "postgresql://" + args.database_url[len("postgres://") :]
    refused = refusal(args.database_url, args.reset_any_database)
    if refused:
        parser.error(refused)
    known = [k.name for k in Bench(app=None, client=None).kinds()]
    args.only = [k for k in args.only.split(",") if k] or known
    unknown = sorted(set(args.only) - set(known) | args.profile - set(known))
    if unknown:
        parser.error(f"unknown kinds: {', '.join(unknown)}; known: {', '.join(known)}")
    return run(args)


def run(args: argparse.Namespace) -> int:
    from app.extensions import db

    app = build_app(args)
    reset_schema(app, args.database_url)
    bench = Bench(app, app.test_client())
    kinds = {k.name: k for k in bench.kinds()}
    code = checkout(None)[1]
    loop_start = loop_ms()
    print(
        f"{code}; {without_password(args.database_url)}, {args.redis_url};"
        f" --n {args.n} --repeats {args.repeats}; load average {os.getloadavg()[0]:.2f};"
        f" reference loop {loop_start:.0f} ms"
    )
    with app.app_context():
        counter = StatementCounter(db.engine)
    results = []
    started = time.monotonic()
    for name in args.only:
        result = measure(bench, kinds[name], args, counter)
        results.append(result)
        cpu = result["cpu_ms_per_call"]
        print(
            f"{name}: {cpu['min']:.2f} / {cpu['median']:.2f} ms CPU per call,"
            f" {result['statements_per_call']:.2f} statements,"
            f" {result['python_calls_per_call']:,.0f} function calls",
            flush=True,
        )
    load = os.getloadavg()[0]
    loop_end = loop_ms()
    print_table(results)
    print(
        f"(CPU: process time per call, min and median of the {args.repeats} repeats' means,"
        f" test client included; wall: median; SQL: statements per call and tx: commits +"
        f" rollbacks, over the repeats; py calls: function calls under cProfile, a run of"
        f" {PROFILE_REQUESTS} requests (batch kinds: fewer calls);"
        f" {time.monotonic() - started:.0f} s, load average {load:.2f} and reference loop"
        f" {loop_end:.0f} ms at the end)"
    )
    if args.sql:
        print_statements(results)
    if args.json:
        document = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "code": code,
            "database": without_password(args.database_url),
            "redis": args.redis_url,
            "n": args.n,
            "repeats": args.repeats,
            "rate_limits": not args.no_rate_limits,
            "key_cache_seconds": args.key_cache_seconds,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "load_average_end": load,
            "reference_loop_ms": {"start": loop_start, "end": loop_end},
            "kinds": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
