"""Console benchmark: how long every console page takes on a database of 1,000,000 tasks.

Seeds PostgreSQL in SQL (generate_series, no ORM row by row): --tasks tasks (1,000,000)
spread over --days days (30) with a realistic mix (10 capabilities, 20 clients, 200 agents,
mostly ended tasks plus a few thousand open ones), their events, attempts and trust
records (one per ended task, as the server writes them), and some schedules, templates,
chains, webhooks, deliveries and audit rows. The schema comes from the app's own
migrations (``flask db upgrade``), so the real indexes are measured.
Then, signed in as an admin through Flask's test client in this process's child, it requests
every console list page and its htmx fragment --requests times (20) after --warmup (3)
unmeasured requests and reports the server time (median, p95, max) and the SQL statements
each request ran. A few pages are also timed through a real gunicorn (its access log's
time taken).

    .venv/bin/python bench/console.py --json bench/results/console-$(date +%F).json
    .venv/bin/python bench/console.py --reuse          # measure again, same data

It DROPS the public schema of --database-url (names without "bench" are refused unless
--reset-any-database) and flushes the Redis DB of --redis-url.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
import requests
from common import (
    ACCESS_FORMAT,
    TMP_DIR,
    checkout,
    flask_cli,
    free_port,
    git,
    percentile,
    reset_database,
    stop_group,
    without_password,
)

ADMIN_EMAIL = "admin@bench.example"
ADMIN_PASSWORD = "bench admin password"
BUDGET_MS = 200.0
CAPABILITIES = 10
CLIENTS = 20
AGENTS = 200
OPEN_TASKS = {"PENDING": 3000, "ASSIGNED": 1000, "ACTIVE": 2500, "BLOCKED": 1500}

# --------------------------------------------------------------------------- seeding

# Indexes other than primary keys and unique constraints are dropped before the load and
# rebuilt from their own definitions afterwards: the same indexes, built once.
SECONDARY_INDEXES = """
SELECT i.indexname, i.indexdef FROM pg_indexes i
WHERE i.schemaname = 'public'
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)
"""

SEED_SQL = """
SET session_replication_role = replica;  -- no FK triggers while loading
SET synchronous_commit = off;
SELECT setseed(0.42);

INSERT INTO users (email, password_hash, role, active, created_at, session_version)
SELECT 'operator' || u || '@bench.example', 'x', (ARRAY['admin','operator','viewer'])[1 + u %% 3],
       true, %(now)s - interval '90 days', 0
FROM generate_series(1, 9) u;

INSERT INTO api_keys (id, name, prefix, key_hash, role, client_id, created_at, last_used_at,
                      created_by)
SELECT 'key_' || md5('key' || k), 'bench key ' || k, 'bk' || lpad(k::text, 6, '0'),
       md5('secret' || k), CASE WHEN k <= 20 THEN 'client' WHEN k <= 45 THEN 'agent'
       ELSE 'admin' END,
       CASE WHEN k <= 20 THEN 'client-' || lpad((k - 1)::text, 2, '0') END,
       %(now)s - k * interval '1 day', %(now)s - k * interval '1 minute', 'bench'
FROM generate_series(1, 50) k;

INSERT INTO agents (id, display_name, public_key, status, health_status, last_heartbeat,
                    uptime_ms, metrics, max_concurrent_tasks, active_tasks, trust_score,
                    total_tasks_completed, total_tasks_failed, registered_by_key_id,
                    created_at, updated_at)
SELECT 'agent_' || md5('agent' || a), 'bench-agent-' || a, 'bench-public-key-' || a,
       CASE WHEN a %% 10 < 6 THEN 'AVAILABLE' WHEN a %% 10 < 8 THEN 'BUSY' ELSE 'INACTIVE' END,
       'ACTIVE',
       CASE WHEN a %% 10 < 8 THEN %(now)s - interval '5 seconds'
            ELSE %(now)s - interval '2 days' END,
       3600000, '{}'::jsonb, 20, 0, 0.25 + (a %% 70) / 100.0, 0, 0,
       'key_' || md5('key' || (21 + a %% 25)), %(now)s - interval '60 days', %(now)s
FROM generate_series(1, %(agents)s) a;

