"""Schedule benchmark: how late, and how exactly once, two clock processes fire schedules.

Creates 50 cron ``* * * * *`` and 10 ``interval_seconds: 5`` schedules on a fresh PostgreSQL
schema, runs one ``python -m jobs.worker`` and TWO ``python -m jobs.clock`` processes for
--minutes, stops them, and checks every due time inside the measured window in the
database: fired once (duplicates), fired at all (missed), and how late (fired_at - due).

    .venv/bin/python bench/schedules.py --minutes 3 --mode both \
        --json bench/results/schedules-DATE.json

It DROPS the public schema of --database-url and FLUSHES the Redis DB of --redis-url.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import psycopg
import redis
from croniter import croniter

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # bench/ is not a package
    ROOT,
    TMP_DIR,
    flask_cli,
    git,
    machine_cpu_ticks,
    percentile,
    pg_transactions,
    reset_database,
    run_main,
    without_password,
)

CAPABILITY = "bench-nobody-v1"  # no agent has it: the runs' tasks stay PENDING
CLIENT_ID = "bench-schedules"
CRON_EXPRESSION = "* * * * *"
INTERVAL_SECONDS = 5
STOP_WAIT = 10.0  # seconds a process gets to exit after SIGTERM before SIGKILL
PROGRESS_EVERY = 30.0
# With --align, schedules are created between these seconds of a minute (see align()).
ALIGN_FROM, ALIGN_UNTIL = 5, 38
PROCESS_NAMES = ("clock-1", "clock-2", "worker")
# Log lines that mean something went wrong in a clock or the worker.
PROBLEM_WORDS = (" ERROR ", "CRITICAL", "deadlock")
# The last line of a traceback: "psycopg.errors.ForeignKeyViolation: insert or update ..."
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Violation|Exit|Interrupt)\b.*")

# Every committed schedule_executions row also gets a row here, written by a trigger with
# PostgreSQL's clock_timestamp() at the insert and the inserting connection's
# application_name (each process connects with its own PGAPPNAME). fired_at is the firing
# pass's "now", taken before the pass starts; this is when the row really went in, and who
# put it there. A rolled-back firing leaves no row (the trigger's insert rolls back too).
# The commit follows the insert within milliseconds unless the process stalls in between.
TRIGGER_SQL = """
CREATE TABLE bench_execution_inserts (
    execution_id varchar(40) PRIMARY KEY,
    inserted_at timestamptz NOT NULL,
    inserted_by text NOT NULL
);
CREATE FUNCTION bench_note_execution() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_execution_inserts
    VALUES (NEW.id, clock_timestamp(), current_setting('application_name'));
    RETURN NEW;
END $$;
CREATE TRIGGER bench_note_execution AFTER INSERT ON schedule_executions
    FOR EACH ROW EXECUTE FUNCTION bench_note_execution();
"""

# Run inside the app (its directory and environment): create the schedules with the
# service layer, as the API would, and print their ids.
CREATE_SNIPPET = """
import json, sys
from app import create_app
from app.services import scheduling
from app.services.principal import SYSTEM

spec = json.loads(sys.argv[1])
app = create_app()
ids = {"cron": [], "interval": []}
with app.app_context():
    for n in range(spec["cron"]):
        fields = {"client_id": spec["client_id"], "task_type": f"bench-cron-{n}",
                  "capability_required": spec["capability"],
                  "cron_expression": spec["cron_expression"], "timezone": "UTC"}
        ids["cron"].append(scheduling.create_schedule(SYSTEM, fields).id)
    for n in range(spec["interval"]):
        fields = {"client_id": spec["client_id"], "task_type": f"bench-interval-{n}",
                  "capability_required": spec["capability"],
                  "interval_seconds": spec["interval_seconds"], "timezone": "UTC"}
        ids["interval"].append(scheduling.create_schedule(SYSTEM, fields).id)
