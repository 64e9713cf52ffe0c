"""Metrics benchmark: what a GET /metrics scrape costs on a loaded database.

Seeds a fresh PostgreSQL schema with --agents agents (100, two capabilities each out of
ten) and --tasks tasks (100,000, bulk COPY; --open-percent of them open: PENDING, ASSIGNED,
ACTIVE or BLOCKED, the rest finished) and fills the Redis counters and histograms, then
times --scrapes scrapes (30) of /metrics with the gauge cache off (METRICS_CACHE_SECONDS=0,
every scrape runs its queries):

1. in process, with the Flask test client (and the two sources alone: the database gauges,
   the Redis read; and a scrape served from the gauge cache);
2. over HTTP, from a real gunicorn with two workers (multiprocess mode).

Prints p50 / p95 / max and the plan of the open-tasks query.

    .venv/bin/python bench/metrics.py --json bench/results/metrics-$(date +%F).json

It DROPS the public schema of --database-url (names without "bench" are refused) and
FLUSHES the Redis DB of --redis-url. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
import redis
import requests
from common import (  # bench/ is not a package
    ROOT,
    TMP_DIR,
    Server,
    flask_cli,
    git,
    percentile,
    reset_database,
)

CAPABILITIES = [f"bench-cap-{i}" for i in range(10)]
OPEN = ("PENDING", "ASSIGNED", "ACTIVE", "BLOCKED")
FINISHED = ("COMPLETED", "COMPLETED", "COMPLETED", "FAILED", "CANCELLED", "EXPIRED")
OPEN_TASKS_SQL = (
    "SELECT status, capability_required, priority, count(*), min(enqueued_at) FROM tasks"
    " WHERE status IN ('PENDING', 'ASSIGNED', 'ACTIVE', 'BLOCKED')"
    " GROUP BY status, capability_required, priority"
)


def stats_ms(seconds: list[float]) -> dict[str, float | int | None]:
    ms = [s * 1000 for s in seconds]

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    return {
        "n": len(ms),
        "p50_ms": rounded(statistics.median(ms) if ms else None),
        "p95_ms": rounded(percentile(ms, 95)),
        "max_ms": rounded(max(ms) if ms else None),
    }


def timed(func: Callable[[], Any], n: int) -> list[float]:
    result = []
    for _ in range(n):
        started = time.perf_counter()
        func()
        result.append(time.perf_counter() - started)
    return result


# --------------------------------------------------------------------------- seeding


def seed_database(url: str, agents: int, tasks: int, open_percent: float) -> dict[str, int]:
    """Agents, their capabilities and tasks, by COPY; then ANALYZE."""
    rng = random.Random(7)
    now = datetime.now(UTC)
    counts = {"agents": agents, "tasks": tasks, "open_tasks": 0}
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY agents (id, display_name, public_key, status, last_heartbeat, metrics,"
            " max_concurrent_tasks, active_tasks, trust_score, total_tasks_completed,"
            " total_tasks_failed, created_at, updated_at) FROM STDIN"
        ) as copy:
            for i in range(agents):
                status = "AVAILABLE" if i % 10 else "INACTIVE"
                copy.write_row(
                    (f"agent_bench_{i}", f"bench agent {i}", f"pk-{i}", status, now, "{}",
                     4, 0, round(rng.uniform(0.2, 0.95), 3), 0, 0, now, now)
                )  # fmt: skip
        with cur.copy("COPY capabilities (id, agent_id, name, created_at) FROM STDIN") as copy:
            for i in range(agents):
                for j in (i % 10, (i + 3) % 10):
                    copy.write_row((f"cap_bench_{i}_{j}", f"agent_bench_{i}", CAPABILITIES[j], now))
        columns = (
            "id, client_id, task_type, capability_required, input_data, priority, status,"
            " queue_key, enqueued_at, max_retries, retry_count, retry_policy, timeout_seconds,"
            " attempt, created_at, updated_at, retry_on_timeout, pending_dependencies,"
            " on_dependency_failure, poison"
        )
        with cur.copy(f"COPY tasks ({columns}) FROM STDIN") as copy:
            for i in range(tasks):
                is_open = rng.random() * 100 < open_percent
                status = rng.choice(OPEN) if is_open else rng.choice(FINISHED)
                counts["open_tasks"] += is_open
                created = now - timedelta(seconds=rng.uniform(0, 7 * 86400))
                priority = rng.randint(1, 10)
                key = int(created.timestamp() * 1e6) - priority * 60_000_000
                copy.write_row(
                    (f"task_bench_{i}", "bench-client", "bench", rng.choice(CAPABILITIES), "{}",
                     priority, status, key, created, 3, 0, "exponential", 300, 1, created,
                     created, False, 0, "cancel", False)
                )  # fmt: skip
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")
        conn.execute("VACUUM (ANALYZE) tasks")  # a fresh visibility map, as autovacuum keeps
    return counts


def seed_redis() -> None:
    """Counters and histogram buckets for every capability, through the app's recorder."""
    from app.services import metrics

    class Batch:  # what write_committed reads: a session's info, outside any savepoint
        info: dict[str, Any]

        def in_nested_transaction(self) -> bool:
            return False

    rng = random.Random(11)
    batch = Batch()
    batch.info = {}
    for cap in CAPABILITIES:
        for name in ("ains_tasks_created_total", "ains_tasks_completed_total",
                     "ains_tasks_failed_total", "ains_task_retries_total"):  # fmt: skip
            metrics.count(name, rng.randint(1, 10_000), cap, session=batch)  # type: ignore[arg-type]
        for _ in range(200):
            metrics.observe("ains_task_dispatch_latency_seconds", rng.expovariate(2), cap,
                            session=batch)  # type: ignore[arg-type]  # fmt: skip
            for status in ("completed", "failed", "timed_out"):
                metrics.observe("ains_task_run_seconds", rng.expovariate(0.05), cap, status,
                                session=batch)  # type: ignore[arg-type]  # fmt: skip
    metrics.count("ains_agent_heartbeats_total", 123_456, session=batch)  # type: ignore[arg-type]
    metrics.write_committed(batch)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- measuring