INSERT INTO capabilities (id, agent_id, name, version, created_at)
SELECT DISTINCT ON (a, c) 'cap_' || md5(a || '-' || c), 'agent_' || md5('agent' || a),
       'cap-' || c, '1.0', %(now)s - interval '60 days'
FROM generate_series(1, %(agents)s) a,
     LATERAL (VALUES (a %% %(caps)s), ((a * 3 + 1) %% %(caps)s), ((a * 7 + 2) %% %(caps)s)) v(c);

INSERT INTO tasks (id, client_id, task_type, capability_required, input_data, priority, status,
                   queue_key, enqueued_at, max_retries, retry_count, retry_policy,
                   timeout_seconds, retry_on_timeout, assigned_agent_id, assigned_at, attempt,
                   lease_expires_at, timeout_at, result_data, error_message, created_by,
                   created_at, updated_at, claimed_at, completed_at, cancelled_at, cancelled_by,
                   cancellation_reason, pending_dependencies, on_dependency_failure, poison)
SELECT 'task_' || md5('task' || i), client, 'bench.' || cap, cap, jsonb_build_object('n', i),
       priority, status,
       (extract(epoch FROM created) * 1000000)::bigint - priority * 60000000::bigint, created,
       3, CASE WHEN status = 'FAILED' THEN 3 ELSE 0 END, 'exponential', 300, false,
       agent, CASE WHEN agent IS NOT NULL THEN claimed END,
       CASE WHEN status IN ('ACTIVE', 'COMPLETED', 'FAILED') THEN 1 ELSE 0 END,
       CASE WHEN status = 'ACTIVE' THEN claimed + interval '60 seconds' END,
       CASE WHEN status = 'ACTIVE' THEN claimed + interval '300 seconds' END,
       CASE WHEN status = 'COMPLETED' THEN jsonb_build_object('ok', true) END,
       CASE WHEN status = 'FAILED' THEN 'bench failure ' || (i %% 7) END,
       'client:' || client, created, coalesce(ended, claimed, created),
       CASE WHEN status IN ('ACTIVE', 'COMPLETED', 'FAILED') THEN claimed END,
       CASE WHEN status IN ('COMPLETED', 'FAILED', 'EXPIRED') THEN ended END,
       CASE WHEN status = 'CANCELLED' THEN ended END,
       CASE WHEN status = 'CANCELLED' THEN 'client:' || client END,
       CASE WHEN status = 'CANCELLED' THEN 'no longer needed' END,
       CASE WHEN status = 'BLOCKED' THEN 1 ELSE 0 END, 'cancel', false
FROM (
    SELECT i, status, priority, client, cap, created,
           CASE WHEN status IN ('ASSIGNED', 'ACTIVE', 'COMPLETED', 'FAILED')
                THEN 'agent_' || md5('agent' || (1 + (r_agent * %(agents)s)::int %% %(agents)s))
           END AS agent,
           CASE WHEN status IN ('ASSIGNED', 'ACTIVE', 'COMPLETED', 'FAILED')
                THEN least(created + wait, %(now)s) END AS claimed,
           CASE WHEN status IN ('COMPLETED', 'FAILED', 'CANCELLED', 'EXPIRED')
                THEN least(created + wait + run, %(now)s) END AS ended
    FROM (
        SELECT i,
               CASE WHEN i <= %(pending)s THEN 'PENDING'
                    WHEN i <= %(assigned)s THEN 'ASSIGNED'
                    WHEN i <= %(active)s THEN 'ACTIVE'
                    WHEN i <= %(blocked)s THEN 'BLOCKED'
                    WHEN r_status < 0.85 THEN 'COMPLETED'
                    WHEN r_status < 0.92 THEN 'FAILED'
                    WHEN r_status < 0.99 THEN 'CANCELLED'
                    ELSE 'EXPIRED' END AS status,
               1 + (r_priority * 10)::int %% 10 AS priority,
               'client-' || lpad(((r_client ^ 2) * %(clients)s)::int %% %(clients)s || '', 2, '0')
                   AS client,
               'cap-' || ((r_cap ^ 1.5) * %(caps)s)::int %% %(caps)s AS cap,
               CASE WHEN i <= %(blocked)s THEN %(now)s - r_age * interval '6 hours'
                    ELSE %(now)s - r_age * %(days)s * interval '1 day' END AS created,
               interval '1 second' * (0.2 + 20 * r_wait) AS wait,
               interval '1 second' * (2 + 120 * r_run) AS run,
               r_agent
        FROM (
            SELECT i, random() AS r_status, random() AS r_priority, random() AS r_client,
                   random() AS r_cap, random() AS r_age, random() AS r_wait, random() AS r_run,
                   random() AS r_agent
            FROM generate_series(1, %(tasks)s) i
        ) r
    ) s
) t;

