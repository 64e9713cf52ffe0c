"""Routing benchmark: what choosing an agent on purpose costs per task.

On a fresh PostgreSQL schema, registers --agents agents (100) with one capability and
room for every task, then for each strategy submits --tasks tasks (400) one at a time
through the submit domain function, in process. Each submit's transaction routes its task
before it commits (services/routing.route_recorded); the bench times that step alone
(*routing*, after flushing the submit's own inserts) and the whole submit (*submit*:
insert, route, commit), and prints p50 / p99 / max per strategy, plus the share of the
submit that routing takes. A last run with one
agent shows how the cost grows with the number of candidates.

    .venv/bin/python bench/routing.py --json bench/results/routing-$(date +%F).json

It DROPS the public schema of --database-url (names without "bench" are refused).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, flask_cli, git, percentile, reset_database  # bench/ is not a package

CAPABILITY = "bench-route-v1"
STRATEGIES = ("round_robin", "least_loaded", "trust_weighted", "fastest_response")


def summary(ms: list[float]) -> dict[str, float | None]:
    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {
        "p50_ms": rounded(percentile(ms, 50)),
        "p99_ms": rounded(percentile(ms, 99)),
        "max_ms": rounded(max(ms) if ms else None),
    }


def run(database_url: str, agents: int, tasks: int) -> list[dict[str, Any]]:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/13")
    sys.path.insert(0, str(ROOT))
    from app import create_app
    from app.extensions import db
    from app.lib.clock import utcnow
    from app.models import Agent, Role, Task, TaskStatus
    from app.services import agents as agent_service
    from app.services import dispatch, routing
    from app.services.principal import Principal

    app = create_app()
    fleet = Principal(role=Role.AGENT, name="bench-fleet", key_id="bench-fleet")
    client = Principal(role=Role.CLIENT, name="bench-client", client_id="bench-client")
    timings: list[float] = []
    real_route = routing.route_recorded

    def timed_route(session: Any) -> None:
        session.flush()  # the submit's own inserts, which routing's first query would flush
        started = time.perf_counter()
        real_route(session)
        timings.append((time.perf_counter() - started) * 1000)

    routing.route_recorded = timed_route  # workflows calls it through the module
    results = []
    with app.app_context():
        for i in range(agents):
            agent_service.register_agent(
                fleet,
                display_name=f"bench-agent-{i}",
                public_key=uuid.uuid4().hex,
                capabilities=[{"name": CAPABILITY}],
                max_concurrent_tasks=max(tasks, 1),
            )
        for strategy in STRATEGIES:
            fields = {
                "task_type": "bench",
                "capability_required": CAPABILITY,
                "input_data": {},
                "priority": 5,
                "max_retries": 3,
                "retry_policy": "exponential",
                "timeout_seconds": 300,
                "routing_strategy": strategy,
            }
            timings.clear()
            submits: list[float] = []
            for n in range(tasks):
                if n % 50 == 0:  # the agents' heartbeats (routing takes fresh ones only)
                    db.session.execute(db.update(Agent).values(last_heartbeat=utcnow()))
                    db.session.commit()
                started = time.perf_counter()
                task, _ = dispatch.submit_task(client, fields)
                submits.append((time.perf_counter() - started) * 1000)
                assert task.status == TaskStatus.ASSIGNED, task.status
            routed = list(timings)
            share = sum(routed) / sum(submits)
            results.append(
                {
                    "strategy": strategy,
                    "agents": agents,
                    "tasks": tasks,
                    "routing": summary(routed),
                    "submit": summary(submits),
                    "routing_share_of_submit": round(share, 3),
                }
            )
            # Start the next strategy with every slot free again.
            db.session.execute(
                db.update(Task)
                .where(Task.status == TaskStatus.ASSIGNED)
                .values(status=TaskStatus.CANCELLED)
            )
            db.session.commit()
    routing.route_recorded = real_route
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", default="postgresql://postgres@127.0.0.1:5432/ains_bench_routing"
    )
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if "bench" not in args.database_url.rsplit("/", 1)[-1]:
        print("refusing: the database name must contain 'bench' (its schema is dropped)")
        return 2
    rows: list[dict[str, Any]] = []
    for agents in (args.agents, 1):
        reset_database(args.database_url)
        env = {**os.environ, "DATABASE_URL": args.database_url}
        flask_cli(ROOT, env, "db", "upgrade")
        # One process per size: the app binds its engine once.
        out = os.popen(
            f"{sys.executable} {__file__} --child {agents} {args.tasks} {args.database_url}"
        ).read()
        rows += json.loads(out.strip().splitlines()[-1])
    print(f"routing cost per task, PostgreSQL, {os.cpu_count()} CPUs ({platform.machine()})")
    header = f"{'strategy':<18}{'agents':>7}  {'routing p50/p99/max ms':<26}"
    print(header + f"{'submit p50/p99 ms':<20}share")
    for row in rows:
        r, s = row["routing"], row["submit"]
        print(
            f"{row['strategy']:<18}{row['agents']:>7}  "
            f"{r['p50_ms']:>6} / {r['p99_ms']:>6} / {r['max_ms']:>7}   "
            f"{s['p50_ms']:>6} / {s['p99_ms']:>6}    {row['routing_share_of_submit']:.0%}"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"commit": git("rev-parse", "--short", "HEAD"), "results": rows}, indent=2)
            + "\n"
        )
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        figures = run(sys.argv[4], int(sys.argv[2]), int(sys.argv[3]))
        print(json.dumps(figures))
        sys.exit(0)
    sys.exit(main())