def in_process(scrapes: int, url: str) -> dict[str, Any]:
    from app import create_app
    from app.api.metrics import EXTENSION, database_gauges, redis_families
    from app.extensions import db
    from app.lib.clock import utcnow

    app = create_app()
    client = app.test_client()
    for path in ("/health", "/ains/tasks", "/openapi.json", "/nope") * 5:
        client.get(path)  # some HTTP series
    first = client.get("/metrics")
    assert first.status_code == 200, first.data[:300]
    text = first.get_data(as_text=True)
    assert 'ains_metrics_source_up{source="database"} 1.0' in text, text[:2000]
    assert 'ains_metrics_source_up{source="redis"} 1.0' in text, text[:2000]

    def scrape() -> None:
        assert client.get("/metrics").status_code == 200

    domain = app.extensions[EXTENSION].domain
    with app.app_context():
        gauges = timed(lambda: database_gauges(utcnow()), scrapes)
        from_redis = timed(lambda: redis_families(domain.queue_names), scrapes)
        db.session.remove()
    uncached = timed(scrape, scrapes)
    baseline = timed(lambda: client.get("/health"), scrapes)  # a request's own cost
    domain.cache_seconds = 3600
    scrape()
    cached = timed(scrape, scrapes)
    with psycopg.connect(url) as conn:
        plan = [r[0] for r in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + OPEN_TASKS_SQL)]
    return {
        "scrape_uncached": stats_ms(uncached),
        "scrape_gauges_cached": stats_ms(cached),
        "health_baseline": stats_ms(baseline),
        "database_gauges_alone": stats_ms(gauges),
        "redis_read_alone": stats_ms(from_redis),
        "body_bytes": len(text),
        "samples": sum(1 for line in text.splitlines() if line and not line.startswith("#")),
        "open_tasks_plan": plan,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def over_gunicorn(scrapes: int, env: dict[str, str]) -> dict[str, Any]:
    port = free_port()
    server_env = {
        **env,
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "WEB_THREADS": "8",
        "METRICS_CACHE_SECONDS": "0",
    }
    server_env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # gunicorn.conf.py makes its own
    TMP_DIR.mkdir(parents=True, exist_ok=True)
    server = Server(ROOT, server_env, TMP_DIR / "metrics-gunicorn.log")
    url = f"http://127.0.0.1:{port}"
    try:
        server.wait_healthy(url, timeout=60)
        with requests.Session() as http:
            for path in ("/health", "/ains/tasks", "/openapi.json", "/nope") * 10:
                http.get(url + path, timeout=10)
            for _ in range(3):
                assert http.get(f"{url}/metrics", timeout=10).status_code == 200

            def scrape() -> None:
                assert http.get(f"{url}/metrics", timeout=10).status_code == 200

            times = timed(scrape, scrapes)
            text = http.get(f"{url}/metrics", timeout=10).text
        health = [
            line for line in text.splitlines()
            if line.startswith("flask_http_request_duration_seconds_count")
            and 'endpoint="api.health"' in line
        ]  # fmt: skip
        return {"scrape_uncached": stats_ms(times), "health_count_lines": health}
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", default="postgresql://postgres@127.0.0.1:5432/ains_bench_metrics"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--open-percent", type=float, default=20.0)
    parser.add_argument("--scrapes", type=int, default=30)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if "bench" not in args.database_url.rsplit("/", 1)[-1]:
        print("refusing: the database name must contain 'bench' (its schema is dropped)")
        return 2

    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        "METRICS_CACHE_SECONDS": "0",
        "AINS_INSTANCE_DIR": tempfile.mkdtemp(prefix="ains-bench-metrics-"),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    os.environ.update(env)  # before the app is imported: app.config reads it then
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    sys.path.insert(0, str(ROOT))

    reset_database(args.database_url)
    redis.Redis.from_url(args.redis_url).flushdb()
    flask_cli(ROOT, env, "db", "upgrade")
    started = time.perf_counter()
    counts = seed_database(args.database_url, args.agents, args.tasks, args.open_percent)
    seeded_s = time.perf_counter() - started
    seed_redis()
    print(
        f"seeded {counts['agents']} agents, {counts['tasks']} tasks "
        f"({counts['open_tasks']} open) in {seeded_s:.1f}s"
    )
    load_before = os.getloadavg()[0]
    local = in_process(args.scrapes, args.database_url)
    remote = over_gunicorn(args.scrapes, env)
    load = [round(load_before, 1), round(os.getloadavg()[0], 1)]

    print(
        f"GET /metrics, PostgreSQL, {os.cpu_count()} CPUs ({platform.machine()}), "
        f"load average {load[0]} -> {load[1]}"
    )
    rows = [
        ("in process, scrape (no gauge cache)", local["scrape_uncached"]),
        ("in process, scrape (gauges cached)", local["scrape_gauges_cached"]),
        ("in process, database gauges alone", local["database_gauges_alone"]),
        ("in process, Redis read alone", local["redis_read_alone"]),
        ("in process, GET /health (for scale)", local["health_baseline"]),
        ("gunicorn 2 workers, scrape (no cache)", remote["scrape_uncached"]),
    ]
    for label, s in rows:
        print(
            f"  {label:<40} p50 {s['p50_ms']:>7} ms  p95 {s['p95_ms']:>7} ms  max {s['max_ms']} ms"
        )
    print(f"  body {local['body_bytes']} bytes, {local['samples']} samples")
    print("  open-tasks query plan:")
    for line in local["open_tasks_plan"]:
        print(f"    {line}")
    if args.json:
        try:
            commit = git("rev-parse", "--short", "HEAD")
        except Exception:
            commit = None
        args.json.write_text(
            json.dumps(
                {
                    "commit": commit,
                    "served": "working tree",
                    "cpus": os.cpu_count(),
                    "load_average_1m": load,
                    "seed": {**counts, "seconds": round(seeded_s, 1)},
                    "scrapes": args.scrapes,
                    "in_process": local,
                    "gunicorn": remote,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