-- Events: created, then claimed (or assigned), then the end: about 2.9 per task.
INSERT INTO task_events (task_id, at, from_status, to_status, actor)
SELECT id, created_at, NULL, CASE WHEN status = 'BLOCKED' THEN 'BLOCKED' ELSE 'PENDING' END,
       created_by
FROM tasks;
INSERT INTO task_events (task_id, at, from_status, to_status, actor)
SELECT id, assigned_at, 'PENDING', CASE WHEN status = 'ASSIGNED' THEN 'ASSIGNED' ELSE 'ACTIVE' END,
       CASE WHEN status = 'ASSIGNED' THEN 'routing' ELSE 'agent:' || assigned_agent_id END
FROM tasks WHERE assigned_at IS NOT NULL;
INSERT INTO task_events (task_id, at, from_status, to_status, actor, reason)
SELECT id, coalesce(completed_at, cancelled_at),
       CASE WHEN status IN ('COMPLETED', 'FAILED') THEN 'ACTIVE' ELSE 'PENDING' END, status,
       CASE WHEN status = 'CANCELLED' THEN cancelled_by WHEN status = 'EXPIRED' THEN 'system'
            ELSE 'agent:' || assigned_agent_id END,
       CASE WHEN status = 'FAILED' THEN error_message END
FROM tasks WHERE status IN ('COMPLETED', 'FAILED', 'CANCELLED', 'EXPIRED');

INSERT INTO task_attempts (task_id, number, agent_id, started_at, ended_at, outcome, error,
                           ended_by)
SELECT id, 1, assigned_agent_id, claimed_at, completed_at,
       CASE status WHEN 'COMPLETED' THEN 'completed' WHEN 'FAILED' THEN 'failed'
                   ELSE 'running' END,
       error_message, CASE WHEN completed_at IS NOT NULL THEN 'agent:' || assigned_agent_id END
FROM tasks WHERE claimed_at IS NOT NULL;

UPDATE agents a SET total_tasks_completed = s.completed, total_tasks_failed = s.failed,
       active_tasks = s.active, avg_completion_time_seconds = 60,
       last_task_completed_at = s.last_done
FROM (
    SELECT assigned_agent_id, count(*) FILTER (WHERE status = 'COMPLETED') AS completed,
           count(*) FILTER (WHERE status = 'FAILED') AS failed,
           count(*) FILTER (WHERE status = 'ACTIVE') AS active,
           max(completed_at) AS last_done
    FROM tasks WHERE assigned_agent_id IS NOT NULL GROUP BY assigned_agent_id
) s
WHERE a.id = s.assigned_agent_id;
UPDATE agents SET max_concurrent_tasks = greatest(max_concurrent_tasks, active_tasks);

INSERT INTO trust_records (agent_id, event_type, task_id, trust_delta, trust_score_before,
                           trust_score_after, reason, actor, created_at)
SELECT assigned_agent_id, CASE status WHEN 'COMPLETED' THEN 'task_completed'
       ELSE 'task_failed' END, id, CASE status WHEN 'COMPLETED' THEN 0.01 ELSE -0.05 END,
       0.5, 0.5, NULL, 'system', completed_at
FROM tasks WHERE status IN ('COMPLETED', 'FAILED');

INSERT INTO task_templates (id, client_id, name, description, task_type, capability_required,
                            default_input_data, default_priority, default_max_retries,
                            default_retry_policy, default_timeout_seconds, version, times_used,
                            created_by, created_at, updated_at)
SELECT 'tpl_' || md5('tpl' || t), 'client-' || lpad((t %% %(clients)s)::text, 2, '0'),
       'template ' || t, 'bench template', 'bench.cap-' || t %% %(caps)s,
       'cap-' || t %% %(caps)s, '{}'::jsonb, 5, 3, 'exponential', 300, 1, t * 10, 'bench',
       %(now)s - t * interval '1 day', %(now)s