print("BENCH-IDS " + json.dumps(ids))
"""


# --------------------------------------------------------------------------- helpers


def summary(ms: list[float]) -> dict[str, float | int | None]:
    """n, min, p50, p95, p99, max of values already in milliseconds (min < 0: fired early)."""
    return {
        "n": len(ms),
        "min": min(ms) if ms else None,
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "max": max(ms) if ms else None,
    }


def utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def checkout(ref: str | None) -> tuple[Path, str]:
    """The code to run and how to name it: the working tree, or ``ref`` exported with
    ``git archive`` into bench/results/tmp/ (as bench/dispatch.py does)."""
    if ref is None:
        try:
            head = git("rev-parse", "--short", "HEAD")
            dirty = git("status", "--porcelain", "--", "app", "jobs", "migrations", "wsgi.py")
        except (OSError, subprocess.CalledProcessError):
            return ROOT, f"working tree {ROOT}"
        return ROOT, f"working tree at {head}" + (
            " + local changes in app/, jobs/ or migrations/" if dirty else ""
        )
    sha = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    target = TMP_DIR / f"src-{sha[:12]}"
    if not (target / "wsgi.py").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", sha], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    if not (target / "app" / "services" / "scheduling.py").exists():
        raise SystemExit(f"{ref} = {sha[:12]} has no app/services/scheduling.py: no schedules")
    return target, f"git archive of {ref} = {sha[:12]}"


@dataclass
class Child:
    """A clock or worker in its own process group, output to a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log: Any

    @classmethod
    def start(
        cls, name: str, module: str, app_dir: Path, env: dict[str, str], log_path: Path
    ) -> Child:
        log = open(log_path, "w")  # noqa: SIM115 (closed in stop())
        proc = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=app_dir,
            env={**env, "PGAPPNAME": f"bench-{name}"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return cls(name, proc, log_path, log)

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the process so far (None once it has exited)."""
        try:
            times = psutil.Process(self.proc.pid).cpu_times()
        except psutil.Error:
            return None
        return times.user + times.system

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def wait(self) -> None:
        """Wait for the exit after a SIGTERM; SIGKILL the group after STOP_WAIT."""
        try:
            self.proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(5)
        # Anything left in the group (there should be nothing) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if not self.log.closed:
            self.log.close()


def stop_all(children: list[Child]) -> None:
    for child in children:
        child.signal(signal.SIGTERM)
    for child in children:
        child.wait()


def scan_log(path: Path) -> dict[str, Any]:
    """Tracebacks and the exceptions they end in, other problem lines, firing passes that
    fired something, and rq-scheduler lock misses (expected with two clocks)."""
    problems: list[str] = []
    exceptions: Counter[str] = Counter()
    tracebacks = passes = fired = lock_taken = 0
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("Traceback"):
            tracebacks += 1
        elif EXCEPTION_LINE.match(line):
            exceptions[line[:160]] += 1
        elif any(word in line for word in PROBLEM_WORDS):
            problems.append(line[:300])
        if "Lock already taken" in line:
            lock_taken += 1
        match = re.search(r"schedules: \{.*'fired': (\d+)", line)
        if match:
            passes += 1
            fired += int(match[1])
    return {
        "tracebacks": tracebacks,
        "exceptions": dict(exceptions.most_common(10)),
        "problem_lines": len(problems),
        "first_problems": problems[:20],
        "logged_firing_passes": passes,
        "logged_fired": fired,
        "rq_scheduler_lock_taken": lock_taken,
    }


def tree_changes(app_dir: Path) -> dict[str, str]:
    """Changed and untracked files of the working tree under app/, jobs/ and migrations/,
    each with its blob hash: which version of the work in progress a run measured."""
    if app_dir != ROOT:
        return {}
    try:
        status = git("status", "--porcelain", "-uall", "--", "app", "jobs", "migrations", "wsgi.py")
        changed = [line[3:].split(" -> ")[-1] for line in status.splitlines() if line[3:]]
        return {
            path: git("hash-object", path)[:12] if (ROOT / path).exists() else "deleted"
            for path in changed
        }
    except (OSError, subprocess.CalledProcessError):
        return {}


# --------------------------------------------------------------------------- expected times


def expected_due_times(schedule: dict[str, Any], start: datetime, end: datetime) -> list[datetime]:
    """Due times in [start, end], computed here, independently of app/lib/cron.py: cron
    matches in UTC (croniter), intervals at anchor_at + k x interval_seconds."""
    if schedule["cron_expression"]:
        if schedule["timezone"] != "UTC":
            raise ValueError("only UTC cron schedules are supported here")
        it = croniter(schedule["cron_expression"], start - timedelta(microseconds=1))
        found = []
        while True:
            when = utc(it.get_next(datetime))
            if when > end:
                return found
            found.append(when)
    step = timedelta(seconds=schedule["interval_seconds"])
    anchor = utc(schedule["anchor_at"])
    k = max(1, -(-(start - anchor) // step))  # ceil; the anchor itself is not a due time
    found = []
    while anchor + k * step <= end:
        found.append(anchor + k * step)
        k += 1
    return found


# --------------------------------------------------------------------------- one mode


def align(mode: str) -> None:
    """Wait (at most ~40 s) until a second of the minute from which a run's measured window
    takes in as many minute boundaries (cron due times) as it can: the schedules are created
    and the clocks start a few seconds later, the window starts --warmup after that."""
    second = time.time() % 60
    if not ALIGN_FROM <= second <= ALIGN_UNTIL:
        wait = (ALIGN_FROM - second) % 60
        print(f"[{mode}] waiting {wait:.0f} s to start at second {ALIGN_FROM} of a minute ...")
        time.sleep(wait)


def prepare(
    mode: str, args: argparse.Namespace, app_dir: Path, env: dict[str, str]
) -> dict[str, list[str]]:
    """Fresh schema and Redis DB, the bench trigger, and the schedules."""
    reset_database(args.database_url)
    redis.Redis.from_url(args.redis_url).flushdb()
    flask_cli(app_dir, env, "db", "upgrade")
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(TRIGGER_SQL)  # type: ignore[arg-type]
    if args.align:
        align(mode)
    spec = {
        "cron": args.cron,
        "interval": args.interval,
        "client_id": CLIENT_ID,
        "capability": CAPABILITY,
        "cron_expression": CRON_EXPRESSION,
        "interval_seconds": INTERVAL_SECONDS,
    }
    result = subprocess.run(
        [sys.executable, "-c", CREATE_SNIPPET, json.dumps(spec)],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("BENCH-IDS ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"creating schedules failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1].split(" ", 1)[1])  # type: ignore[no-any-return]


def count_executions(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM schedule_executions").fetchone()
    return int(row[0]) if row else 0


def run_mode(
    mode: str, args: argparse.Namespace, app_dir: Path, base_env: dict[str, str], stamp: str
) -> dict[str, Any]:
    print(f"\n[{mode}] preparing {without_password(args.database_url)} and {args.redis_url} ...")
    ids = prepare(mode, args, app_dir, base_env)
    code = tree_changes(app_dir)
    env = {**base_env, "SCHEDULE_FIRING": mode}
    logs = {name: TMP_DIR / f"schedules-{stamp}-{mode}-{name}.log" for name in PROCESS_NAMES}
    loadavg_start = [round(x, 2) for x in os.getloadavg()]
    xacts_before = pg_transactions(args.database_url)
    busy0, total0 = machine_cpu_ticks()
    started = time.time()
    children: list[Child] = []
    exited_early: dict[str, int | None] = {}
    try:
        children.append(Child.start("worker", "jobs.worker", app_dir, env, logs["worker"]))
        children.append(Child.start("clock-1", "jobs.clock", app_dir, env, logs["clock-1"]))
        children.append(Child.start("clock-2", "jobs.clock", app_dir, env, logs["clock-2"]))
        run_seconds = args.minutes * 60
        print(
            f"[{mode}] {len(ids['cron'])} cron '{CRON_EXPRESSION}' + {len(ids['interval'])} "
            f"every-{INTERVAL_SECONDS}-s schedules; worker + 2 clocks (SCHEDULE_FIRING={mode}) "
            f"running for {run_seconds:.0f} s ...",
            flush=True,
        )
        next_report = started + PROGRESS_EVERY
        while (now := time.time()) < started + run_seconds:
            time.sleep(min(1.0, started + run_seconds - now))
            for child in children:
                if child.proc.poll() is not None and child.name not in exited_early:
                    exited_early[child.name] = child.proc.returncode
                    print(f"[{mode}] {child.name} exited early with {child.proc.returncode}")
            if time.time() >= next_report:
                next_report += PROGRESS_EVERY
                print(
                    f"[{mode}]   {time.time() - started:5.0f} s: "
                    f"{count_executions(args.database_url)} executions",
                    flush=True,
                )
        stopping = time.time()
        cpu = {child.name: child.cpu_seconds() for child in children}
        busy, total = machine_cpu_ticks()
    finally:
        stop_all(children)
    time.sleep(0.5)  # let the exiting backends report their statistics
    commits, rollbacks = (
        after - before
        for after, before in zip(pg_transactions(args.database_url), xacts_before, strict=True)
    )
    wall = stopping - started
    cpus = os.cpu_count() or 1
    machine_busy = (busy - busy0) / (total - total0) if total > total0 else None
    result = analyse(args, ids, from_epoch(started), from_epoch(stopping))
    result.update(
        mode=mode,
        local_changes=code,
        started_at=from_epoch(started).isoformat(timespec="milliseconds"),
        stopped_at=from_epoch(stopping).isoformat(timespec="milliseconds"),
        loadavg_start=loadavg_start,
        loadavg_end=[round(x, 2) for x in os.getloadavg()],
        exited_early=exited_early,
        logs={name: str(path.relative_to(ROOT)) for name, path in logs.items()},
        log_scan={name: scan_log(path) for name, path in logs.items()},
        cpu={
            "wall_s": wall,
            "process_cpu_s": cpu,
            "process_cpu_pct": {
                name: None if sec is None else 100 * sec / wall for name, sec in cpu.items()
            },
            "machine_busy_pct": None if machine_busy is None else 100 * machine_busy,
            "machine_cpu_s": None if machine_busy is None else machine_busy * cpus * wall,
        },
        pg_transactions={
            "commit": commits,
            "rollback": rollbacks,
            "per_second": (commits + rollbacks) / wall if wall else None,
        },
    )
    result["passed"] = bool(
        result["duplicates"] == 0
        and result["missed"] == 0
        and result["unexpected"] == 0
        and result["tasks"]["not_linked"] == 0
        and result["tasks"]["linked_twice"] == 0
        and not exited_early
    )
    return result


def analyse(
    args: argparse.Namespace, ids: dict[str, list[str]], started: datetime, stopping: datetime
) -> dict[str, Any]:
    """Every due time in the window against the executions the database holds."""
    window_start = started + timedelta(seconds=args.warmup)
    window_end = stopping - timedelta(seconds=args.tail)
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        schedules = {
            row[0]: {
                "id": row[0],
                "cron_expression": row[1],
                "interval_seconds": row[2],
                "timezone": row[3],
                "anchor_at": row[4],
                "status": row[5],
                "next_run_at": row[6],
                "last_error": row[7],
            }
            for row in conn.execute(
                "SELECT id, cron_expression, interval_seconds, timezone, anchor_at, status,"
                " next_run_at, last_error FROM schedules"
            )
        }
        executions = conn.execute(
            "SELECT e.schedule_id, e.scheduled_for, e.fired_at, e.trigger, e.task_id, e.note,"
            " i.inserted_at, i.inserted_by FROM schedule_executions e"
            " LEFT JOIN bench_execution_inserts i ON i.execution_id = e.id"
        ).fetchall()
        task_rows = conn.execute("SELECT t.id, t.created_by, t.status FROM tasks t").fetchall()
    kind_of = {sid: kind for kind, sids in ids.items() for sid in sids}
    expected = {
        sid: set(expected_due_times(s, window_start, window_end)) for sid, s in schedules.items()
    }
    per_due: Counter[tuple[str, datetime]] = Counter()
    lateness: dict[str, list[float]] = defaultdict(list)  # fired_at - due
    insert_lateness: dict[str, list[float]] = defaultdict(list)  # row inserted - due
    by_process: Counter[str] = Counter()
    triggers: Counter[str] = Counter()
    unexpected: list[dict[str, str]] = []
    notes: Counter[str] = Counter()
    # Every cron schedule is due at the same instants: how long each burst took to fire.
    bursts: dict[datetime, list[tuple[float, str]]] = defaultdict(list)
    for sid, due, fired, trigger, _task_id, note, inserted, inserted_by in executions:
        due, fired = utc(due), utc(fired)
        if not window_start <= due <= window_end:
            continue
        kind = kind_of.get(sid, "other")
        per_due[(sid, due)] += 1
        triggers[trigger] += 1
        by_process[(inserted_by or "?").removeprefix("bench-")] += 1
        if note:
            notes[note.split(":")[0]] += 1
        if due not in expected.get(sid, set()):
            unexpected.append({"schedule_id": sid, "scheduled_for": due.isoformat()})
        late = (fired - due).total_seconds() * 1000
        lateness[kind].append(late)
        lateness["all"].append(late)
        if inserted is not None:
            ins = (utc(inserted) - due).total_seconds() * 1000
            insert_lateness[kind].append(ins)
            insert_lateness["all"].append(ins)
            if kind == "cron":
                bursts[due].append((ins, (inserted_by or "?").removeprefix("bench-")))
    duplicates = sum(n - 1 for n in per_due.values() if n > 1)
    missed = [
        {"schedule_id": sid, "kind": kind_of.get(sid, "other"), "scheduled_for": due.isoformat()}
        for sid, dues in expected.items()
        for due in sorted(dues)
        if per_due[(sid, due)] == 0
    ]
    expected_counts = Counter()
    for sid, dues in expected.items():
        expected_counts[kind_of.get(sid, "other")] += len(dues)
    linked = Counter(row[4] for row in executions if row[4])
    task_ids = {row[0] for row in task_rows}
    return {
        "window": {
            "start": window_start.isoformat(timespec="milliseconds"),
            "end": window_end.isoformat(timespec="milliseconds"),
            "seconds": (window_end - window_start).total_seconds(),
            "warmup_s": args.warmup,
            "tail_s": args.tail,
        },
        "schedules": {kind: len(sids) for kind, sids in ids.items()},
        "expected_due_times": dict(expected_counts),
        "executions_in_window": sum(per_due.values()),
        "executions_total": len(executions),
        "triggers_in_window": dict(triggers),
        "skip_notes_in_window": dict(notes),
        "fired_by_process_in_window": dict(by_process),
        "duplicates": duplicates,
        "missed": len(missed),
        "missed_list": missed[:50],
        "unexpected": len(unexpected),
        "unexpected_list": unexpected[:50],
        "lateness_ms": {k: summary(v) for k, v in sorted(lateness.items())},
        "insert_lateness_ms": {k: summary(v) for k, v in sorted(insert_lateness.items())},
        "cron_bursts": [
            {
                "due": due.isoformat(),
                "n": len(rows),
                "first_row_in_ms": min(ms for ms, _ in rows),
                "last_row_in_ms": max(ms for ms, _ in rows),
                "by": dict(Counter(by for _, by in rows)),
            }
            for due, rows in sorted(bursts.items())
        ],
        "tasks": {
            "total": len(task_rows),
            "by_status": dict(Counter(row[2] for row in task_rows)),
            "executions_with_task": sum(1 for row in executions if row[4]),
            "not_linked": len(task_ids - set(linked)),
            "linked_twice": sum(1 for n in linked.values() if n > 1),
            "missing": len(set(linked) - task_ids),
        },
        "schedules_not_active": {
            sid: f"{s['status']}: {s['last_error']}"
            for sid, s in schedules.items()
            if s["status"] != "ACTIVE"
        },
    }


# --------------------------------------------------------------------------- report


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def quad(stats: dict[str, Any] | None) -> str:
    """p50 / p95 / p99 / max (n) of a summary in ms."""
    if not stats or not stats["n"]:
        return "-"
    return " / ".join(fmt(stats[k], 0) for k in ("p50", "p95", "p99", "max")) + f" ({stats['n']})"


def joined(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"


def per_process(m: dict[str, Any], key: str, names: tuple[str, ...] = PROCESS_NAMES) -> str:
    return " / ".join(str(m["log_scan"][n][key]) for n in names)


def cpu_cell(m: dict[str, Any], name: str) -> str:
    cpu = m["cpu"]
    return (
        f"{fmt(cpu['process_cpu_s'].get(name), 2)} ({fmt(cpu['process_cpu_pct'].get(name), 2)} %)"
    )


ROWS: list[tuple[str, Any]] = [
    ("SCHEDULE_FIRING", lambda m: m["mode"]),
    ("load average start -> end", lambda m: f"{m['loadavg_start'][0]} -> {m['loadavg_end'][0]}"),
    ("window (s)", lambda m: fmt(m["window"]["seconds"])),
    (
        "due times expected cron / interval",
        lambda m: " / ".join(str(m["expected_due_times"].get(k, 0)) for k in ("cron", "interval")),
    ),
    ("executions in window", lambda m: fmt(m["executions_in_window"])),
    ("triggers in window", lambda m: joined(m["triggers_in_window"])),
    ("DUPLICATES", lambda m: fmt(m["duplicates"])),
    ("MISSED", lambda m: fmt(m["missed"])),
    ("not a due time (off-grid)", lambda m: fmt(m["unexpected"])),
    ("", None),
    ("lateness ms: p50 / p95 / p99 / max (n)", None),
    *(
        (f"  {label}: {kind}", lambda m, key=key, kind=kind: quad(m[key].get(kind)))
        for key, label in (
            ("lateness_ms", "fired_at - due"),
            ("insert_lateness_ms", "row in - due"),
        )
        for kind in ("all", "cron", "interval")
    ),
    (
        "  earliest: fired_at / row in - due",
        lambda m: " / ".join(
            fmt(m[key].get("all", {}).get("min"), 0)
            for key in ("lateness_ms", "insert_lateness_ms")
        ),
    ),
    (
        "cron bursts: first-last row in (ms)",
        lambda m: (
            ", ".join(
                f"{b['first_row_in_ms']:.0f}-{b['last_row_in_ms']:.0f}" for b in m["cron_bursts"]
            )
            or "-"
        ),
    ),
    ("", None),
    ("fired by (in window)", lambda m: joined(m["fired_by_process_in_window"])),
    (
        "tasks total / executions with a task",
        lambda m: f"{m['tasks']['total']} / {m['tasks']['executions_with_task']}",
    ),
    (
        "tasks not linked / linked twice",
        lambda m: f"{m['tasks']['not_linked']} / {m['tasks']['linked_twice']}",
    ),
    *(
        (f"CPU s {name} (% of wall)", lambda m, name=name: cpu_cell(m, name))
        for name in PROCESS_NAMES
    ),
    (
        "machine busy % (CPU-s)",
        lambda m: f"{fmt(m['cpu']['machine_busy_pct'])} ({fmt(m['cpu']['machine_cpu_s'], 0)})",
    ),
    ("PG transactions/s", lambda m: fmt(m["pg_transactions"]["per_second"])),
    ("tracebacks clock-1 / clock-2 / worker", lambda m: per_process(m, "tracebacks")),
    ("other ERROR lines c1 / c2 / worker", lambda m: per_process(m, "problem_lines")),
    (
        "rq-scheduler 'lock taken' c1 / c2",
        lambda m: per_process(m, "rq_scheduler_lock_taken", PROCESS_NAMES[:2]),
    ),
    ("processes exited early", lambda m: ", ".join(m["exited_early"]) or "none"),
    ("schedules not ACTIVE", lambda m: str(len(m["schedules_not_active"]))),
    ("verdict", lambda m: "PASS" if m["passed"] else "FAIL"),
]


def print_report(result: dict[str, Any]) -> None:
    env = result["environment"]
    modes = result["modes"]
    args = result["args"]
    print()
    print("=" * 110)
    print("AINS schedule firing benchmark")
    print("=" * 110)
    print(
        f"  {env['cpu_count']} CPUs shared by the 2 clocks, the worker, PostgreSQL, Redis and "
        f"anything else running; {env['platform']}"
    )
    print(f"  database: {env['database']}   redis: {env['redis']}")
    print(f"  app: {env['app']}")
    print(
        f"  {args['cron']} cron '{CRON_EXPRESSION}' (UTC) + {args['interval']} every "
        f"{INTERVAL_SECONDS} s schedules, {args['minutes']} min per mode; the window leaves "
        f"out the first {args['warmup']} s and the last {args['tail']} s"
    )
    print()
    for label, cell in ROWS:
        values = [cell(m) for m in modes.values()] if cell else []
        print(f"  {label:<40}" + "".join(f"{v:>34}" for v in values))
    for name, m in modes.items():
        for proc, scan in m["log_scan"].items():
            for line, count in scan["exceptions"].items():
                print(f"  [{name} {proc}] {count} x {line}")
            for line in scan["first_problems"][:3]:
                print(f"  [{name} {proc}] {line}")
        for miss in m["missed_list"][:5]:
            print(f"  [{name}] missed {miss}")
        print(f"  [{name}] logs: {', '.join(m['logs'].values())}")
    print(f"Verdict: {'PASS' if result['passed'] else 'FAIL'}")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/ains_bench_sched",
        help="PostgreSQL database whose public schema is DROPPED and recreated",
    )
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/7", help="Redis DB that is FLUSHED"
    )
    parser.add_argument(
        "--mode",
        choices=("precise", "tick", "both"),
        default="both",
        help="SCHEDULE_FIRING of the clocks; both = precise, then tick on a fresh schema",
    )
    parser.add_argument("--minutes", type=float, default=3, help="run time per mode")
    parser.add_argument("--cron", type=int, default=50, help=f"'{CRON_EXPRESSION}' schedules")
    parser.add_argument(
        "--interval", type=int, default=10, help=f"every-{INTERVAL_SECONDS}-s schedules"
    )
    parser.add_argument(
        "--warmup", type=float, default=10, help="seconds after the start left out of the window"
    )
    parser.add_argument(
        "--tail",
        type=float,
        default=5,
        help="seconds before the stop left out of the window (a due time must fire within it)",
    )
    parser.add_argument(
        "--no-align",
        dest="align",
        action="store_false",
        help="start at once instead of at a second of the minute that puts the most cron "
        "due times in the window",
    )
    parser.add_argument(
        "--ref",
        default=None,
        help="run this git revision (exported to bench/results/tmp/) instead of the working tree",
    )
    parser.add_argument(
        "--reset-any-database",
        action="store_true",
        help="allow a --database-url whose name lacks 'bench' (its public schema is dropped)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.cron < 0 or args.interval < 0 or args.cron + args.interval < 1:
        parser.error("--minutes must be positive and there must be at least one schedule")
    if args.warmup < 0 or args.tail < 0 or args.warmup + args.tail >= args.minutes * 60:
        parser.error("--warmup + --tail must be shorter than the run")
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
    stamp = time.strftime("%Y%m%d-%H%M%S")
    app_dir, app_label = checkout(args.ref)
    env = dict(os.environ)
    env.update(
        DATABASE_URL=args.database_url,
        REDIS_URL=args.redis_url,
        SECRET_KEY="bench-secret-key",
        PYTHONUNBUFFERED="1",
    )
    env.pop("SCHEDULE_FIRING", None)
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
        "modes": {},
    }
    for mode in ("precise", "tick") if args.mode == "both" else (args.mode,):
        result["modes"][mode] = run_mode(mode, args, app_dir, env, stamp)
    result["passed"] = all(m["passed"] for m in result["modes"].values())
    return result


def main(argv: list[str] | None = None) -> int:
    return run_main(parse_args(argv), run, print_report, "clocks and worker")


if __name__ == "__main__":
    sys.exit(main())
