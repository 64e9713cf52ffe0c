"""Dispatch benchmark: claim drain rate and long-poll dispatch latency against a real server.

Starts gunicorn on a fresh PostgreSQL schema and drives it over HTTP only:

1. drain   - N agents claim in batches and complete everything a batch submit queued;
2. latency - N agents long-poll while single tasks arrive at a fixed rate.

    .venv/bin/python bench/dispatch.py --ref HEAD --json bench/results/dispatch-DATE.json

It DROPS the public schema of --database-url and FLUSHES the Redis DB of --redis-url.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import queue
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # bench/ is not a package
    HTTP_TIMEOUT,
    ROOT,
    TMP_DIR,
    Api,
    ErrorLog,
    Meter,
    Server,
    checkout,
    create_key,
    flask_cli,
    fmt,
    free_port,
    mark_log,
    parse_time,
    pg_transactions,
    reset_database,
    run_main,
    scan_server_log,
    summary_ms,
    without_password,
)

CAPABILITY = "bench-v1"
CLIENT_ID = "bench-client"
BATCH_SUBMIT_SIZE = 100  # the API's maximum per POST /ains/tasks/batch
STOP_MARK = "stop"
CLAIM_GRACE = 10.0  # latency: seconds to wait for claims after the last submit
STOP_GRACE = 30.0  # latency: seconds for the long-polling agents to take their stop tasks
ERROR_PAUSE = 0.1  # seconds an agent waits after a failed call before the next one


# --------------------------------------------------------------------------- scenarios


@dataclass
class Agent:
    agent_id: str
    key: str


def register_agents(api: Api, count: int, max_concurrent: int) -> list[Agent]:
    agents = []
    for index in range(count):
        body = {
            "display_name": f"bench agent {index}",
            "public_key": f"bench-{uuid.uuid4().hex}",
            "capabilities": [{"name": CAPABILITY, "version": "1"}],
            "max_concurrent_tasks": max_concurrent,
        }
        registered = api.ok("POST", "/ains/agents", body)
        agents.append(Agent(registered["agent_id"], registered["api_key"]))
    return agents


def complete(api: Api, scenario: str, task: dict[str, Any], errors: ErrorLog) -> bool:
    """Report a claimed task done; False (and an error entry) if the server refused."""
    try:
        response = api.call(
            "POST",
            f"/ains/tasks/{task['task_id']}/complete",
            {"result_data": {"ok": True}, "attempt": task["attempt"]},
        )
    except requests.RequestException as exc:
        errors.add(scenario, "complete", None, repr(exc))
        return False
    if not response.ok:
        errors.add(scenario, "complete", response.status_code, response.text)
        return False
    return True


def task_body(index: int, **input_data: Any) -> dict[str, Any]:
    return {
        "client_id": CLIENT_ID,
        "task_type": "bench",
        "capability_required": CAPABILITY,
        "input_data": {"n": index, **input_data},
        "max_retries": 0,
    }


def run_drain(
    base: str,
    client: Api,
    agents: list[Agent],
    args: argparse.Namespace,
    errors: ErrorLog,
    server_pids: list[int],
) -> dict[str, Any]:
    """Batch-submit --tasks, then N agents claim (batch) and complete until all are done."""
    submit_start = time.monotonic()
    submitted = 0
    for start in range(0, args.tasks, BATCH_SUBMIT_SIZE):
        items = [task_body(i) for i in range(start, min(start + BATCH_SUBMIT_SIZE, args.tasks))]
        answer = client.ok("POST", "/ains/tasks/batch", {"tasks": items})
        if answer["failed"]:
            raise RuntimeError(f"batch submit rejected items: {answer['failed'][:3]}")
        submitted += len(answer["submitted"])
    submit_seconds = time.monotonic() - submit_start

    lock = threading.Lock()
    done = threading.Event()
    completed = [0]
    last_completion = [0.0]
    claimed_ids: list[str] = []
    not_first_attempt: list[str] = []
    claim_calls = [0]
    empty_claims = [0]
    claim_rtt: list[float] = []
    complete_rtt: list[float] = []
    deadline = time.monotonic() + args.timeout

    def agent_loop(agent: Agent) -> None:
        api = Api(base, agent.key)
        mine: list[str] = []
        my_claim_rtt: list[float] = []
        my_complete_rtt: list[float] = []
        try:
            while not done.is_set() and time.monotonic() < deadline:
                body = {"max_tasks": args.batch, "wait_seconds": 1}
                sent = time.monotonic()
                try:
                    response = api.call("POST", f"/ains/agents/{agent.agent_id}/tasks/claim", body)
                except requests.RequestException as exc:
                    errors.add("drain", "claim", None, repr(exc))
                    time.sleep(ERROR_PAUSE)
                    continue
                my_claim_rtt.append(time.monotonic() - sent)
                if not response.ok:
                    errors.add("drain", "claim", response.status_code, response.text)
                    time.sleep(ERROR_PAUSE)
                    continue
                tasks = response.json()["tasks"]
                with lock:
                    claim_calls[0] += 1
                    if not tasks:
                        empty_claims[0] += 1
                for task in tasks:
                    mine.append(task["task_id"])
                    if task["attempt"] != 1:
                        not_first_attempt.append(task["task_id"])
                    sent = time.monotonic()
                    ok = complete(api, "drain", task, errors)
                    finished = time.monotonic()
                    my_complete_rtt.append(finished - sent)
                    if not ok:
                        continue
                    with lock:
                        completed[0] += 1
                        last_completion[0] = finished
                        if completed[0] >= submitted:
                            done.set()
        finally:
            api.close()
            with lock:
                claimed_ids.extend(mine)
                claim_rtt.extend(my_claim_rtt)
                complete_rtt.extend(my_complete_rtt)

    cpu = Meter(server_pids, args.database_url)
    drain_start = time.monotonic()
    threads = [
        threading.Thread(target=agent_loop, args=(a,), name=f"drain-{i}", daemon=True)
        for i, a in enumerate(agents)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + HTTP_TIMEOUT)
    cpu_usage = cpu.read(completed[0])
    finished_all = done.is_set()
    drain_seconds = (last_completion[0] or time.monotonic()) - drain_start
    duplicates = [tid for tid, n in Counter(claimed_ids).items() if n > 1]
    non_empty = claim_calls[0] - empty_claims[0]
    return {
        "tasks": args.tasks,
        "submitted": submitted,
        "submit_seconds": submit_seconds,
        "submit_tasks_per_s": submitted / submit_seconds if submit_seconds else None,
        "finished": finished_all,
        "completed": completed[0],
        "drain_seconds": drain_seconds,
        "drain_tasks_per_s": completed[0] / drain_seconds if drain_seconds > 0 else None,
        "claim_calls": claim_calls[0],
        "empty_claims": empty_claims[0],
        "claims_per_s": claim_calls[0] / drain_seconds if drain_seconds > 0 else None,
        "mean_tasks_per_nonempty_claim": len(claimed_ids) / non_empty if non_empty else None,
        "claimed": len(claimed_ids),
        "claimed_twice": duplicates,
        "claimed_not_first_attempt": not_first_attempt,
        "claim_rtt_ms": summary_ms(claim_rtt),
        "complete_rtt_ms": summary_ms(complete_rtt),
        "cpu": cpu_usage,
    }


def run_latency(
    base: str,
    client: Api,
    agents: list[Agent],
    args: argparse.Namespace,
    errors: ErrorLog,
    server_pids: list[int],
) -> dict[str, Any]:
    """Agents long-poll idle; single tasks arrive at --rate/s; time created -> claimed."""
    lock = threading.Lock()
    sent_at: dict[str, float] = {}  # task id -> monotonic time the submit was sent
    received: dict[str, float] = {}  # task id -> monotonic time its claim answer arrived
    server_gap: dict[str, float] = {}  # task id -> claimed_at - created_at (server clock)
    claimed_ids: list[str] = []
    completed = Counter[str]()  # "task" / "stop" -> completes the server accepted
    stop_ids: list[str] = []  # stop tasks submitted to end the agents' long polls
    stops_claimed: set[str] = set()
    exited: set[str] = set()
    # Submits stop at the deadline; claims are awaited CLAIM_GRACE longer; agents that do
    # not take their stop task give up by hard_stop.
    deadline = time.monotonic() + args.timeout
    hard_stop = deadline + HTTP_TIMEOUT + CLAIM_GRACE + STOP_GRACE

    def completer_loop(agent: Agent, tasks: queue.Queue[dict[str, Any] | None]) -> None:
        api = Api(base, agent.key)
        try:
            while (task := tasks.get()) is not None:
                if complete(api, "latency", task, errors):
                    with lock:
                        completed["stop" if task["input_data"].get(STOP_MARK) else "task"] += 1
        finally:
            api.close()

    def agent_loop(agent: Agent) -> None:
        # Claimed tasks are completed by a second thread, so the agent is straight back in
        # its long poll: the latency measured is the dispatch path's, not the agent's work.
        to_complete: queue.Queue[dict[str, Any] | None] = queue.Queue()
        completer = threading.Thread(
            target=completer_loop, args=(agent, to_complete), name="complete", daemon=True
        )
        completer.start()
        api = Api(base, agent.key)
        try:
            while time.monotonic() < hard_stop:
                body = {"max_tasks": args.latency_max_tasks, "wait_seconds": 20}
                try:
                    response = api.call(
                        "POST",
                        f"/ains/agents/{agent.agent_id}/tasks/claim",
                        body,
                        timeout=HTTP_TIMEOUT + 20,
                    )
                except requests.RequestException as exc:
                    errors.add("latency", "claim", None, repr(exc))
                    time.sleep(ERROR_PAUSE)
                    continue
                arrived = time.monotonic()
                if not response.ok:
                    errors.add("latency", "claim", response.status_code, response.text)
                    time.sleep(ERROR_PAUSE)
                    continue
                tasks = response.json()["tasks"]
                told_to_stop = False
                with lock:
                    for task in tasks:
                        if task["input_data"].get(STOP_MARK):
                            told_to_stop = True
                            stops_claimed.add(task["task_id"])
                            continue
                        claimed_ids.append(task["task_id"])
                        received.setdefault(task["task_id"], arrived)
                        server_gap[task["task_id"]] = parse_time(task["claimed_at"]) - parse_time(
                            task["created_at"]
                        )
                for task in tasks:
                    to_complete.put(task)
                if told_to_stop:
                    return
        finally:
            to_complete.put(None)
            completer.join(HTTP_TIMEOUT)
            with lock:
                exited.add(agent.agent_id)
            api.close()

    threads = [
        threading.Thread(target=agent_loop, args=(a,), name=f"poll-{i}", daemon=True)
        for i, a in enumerate(agents)
    ]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # let every agent reach its long poll (the queue is empty)

    cpu = Meter(server_pids, args.database_url)
    # Open loop: tasks are due at fixed times whatever the server's speed; a few submitter
    # threads keep the schedule when one submit takes longer than the interval.
    interval = 1.0 / args.rate
    submit_rtt: list[float] = []
    behind: list[float] = []  # how late each submit left against its schedule
    next_index = [0]
    start = time.monotonic()

    def submitter() -> None:
        api = Api(base, client.key)
        try:
            while True:
                with lock:
                    index = next_index[0]
                    next_index[0] += 1
                if index >= args.latency_tasks or time.monotonic() > deadline:
                    return
                due = start + index * interval
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                sent = time.monotonic()
                try:
                    response = api.call("POST", "/ains/tasks", task_body(index))
                except requests.RequestException as exc:
                    errors.add("latency", "submit", None, repr(exc))
                    continue
                rtt = time.monotonic() - sent
                if response.status_code != 201:
                    errors.add("latency", "submit", response.status_code, response.text)
                    continue
                with lock:
                    submit_rtt.append(rtt)
                    behind.append(sent - due)
                    sent_at[response.json()["task_id"]] = sent
        finally:
            api.close()

    submitters = [
        threading.Thread(target=submitter, name=f"submit-{i}", daemon=True)
        for i in range(args.submitters)
    ]
    for thread in submitters:
        thread.start()
    for thread in submitters:
        thread.join(max(0.0, deadline - time.monotonic()) + HTTP_TIMEOUT)
    submit_seconds = time.monotonic() - start

    # Wait for the last claims, then hand each agent a stop task.
    claim_deadline = time.monotonic() + CLAIM_GRACE
    while time.monotonic() < claim_deadline:
        with lock:
            if all(tid in received for tid in sent_at):
                break
        time.sleep(0.05)
    cpu_usage = cpu.read(len(received))
    # Each agent leaves after claiming a stop task; top the stop tasks up until all are gone.
    stop_deadline = min(time.monotonic() + STOP_GRACE, hard_stop)
    while time.monotonic() < stop_deadline:
        with lock:
            alive = len(agents) - len(exited)
            waiting_stops = len(stop_ids) - len(stops_claimed)
        if alive == 0:
            break
        for _ in range(alive - waiting_stops):
            response = client.call("POST", "/ains/tasks", task_body(-1, **{STOP_MARK: True}))
            if response.status_code == 201:
                stop_ids.append(response.json()["task_id"])
        time.sleep(0.2)
    for thread in threads:
        thread.join(0.1)
    leftover_stops = 0
    if len(exited) == len(agents):
        # Stop tasks nobody was left to claim: cancel them.
        for task_id in set(stop_ids) - stops_claimed:
            response = client.call("POST", f"/ains/tasks/{task_id}/cancel", {"reason": "over"})
            if response.status_code == 200:
                leftover_stops += 1
            else:
                errors.add("latency", "cancel stop task", response.status_code, response.text)
    with lock:
        wall = [received[tid] - sent_at[tid] for tid in sent_at if tid in received]
        gaps = [server_gap[tid] for tid in sent_at if tid in server_gap]
        duplicates = [tid for tid, n in Counter(claimed_ids).items() if n > 1]
        missing = [tid for tid in sent_at if tid not in received]
    return {
        "latency_tasks": args.latency_tasks,
        "rate_target_per_s": args.rate,
        "rate_achieved_per_s": len(submit_rtt) / submit_seconds if submit_seconds else None,
        "submitters": args.submitters,
        "submit_behind_schedule_ms": summary_ms(behind),
        "max_tasks_per_claim": args.latency_max_tasks,
        "submitted": len(sent_at),
        "not_sent_before_deadline": max(0, args.latency_tasks - next_index[0] + args.submitters),
        "claimed": len(wall),
        "never_claimed": missing,
        "claimed_twice": duplicates,
        "server_created_to_claimed_ms": summary_ms(gaps),
        # claimed_at is stamped when the claim attempt starts, created_at when the submit
        # starts: a claim that began before the submit committed can predate its task.
        "claimed_at_before_created_at": sum(1 for gap in gaps if gap < 0),
        "min_created_to_claimed_ms": min(gaps) * 1000 if gaps else None,
        "client_submit_to_claim_received_ms": summary_ms(wall),
        "submit_rtt_ms": summary_ms(submit_rtt),
        "completed": completed["task"],
        "stop_tasks_completed": completed["stop"],
        "stop_tasks_cancelled": leftover_stops,
        "agents_not_stopped": len(agents) - len(exited),
        "cpu": cpu_usage,
    }


def final_checks(admin: Api, expected: dict[str, int]) -> dict[str, Any]:
    """Counts the server itself reports once everything is over."""
    metrics = admin.ok("GET", "/ains/queue/metrics")
    agents = admin.ok("GET", "/ains/agents")["agents"]
    by_status = metrics["tasks_by_status"]
    return {
        "tasks_by_status": by_status,
        "expected_by_status": {k: v for k, v in expected.items() if v},
        "counts_ok": by_status == {k: v for k, v in expected.items() if v},
        "agents_active_tasks": {a["agent_id"]: a["active_tasks"] for a in agents},
        "agents_total_completed": sum(a["total_tasks_completed"] for a in agents),
        "agents_total_failed": sum(a["total_tasks_failed"] for a in agents),
    }


# --------------------------------------------------------------------------- report


def latency_row(name: str, stats: dict[str, Any]) -> str:
    cells = [fmt(stats[k]) for k in ("p50", "p95", "p99", "max")]
    return f"  {name:<44}{stats['n']:>6}" + "".join(f"{c:>9}" for c in cells)


def cpu_line(cpu: dict[str, Any]) -> str:
    rest = (cpu["machine_cpu_s"] or 0) - cpu["gunicorn_cpu_s"] - cpu["loadgen_cpu_s"]
    return (
        f"  CPU over {fmt(cpu['wall_s'])} s: machine {fmt(cpu['machine_busy_pct'])}% busy "
        f"({fmt(cpu['machine_cpu_s'])} CPU-s) = gunicorn {fmt(cpu['gunicorn_cpu_s'])} "
        f"({fmt(cpu['gunicorn_cpu_ms_per_task'])} ms/task) + load generator "
        f"{fmt(cpu['loadgen_cpu_s'])} + rest (PostgreSQL, Redis, other users) {fmt(rest)}\n"
        f"  PostgreSQL backends (sampled every {Meter.SAMPLE_EVERY} s): connected max "
        f"{fmt(cpu['pg_connections_max'])}, active max {fmt(cpu['pg_active_max'])} / mean "
        f"{fmt(cpu['pg_active_mean'])}, waiting on a lock max {fmt(cpu['pg_lock_waits_max'])}"
    )


def print_server_side(result: dict[str, Any], section: str) -> None:
    """Time taken inside gunicorn per route (access log), and the split over workers."""
    data = result.get("server_log", {}).get("sections", {}).get(section)
    if not data:
        return
    for route, stats in sorted(data["server_ms"].items()):
        print(latency_row(f"in server: {route.replace('/ains', '')}", stats))
    print(f"  requests per gunicorn worker: {data['requests_per_worker']}")


def print_report(result: dict[str, Any]) -> None:
    env = result["environment"]
    print()
    print("=" * 78)
    print("AINS dispatch benchmark")
    print("=" * 78)
    print(
        f"  {env['cpu_count']} CPUs, shared by gunicorn ({env['web_workers']} workers x "
        f"{env['web_threads']} threads), PostgreSQL, Redis and this load generator"
    )
    print(f"  load average at start: {env['loadavg_start']}; {env['platform']}")
    print(f"  database: {env['database']}   redis: {env['redis']}")
    print(f"  app: {env['app']}")
    drain = result.get("drain")
    if drain:
        print()
        print(
            f"Drain: {result['args']['agents']} agents, claim max_tasks={result['args']['batch']}"
        )
        print(
            f"  submit (batch of {BATCH_SUBMIT_SIZE}): {fmt(drain['submitted'])} tasks in "
            f"{fmt(drain['submit_seconds'], 2)} s = {fmt(drain['submit_tasks_per_s'])} tasks/s"
        )
        print(
            f"  drain (claim + complete): {fmt(drain['completed'])} tasks in "
            f"{fmt(drain['drain_seconds'], 2)} s = {fmt(drain['drain_tasks_per_s'])} tasks/s"
        )
        print(
            f"  claims: {fmt(drain['claim_calls'])} calls = {fmt(drain['claims_per_s'])}/s, "
            f"{fmt(drain['empty_claims'])} empty, "
            f"{fmt(drain['mean_tasks_per_nonempty_claim'])} tasks per non-empty claim"
        )
        print(f"  {'request round trip (ms)':<44}{'n':>6}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}")
        print(latency_row("claim", drain["claim_rtt_ms"]))
        print(latency_row("complete", drain["complete_rtt_ms"]))
        print_server_side(result, "drain")
        print(cpu_line(drain["cpu"]))
        print(
            f"  finished: {drain['finished']}; claimed twice: {len(drain['claimed_twice'])}; "
            f"claimed with attempt > 1: {len(drain['claimed_not_first_attempt'])}"
        )
    latency = result.get("latency")
    if latency:
        print()
        print(
            f"Latency: {result['args']['agents']} agents long-polling (wait_seconds=20, "
            f"max_tasks={latency['max_tasks_per_claim']}), single submits at "
            f"{latency['rate_target_per_s']}/s by {latency['submitters']} submitters "
            f"(achieved {fmt(latency['rate_achieved_per_s'])}/s)"
        )
        print(f"  {'dispatch latency (ms)':<44}{'n':>6}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}")
        print(
            latency_row("server created_at -> claimed_at", latency["server_created_to_claimed_ms"])
        )
        print(
            latency_row(
                "client submit sent -> claim received",
                latency["client_submit_to_claim_received_ms"],
            )
        )
        print(latency_row("submit round trip", latency["submit_rtt_ms"]))
        print(latency_row("submit late vs schedule", latency["submit_behind_schedule_ms"]))
        print_server_side(result, "latency")
        print(cpu_line(latency["cpu"]))
        print(
            f"  claimed {latency['claimed']}/{latency['submitted']} submitted "
            f"({latency['not_sent_before_deadline']} not sent by the deadline); never claimed: "
            f"{len(latency['never_claimed'])}; claimed twice: {len(latency['claimed_twice'])}; "
            f"claimed_at < created_at: {latency['claimed_at_before_created_at']} "
            f"(min {fmt(latency['min_created_to_claimed_ms'])} ms)"
        )
    checks = result.get("checks")
    if checks:
        print()
        print(f"Server counts: tasks_by_status {checks['tasks_by_status']}")
        xacts = result.get("pg_transactions", {})
        done = checks["tasks_by_status"].get("COMPLETED", 0)
        print(
            f"  PostgreSQL transactions over the whole run: {fmt(xacts.get('commit'))} commits + "
            f"{fmt(xacts.get('rollback'))} rollbacks = "
            f"{fmt(sum(xacts.values()) / done if done and xacts else None)} per completed task "
            "(a claim that finds nothing is a rollback)"
        )
        print(
            f"  expected {checks['expected_by_status']}: "
            f"{'OK' if checks['counts_ok'] else 'MISMATCH'}; agents with active_tasks != 0: "
            f"{sum(1 for v in checks['agents_active_tasks'].values() if v)}, total_tasks_completed "
            f"{checks['agents_total_completed']}, failed {checks['agents_total_failed']}"
        )
    print()
    errors = result.get("errors", {})
    server_log = result.get("server_log", {})
    non_2xx = {
        f"{section}: {k}": v
        for section, data in server_log.get("sections", {}).items()
        for k, v in data["status"].items()
        if not k.endswith(("200", "201"))
    }
    print(f"Client-side errors: {errors.get('counts') or 'none'}")
    print(f"Server non-2xx answers (access log): {non_2xx or 'none'}")
    print(f"Server error lines: {len(server_log.get('error_lines', []))} (log: {result['log']})")
    for line in server_log.get("error_lines", [])[:10]:
        print(f"    {line}")
    print(f"Verdict: {'PASS' if result.get('passed') else 'FAIL'}")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/ains_bench",
        help="PostgreSQL database whose public schema is DROPPED and recreated",
    )
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/13", help="Redis DB that is FLUSHED"
    )
    parser.add_argument("--tasks", type=int, default=5000, help="drain: tasks to submit and drain")
    parser.add_argument("--agents", type=int, default=4, help="agents (one thread each)")
    parser.add_argument("--batch", type=int, default=32, help="drain: claim max_tasks (1..100)")
    parser.add_argument("--latency-tasks", type=int, default=300, help="latency: tasks to submit")
    parser.add_argument("--rate", type=float, default=50, help="latency: submits per second")
    parser.add_argument(
        "--submitters", type=int, default=4, help="latency: submitter threads (open loop)"
    )
    parser.add_argument(
        "--latency-max-tasks",
        type=int,
        default=None,
        help="latency: claim max_tasks (1..100; default --batch, as the sample agent claims)",
    )
    parser.add_argument("--web-workers", type=int, default=2, help="WEB_CONCURRENCY")
    parser.add_argument("--web-threads", type=int, default=32, help="WEB_THREADS")
    parser.add_argument(
        "--timeout", type=float, default=60, help="seconds allowed per scenario before giving up"
    )
    parser.add_argument(
        "--scenario", choices=("all", "drain", "latency"), default="all", help="what to run"
    )
    parser.add_argument(
        "--ref",
        default=None,
        help="serve this git revision (exported to bench/results/tmp/) instead of the working tree",
    )
    parser.add_argument(
        "--reset-any-database",
        action="store_true",
        help="allow a --database-url whose name lacks 'bench' (its public schema is dropped)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.latency_max_tasks is None:
        args.latency_max_tasks = args.batch
    if not 1 <= args.batch <= 100 or not 1 <= args.latency_max_tasks <= 100:
        parser.error("--batch and --latency-max-tasks must be within 1..100 (the API's limit)")
    if min(args.tasks, args.agents, args.latency_tasks, args.submitters) < 1 or args.rate <= 0:
        parser.error("--tasks, --agents, --latency-tasks, --submitters, --rate must be positive")
    if not urlsplit(args.database_url).scheme.startswith("postgres"):
        parser.error("--database-url must be a postgresql:// URL")
    if "bench" not in urlsplit(args.database_url).path and not args.reset_any_database:
        parser.error(
            "--database-url names no 'bench' database; its public schema would be dropped "
            "(pass --reset-any-database if that is what you want)"
        )
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    TMP_DIR.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = TMP_DIR / f"gunicorn-{time.strftime('%Y%m%d-%H%M%S')}.log"
    env = dict(os.environ)
    env.update(
        DATABASE_URL=args.database_url,
        REDIS_URL=args.redis_url,
        SECRET_KEY="bench-secret-key",
        PORT=str(port),
        WEB_CONCURRENCY=str(args.web_workers),
        WEB_THREADS=str(args.web_threads),
        PYTHONUNBUFFERED="1",
    )
    result: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "environment": {
            "cpu_count": os.cpu_count(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            "platform": f"{platform.platform()}, Python {platform.python_version()}",
            "database": without_password(args.database_url),
            "redis": args.redis_url,
            "web_workers": args.web_workers,
            "web_threads": args.web_threads,
            "started_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        },
        "log": str(log_path.relative_to(ROOT)),
    }

    app_dir, result["environment"]["app"] = checkout(args.ref)
    print(f"preparing {args.database_url} and {args.redis_url} ...", flush=True)
    reset_database(args.database_url)
    redis.Redis.from_url(args.redis_url).flushdb()
    flask_cli(app_dir, env, "db", "upgrade")
    admin_key = create_key(app_dir, env, "admin", "bench admin")
    client_key = create_key(app_dir, env, "client", "bench client", "--client-id", CLIENT_ID)
    agent_key = create_key(app_dir, env, "agent", "bench agents")

    errors = ErrorLog()
    xacts_before = pg_transactions(args.database_url)
    server = Server(app_dir, env, log_path)
    apis: list[Api] = []
    try:
        print(f"starting gunicorn on {base} ...", flush=True)
        server.wait_healthy(base)
        server_pids = server.pids()
        admin, client, registrar = Api(base, admin_key), Api(base, client_key), Api(base, agent_key)
        apis += [admin, client, registrar]
        agents = register_agents(registrar, args.agents, max(args.batch, args.latency_max_tasks))
        expected: Counter[str] = Counter()
        if args.scenario in ("all", "drain"):
            print(f"drain: {args.tasks} tasks, {args.agents} agents, batch {args.batch} ...")
            mark_log(base, "drain")
            result["drain"] = run_drain(base, client, agents, args, errors, server_pids)
            expected["COMPLETED"] += result["drain"]["completed"]
        if args.scenario in ("all", "latency"):
            print(f"latency: {args.latency_tasks} tasks at {args.rate}/s ...", flush=True)
            mark_log(base, "latency")
            result["latency"] = run_latency(base, client, agents, args, errors, server_pids)
            latency = result["latency"]
            expected["COMPLETED"] += latency["completed"] + latency["stop_tasks_completed"]
            expected["CANCELLED"] += latency["stop_tasks_cancelled"]
            expected["PENDING"] += len(latency["never_claimed"])
        mark_log(base, "checks")
        result["checks"] = final_checks(admin, dict(expected))
    finally:
        for api in apis:
            api.close()
        server.stop()
        time.sleep(0.5)  # let the exiting backends report their statistics
        commits, rollbacks = (
            after - before
            for after, before in zip(pg_transactions(args.database_url), xacts_before, strict=True)
        )
        result["pg_transactions"] = {"commit": commits, "rollback": rollbacks}
        result["server_log"] = scan_server_log(log_path)
        result["errors"] = {"counts": errors.counts(), "entries": errors.entries[:100]}
    drain, latency, checks = result.get("drain"), result.get("latency"), result["checks"]
    result["passed"] = bool(
        not errors.entries
        and not result["server_log"]["error_lines"]
        and checks["counts_ok"]
        and all(v == 0 for v in checks["agents_active_tasks"].values())
        and (
            drain is None
            or (drain["finished"] and not drain["claimed_twice"] and drain["claimed"] == args.tasks)
        )
        and (
            latency is None
            or (
                not latency["never_claimed"]
                and not latency["claimed_twice"]
                and latency["completed"] == latency["submitted"] == args.latency_tasks
                and latency["agents_not_stopped"] == 0
                and latency["not_sent_before_deadline"] == 0
            )
        )
    )
    return result


def main(argv: list[str] | None = None) -> int:
    return run_main(parse_args(argv), run, print_report, "gunicorn")


if __name__ == "__main__":
    sys.exit(main())