FROM generate_series(1, 40) t;

INSERT INTO schedules (id, client_id, description, cron_expression, timezone, task_type,
                       capability_required, input_data, priority, max_retries, retry_policy,
                       timeout_seconds, retry_on_timeout, misfire_policy, overlap_policy, status,
                       next_run_at, last_run_at, created_by, created_at, updated_at)
SELECT 'sch_' || md5('sch' || s), 'client-' || lpad((s %% %(clients)s)::text, 2, '0'),
       'schedule ' || s, '*/5 * * * *', 'UTC', 'bench.cap-' || s %% %(caps)s,
       'cap-' || s %% %(caps)s, '{}'::jsonb, 5, 3, 'exponential', 300, false, 'fire_once',
       'allow', CASE WHEN s %% 10 = 0 THEN 'PAUSED' ELSE 'ACTIVE' END,
       %(now)s + interval '5 minutes', %(now)s - interval '5 minutes', 'bench',
       %(now)s - s * interval '1 day', %(now)s
FROM generate_series(1, 60) s;

INSERT INTO schedule_executions (id, schedule_id, scheduled_for, fired_at, trigger, task_id)
SELECT 'exe_' || md5(s || '-' || e), 'sch_' || md5('sch' || s),
       %(now)s - e * interval '5 minutes', %(now)s - e * interval '5 minutes', 'schedule',
       'task_' || md5('task' || (10000 + s * 300 + e))
FROM generate_series(1, 60) s, generate_series(1, 288) e;

-- A run's task is created by its schedule, as services/principal.schedule_runner writes it.
UPDATE tasks t SET created_by = 'schedule:' || x.schedule_id
FROM schedule_executions x WHERE x.task_id = t.id;

INSERT INTO task_chains (id, client_id, name, status, current_step, steps, step_results,
                         created_by, created_at, updated_at, started_at, completed_at)
SELECT 'chn_' || md5('chn' || c), 'client-' || lpad((c %% %(clients)s)::text, 2, '0'),
       'chain ' || c, CASE WHEN c %% 20 = 0 THEN 'RUNNING' ELSE 'COMPLETED' END, 3,
       '[{"name": "a"}, {"name": "b"}, {"name": "c"}]'::jsonb, '[]'::jsonb, 'bench',
       %(now)s - c * interval '1 hour', %(now)s, %(now)s - c * interval '1 hour',
       CASE WHEN c %% 20 <> 0 THEN %(now)s - c * interval '1 hour' + interval '5 minutes' END
FROM generate_series(1, 2000) c;

INSERT INTO webhooks (id, agent_id, client_id, url, events, description, secret_sealed,
                      secret_hint, active, consecutive_failures, last_success_at, created_by,
                      created_at, updated_at)
SELECT 'whk_' || md5('whk' || w), NULL, 'client-' || lpad((w %% %(clients)s)::text, 2, '0'),
       'https://hooks.bench.example/' || w, '["task.completed", "task.failed"]'::jsonb,
       'webhook ' || w, 'sealed', 'abcd', w %% 7 <> 0, 0, %(now)s, 'bench',
       %(now)s - w * interval '1 day', %(now)s
FROM generate_series(1, 30) w;

INSERT INTO webhook_events (id, event, task_id, body, created_at)
SELECT 'wev_' || md5('wev' || e), 'task.completed', 'task_' || md5('task' || (10000 + e)),
       '{}', %(now)s - e * interval '10 seconds'
FROM generate_series(1, 30000) e;

INSERT INTO webhook_deliveries (id, webhook_id, event_id, event, status, attempts, max_attempts,
                                next_attempt_at, last_status_code, last_duration_ms,
                                created_at, updated_at, delivered_at)
SELECT 'wdl_' || md5('wdl' || e), 'whk_' || md5('whk' || (1 + e %% 30)),
       'wev_' || md5('wev' || e), 'task.completed',
       CASE WHEN e %% 50 = 0 THEN 'FAILED' ELSE 'DELIVERED' END, 1, 3,
       %(now)s - e * interval '10 seconds', 200, 40, %(now)s - e * interval '10 seconds',
       %(now)s - e * interval '10 seconds', %(now)s - e * interval '10 seconds'
FROM generate_series(1, 30000) e;

INSERT INTO webhook_attempts (delivery_id, number, started_at, duration_ms, status_code, outcome)
SELECT 'wdl_' || md5('wdl' || e), 1, %(now)s - e * interval '10 seconds', 40, 200, 'delivered'
FROM generate_series(1, 30000) e;

INSERT INTO audit_events (created_at, actor, actor_role, key_id, action, target_type, target_id,
                          status_code, outcome, summary, address, method, path)
SELECT %(now)s - e * interval '13 seconds',
       CASE WHEN e %% 3 = 0 THEN 'operator:admin@bench.example'
            ELSE 'client:client-' || lpad((e %% %(clients)s)::text, 2, '0') END,
       CASE WHEN e %% 3 = 0 THEN 'admin' ELSE 'client' END, NULL,
       (ARRAY['task.cancel','task.requeue','schedule.update','webhook.create','key.create'])
           [1 + e %% 5],
       'task', 'task_' || md5('task' || e), 200,
       CASE WHEN e %% 40 = 0 THEN 'denied' ELSE 'ok' END, '{}'::jsonb, '10.0.0.' || e %% 250,
       'POST', '/ains/tasks/x'
FROM generate_series(1, 200000) e;

SET session_replication_role = origin;
"""


def seed(database_url: str, tasks: int, days: int, now: datetime) -> dict[str, float]:
    """Load the data set into a freshly migrated schema; seconds per phase."""
    timings: dict[str, float] = {}
    open_total = sum(OPEN_TASKS.values())
    if tasks < open_total + 1000:
        raise SystemExit(f"--tasks must be at least {open_total + 1000}")
    bounds, running = {}, 0
    for status, count in OPEN_TASKS.items():
        running += count
        bounds[status.lower()] = running
    params = {
        "now": now,
        "tasks": tasks,
        "days": days,
        "agents": AGENTS,
        "caps": CAPABILITIES,
        "clients": CLIENTS,
        **bounds,
    }
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '512MB'")
        indexes = conn.execute(SECONDARY_INDEXES).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        started = time.perf_counter()
        with conn.transaction():
            for statement in split_sql(SEED_SQL):
                step = time.perf_counter()
                conn.execute(statement, params)
                label = " ".join(statement.split()[:3])
                timings[label] = timings.get(label, 0.0) + time.perf_counter() - step
        timings["load"] = time.perf_counter() - started
        step = time.perf_counter()
        for _, definition in indexes:
            conn.execute(definition)
        timings["indexes"] = time.perf_counter() - step
        step = time.perf_counter()
        conn.execute("VACUUM (ANALYZE)")
        timings["vacuum analyze"] = time.perf_counter() - step
    return {k: round(v, 1) for k, v in timings.items()}


def migrate(app_dir: Path, env: dict[str, str]) -> None:
    """``flask db upgrade``, given the time new indexes on a million rows take."""
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(f"flask db upgrade failed:\n{result.stderr[-3000:]}")


def split_sql(script: str) -> list[str]:
    """Statements of ``script`` (no semicolons inside literals here), comments dropped."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


# --------------------------------------------------------------------------- measuring


def pages(sample: dict[str, str]) -> list[tuple[str, str]]:
    """(label, path) of every console page measured; ``sample`` holds ids from the data."""
    days_ago = sample["week_ago"]
    return [
        ("dashboard", "/"),
        ("tasks", "/tasks"),
        ("tasks status=PENDING", "/tasks?status=PENDING"),
        ("tasks status=FAILED", "/tasks?status=FAILED"),
        ("tasks client", f"/tasks?client={sample['client']}"),
        ("tasks capability", f"/tasks?capability={sample['capability']}"),
        ("tasks agent", f"/tasks?agent={sample['agent']}"),
        ("tasks priority=10", "/tasks?priority=10"),
        ("tasks time range", f"/tasks?created_from={days_ago}&created_before={sample['day_ago']}"),
        ("tasks rare mix", "/tasks?status=EXPIRED&capability=cap-9&priority=1"),
        ("tasks 20 pages in", "/tasks?cursor={deep_cursor}"),
        ("tasks q=id", f"/tasks?q={sample['task'][5:17]}"),
        ("tasks q=text", "/tasks?q=bench%20failure%203"),
        ("task detail", f"/tasks/{sample['task']}"),
        ("dead letter", "/dead-letter"),
        ("dead letter client", f"/dead-letter?client={sample['client']}"),
        ("agents", "/agents"),
        ("agent detail", f"/agents/{sample['agent']}"),
        ("leaderboard", "/agents/leaderboard"),
        ("schedules", "/schedules"),
        ("schedule detail", f"/schedules/{sample['schedule']}"),
        ("templates", "/task-templates"),
        ("chains", "/chains"),
        ("webhooks", "/webhooks"),
        ("webhook detail", f"/webhooks/{sample['webhook']}"),
        ("api keys", "/api-keys"),
        ("users", "/users"),
        ("audit", "/audit"),
        ("audit actor", "/audit?actor=operator:admin@bench.example"),
        ("routing", "/routing"),
        ("routing preview", f"/routing?capability={sample['capability']}"),
    ]


GUNICORN_PAGES = (
    "dashboard",
    "tasks",
    "tasks status=FAILED",
    "task detail",
    "dead letter",
    "agents",
    "audit",
)


def sample_ids(database_url: str) -> dict[str, str]:
    with psycopg.connect(database_url) as conn:

        def one(sql: str) -> str:
            row = conn.execute(sql).fetchone()
            return str(row[0]) if row else ""

        return {
            "task": one(
                "SELECT id FROM tasks WHERE status = 'FAILED' ORDER BY created_at DESC"
                " OFFSET 500 LIMIT 1"
            ),
            "agent": one("SELECT id FROM agents ORDER BY display_name LIMIT 1"),
            "client": "client-03",
            "capability": "cap-4",
            "schedule": one("SELECT id FROM schedules ORDER BY created_at LIMIT 1"),
            "webhook": one("SELECT id FROM webhooks ORDER BY created_at LIMIT 1"),
            "week_ago": one("SELECT to_char(now() - interval '7 days', 'YYYY-MM-DD\"T\"HH24:MI')"),
            "day_ago": one("SELECT to_char(now() - interval '6 days', 'YYYY-MM-DD\"T\"HH24:MI')"),
        }


def summary(ms: list[float]) -> dict[str, float | None]:
    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    return {
        "median_ms": rounded(percentile(ms, 50)),
        "p95_ms": rounded(percentile(ms, 95)),
        "max_ms": rounded(max(ms) if ms else None),
    }


def measure_in_process(
    app_dir: Path, sample: dict[str, str], requests_per_page: int, warmup: int
) -> list[dict[str, Any]]:
    """Runs in the child (cwd = the app's directory): the test client, in this process."""
    sys.path.insert(0, str(app_dir))
    from sqlalchemy import event

    from app import create_app
    from app.extensions import db

    app = create_app()
    statements: list[tuple[float, str]] = []

    with app.app_context():
        engine = db.engine

        @event.listens_for(engine, "before_cursor_execute")
        def before(conn: Any, *_: Any) -> None:
            conn.info.setdefault("bench_started", []).append(time.perf_counter())

        @event.listens_for(engine, "after_cursor_execute")
        def after(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            took = time.perf_counter() - conn.info["bench_started"].pop()
            statements.append((took, statement))

    client = app.test_client()
    page = client.get("/login")
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.get_data(as_text=True))
    assert token, "no CSRF token on /login"
    signed = client.post(
        "/login",
        data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": token.group(1)},
    )
    assert signed.status_code == 302, f"sign-in failed: {signed.status_code}"
    deep = "/tasks"
    for _ in range(20):  # follow "older" links 20 pages in
        html = client.get(deep).get_data(as_text=True)
        found = re.search(r'href="(/tasks\?[^"]*cursor=[^"]+)"', html)
        if not found:
            break
        deep = found.group(1).replace("&amp;", "&")
    results = []
    for label, path in pages(sample):
        path = path.replace("/tasks?cursor={deep_cursor}", deep)
        for fragment in (False, True):
            headers = {"HX-Request": "true"} if fragment else {}
            status = 0
            times, queries, db_ms, cpu_ms = [], [], [], []
            by_statement: dict[str, list[float]] = {}
            for n in range(warmup + requests_per_page):
                statements.clear()
                started, cpu_started = time.perf_counter(), time.process_time()
                response = client.get(path, headers=headers)
                elapsed = (time.perf_counter() - started) * 1000
                cpu = (time.process_time() - cpu_started) * 1000
                status = response.status_code
                if n >= warmup:
                    times.append(elapsed)
                    cpu_ms.append(cpu)
                    queries.append(len(statements))
                    db_ms.append(sum(took for took, _ in statements) * 1000)
                    for took, statement in statements:
                        by_statement.setdefault(statement, []).append(took * 1000)
            slowest = max(by_statement.items(), key=lambda kv: sum(kv[1]), default=("", []))
            results.append(
                {
                    "page": label + (" (fragment)" if fragment else ""),
                    "path": path,
                    "status": status,
                    **summary(times),
                    "sql_statements": max(queries) if queries else None,
                    "sql_median_ms": summary(db_ms)["median_ms"],
                    "python_cpu_median_ms": summary(cpu_ms)["median_ms"],
                    "slowest_sql_median_ms": summary(slowest[1])["median_ms"],
                    "slowest_sql": " ".join(slowest[0].split())[:400],
                }
            )
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    return results


def measure_gunicorn(
    app_dir: Path, env: dict[str, str], rows: list[dict[str, Any]], count: int
) -> list[dict[str, Any]]:
    """A few pages through gunicorn: server time from its access log, and the round trip."""
    TMP_DIR.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = TMP_DIR / f"console-gunicorn-{time.strftime('%Y%m%d-%H%M%S')}.log"
    env = {**env, "PORT": str(port), "WEB_CONCURRENCY": "1", "WEB_THREADS": "4"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--config",
                "gunicorn.conf.py",
                "--access-logformat",
                ACCESS_FORMAT,
                "wsgi:app",
            ],
            cwd=app_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    results = []
    try:
        session = requests.Session()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if session.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        page = session.get(f"{base}/login", timeout=30).text
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
        assert token, "no CSRF token on /login"
        session.post(
            f"{base}/login",
            data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": token.group(1)},
            allow_redirects=False,
            timeout=30,
        )
        by_label = {row["page"]: row["path"] for row in rows}
        for label in GUNICORN_PAGES:
            path = by_label[label]
            round_trips = []
            for n in range(3 + count):
                started = time.perf_counter()
                response = session.get(f"{base}{path}", timeout=60)
                if n >= 3:
                    round_trips.append((time.perf_counter() - started) * 1000)
            results.append(
                {
                    "page": label,
                    "path": path,
                    "status": response.status_code,
                    "round_trip": summary(round_trips),
                }
            )
    finally:
        stop_group(proc, 10)
    # Each request's time in the server: the app's request log (JSON lines, logger
    # ains.request) when it has one, else gunicorn's access log (ACCESS_FORMAT, whole ms).
    # After the sign-in, requests come in the order they were sent.
    app_log, access_log = [], []
    access = re.compile(
        r'"(?P<method>[A-Z]+) (?P<path>[^ ?"]+)\S* HTTP/[\d.]+" \d{3} \S+ (?P<ms>\d+)ms'
    )
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("logger") == "ains.request":
                    app_log.append((entry["method"], entry["path"], entry["duration_ms"]))
        elif match := access.search(line):
            access_log.append((match["method"], match["path"], int(match["ms"])))
    logged = app_log or access_log
    after_login = next(
        (i + 1 for i, (m, p, _) in enumerate(logged) if m == "POST" and p == "/login"), 0
    )
    logged = [e for e in logged[after_login:] if e[0] == "GET"]
    per_page = 3 + count
    for n, row in enumerate(results):
        chunk = logged[n * per_page : (n + 1) * per_page][3:]
        path = row["path"].split("?")[0]
        assert all(p == path for _, p, _ in chunk), f"request log out of step at {path}"
        row["server"] = summary([float(ms) for _, _, ms in chunk])
    return results


# --------------------------------------------------------------------------- main


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'page':<36}{'status':>7}{'median':>9}{'p95':>9}{'max':>9}{'SQL':>5}{'SQL ms':>8}"
        f"{'CPU ms':>8}"
    )
    for row in rows:
        slow = "  SLOW" if (row["p95_ms"] or 0) > BUDGET_MS else ""
        print(
            f"{row['page']:<36}{row['status']:>7}{row['median_ms']:>9}{row['p95_ms']:>9}"
            f"{row['max_ms']:>9}{row['sql_statements']:>5}{row['sql_median_ms']:>8}"
            f"{row.get('python_cpu_median_ms', '')!s:>8}{slow}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", default="postgresql://postgres@127.0.0.1:5432/ains_bench_console"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--ref", help="serve a git archive of this revision, not the tree")
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--requests", type=int, default=20, help="measured requests per page")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--gunicorn-requests", type=int, default=10)
    parser.add_argument(
        "--reuse", action="store_true", help="keep the seeded data; only `db upgrade` and measure"
    )
    parser.add_argument("--reset-any-database", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if "bench" not in args.database_url.rsplit("/", 1)[-1] and not args.reset_any_database:
        print("refusing: the database name must contain 'bench' (its schema is dropped)")
        return 2
    app_dir, app_label = checkout(args.ref)
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        "SECRET_KEY": "bench-secret-key",
        "PYTHONUNBUFFERED": "1",
    }
    result: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "environment": {
            "cpu_count": os.cpu_count(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            "platform": f"{platform.platform()}, Python {platform.python_version()}",
            "database": without_password(args.database_url),
            "app": app_label,
            "started_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        },
    }
    import redis

    redis.Redis.from_url(args.redis_url).flushdb()
    if args.reuse:
        migrate(app_dir, env)
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute("ANALYZE")
    else:
        reset_database(args.database_url)
        migrate(app_dir, env)
        flask_cli(
            app_dir, env, "users", "create", "--email", ADMIN_EMAIL, "--password", ADMIN_PASSWORD
        )
        started = time.perf_counter()
        result["seed_seconds"] = seed(args.database_url, args.tasks, args.days, datetime.now(UTC))
        print(f"seeded in {time.perf_counter() - started:.0f} s: {result['seed_seconds']}")
    with psycopg.connect(args.database_url) as conn:
        result["data"] = {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in ("tasks", "task_events", "task_attempts", "audit_events", "agents")
        }
        result["data"]["revision"] = conn.execute(
            "SELECT version_num FROM alembic_version"
        ).fetchone()[0]  # type: ignore[index]
    sample = sample_ids(args.database_url)
    child = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            json.dumps(
                {
                    "app_dir": str(app_dir),
                    "sample": sample,
                    "requests": args.requests,
                    "warmup": args.warmup,
                }
            ),
        ],
        cwd=app_dir,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    rows = json.loads(child.stdout.strip().splitlines()[-1])
    result["pages"] = rows
    result["gunicorn"] = measure_gunicorn(app_dir, env, rows, args.gunicorn_requests)
    print(f"console pages, PostgreSQL, {result['data']['tasks']:,} tasks, {app_label}")
    print(f"{os.cpu_count()} CPUs, load average at start {result['environment']['loadavg_start']}")
    print("server time in ms over", args.requests, "requests (test client, in process)")
    print_table(rows)
    print("\nthrough gunicorn (1 worker): server time from the access log / round trip, ms")
    for row in result["gunicorn"]:
        s, r = row["server"], row["round_trip"]
        print(
            f"{row['page']:<36}{row['status']:>7}  server {s['median_ms']} / {s['p95_ms']}"
            f"   round trip {r['median_ms']} / {r['p95_ms']}"
        )
    slow = [row["page"] for row in rows if (row["p95_ms"] or 0) > BUDGET_MS]
    bad = [row["page"] for row in rows if row["status"] != 200]
    result["over_budget"] = slow
    result["not_ok"] = bad
    print(f"\nover {BUDGET_MS:.0f} ms at p95: {', '.join(slow) or 'none'}")
    if bad:
        print(f"not 200: {', '.join(bad)}")
    if args.json:
        result["commit"] = git("rev-parse", "--short", "HEAD")
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0 if not slow and not bad else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        spec = json.loads(sys.argv[2])
        figures = measure_in_process(
            Path(spec["app_dir"]), spec["sample"], spec["requests"], spec["warmup"]
        )
        print(json.dumps(figures))
        sys.exit(0)
    sys.exit(main())
