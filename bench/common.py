"""Helpers shared by the benchmarks in bench/: percentiles and summaries, the server and its
children (gunicorn, RQ worker, clock) in their own process groups, schema reset, API keys,
CPU accounting from /proc, and the HTTP session an agent or client uses.

bench/ is not a package: each script puts its own directory on sys.path and imports this.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
TMP_DIR = ROOT / "bench" / "results" / "tmp"
HTTP_TIMEOUT = 30.0  # per request, on top of any long-poll wait

# --------------------------------------------------------------------------- helpers


def percentile(values: list[float], pct: float) -> float | None:
    """Linear-interpolated percentile (pct in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(seconds: list[float]) -> dict[str, float | int | None]:
    """n, p50, p95, p99, max in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "max": max(ms) if ms else None,
    }


def parse_time(value: str) -> float:
    """Epoch seconds of an ISO 8601 timestamp with offset."""
    return datetime.fromisoformat(value).timestamp()


def without_password(url: str) -> str:
    """The URL with any password replaced, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs, from /proc/stat; (0, 0) if unavailable."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def process_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (those still alive)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                # Fields after the ")" closing the command name; utime and stime are 14, 15.
                rest = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(rest[11]) + int(rest[12])) / ticks
    return total


def child_pids(pid: int) -> list[int]:
    """Direct children of a process (the gunicorn workers of the master)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            rest = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(rest[1]) == pid:
            found.append(int(entry.name))
    return found


class Meter:
    """A scenario's resource use: CPU of the machine, of gunicorn and of this load generator,
    and PostgreSQL backends of the bench database (sampled: connected, active, lock waits)."""

    SAMPLE_EVERY = 0.25

    def __init__(self, server_pids: list[int], database_url: str) -> None:
        self.server_pids = server_pids
        self.database_url = database_url
        self.samples: list[tuple[int, int, int]] = []
        self.stop = threading.Event()
        self.busy0, self.total0 = machine_cpu_ticks()
        self.server0 = process_cpu_seconds(server_pids)
        self.self0 = time.process_time()
        self.wall0 = time.monotonic()
        self.sampler = threading.Thread(target=self.sample, name="pg-sampler", daemon=True)
        self.sampler.start()

    def sample(self) -> None:
        query = (
            "SELECT count(*), count(*) FILTER (WHERE state = 'active'),"
            " count(*) FILTER (WHERE wait_event_type = 'Lock')"
            " FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        try:
            with psycopg.connect(self.database_url, autocommit=True) as conn:
                while not self.stop.wait(self.SAMPLE_EVERY):
                    row = conn.execute(query).fetchone()
                    if row:
                        self.samples.append((int(row[0]), int(row[1]), int(row[2])))
        except psycopg.Error:
            pass  # the figures are then missing, which the report shows as "-"

    def read(self, tasks: int) -> dict[str, float | int | None]:
        busy, total = machine_cpu_ticks()
        wall = time.monotonic() - self.wall0
        server_cpu = process_cpu_seconds(self.server_pids) - self.server0
        self.stop.set()
        self.sampler.join(2)
        cpus = os.cpu_count() or 1
        machine_busy = (busy - self.busy0) / (total - self.total0) if total > self.total0 else None
        columns = list(zip(*self.samples, strict=True)) or [(), (), ()]
        return {
            "wall_s": wall,
            "machine_busy_pct": None if machine_busy is None else 100 * machine_busy,
            "machine_cpu_s": None if machine_busy is None else machine_busy * cpus * wall,
            "gunicorn_cpu_s": server_cpu,
            "gunicorn_cpu_ms_per_task": 1000 * server_cpu / tasks if tasks else None,
            "loadgen_cpu_s": time.process_time() - self.self0,
            "pg_samples": len(self.samples),
            "pg_connections_max": max(columns[0], default=None),
            "pg_active_max": max(columns[1], default=None),
            "pg_active_mean": sum(columns[1]) / len(columns[1]) if columns[1] else None,
            "pg_lock_waits_max": max(columns[2], default=None),
        }


# --------------------------------------------------------------------------- HTTP


@dataclass
class ErrorLog:
    """Every non-2xx answer and transport error, thread-safe."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    entries: list[dict[str, Any]] = field(default_factory=list)

    def add(self, scenario: str, what: str, status: int | None, detail: str) -> None:
        with self.lock:
            self.entries.append(
                {"scenario": scenario, "call": what, "status": status, "detail": detail[:300]}
            )

    def counts(self) -> dict[str, int]:
        with self.lock:
            return dict(Counter(f"{e['scenario']} {e['call']} {e['status']}" for e in self.entries))


class Api:
    """A keep-alive session bound to one API key."""

    def __init__(self, base: str, key: str) -> None:
        self.base = base
        self.key = key
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"

    def call(
        self, method: str, path: str, body: Any = None, timeout: float = HTTP_TIMEOUT
    ) -> requests.Response:
        return self.session.request(method, self.base + path, json=body, timeout=timeout)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON of a 2xx answer; anything else raises with the body."""
        response = self.call(method, path, body)
        if not response.ok:
            raise RuntimeError(f"{method} {path} -> {response.status_code}: {response.text[:500]}")
        return response.json()

    def close(self) -> None:
        self.session.close()


# --------------------------------------------------------------------------- setup


def reset_database(url: str) -> None:
    """Create the database if missing, then drop and recreate its public schema."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")


def pg_transactions(url: str) -> tuple[int, int]:
    """(commits, rollbacks) of the database so far; backends report them when they exit."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def checkout(ref: str | None) -> tuple[Path, str]:
    """The code to serve and how to name it: the working tree, or ``ref`` exported with
    ``git archive`` (so work in progress in the tree cannot break or skew a run)."""
    if ref is None:
        try:
            head = git("rev-parse", "--short", "HEAD")
            dirty = git("status", "--porcelain", "--", "app", "migrations", "wsgi.py")
        except (OSError, subprocess.CalledProcessError):
            return ROOT, f"working tree {ROOT}"
        return ROOT, f"working tree at {head}" + (" + local changes in app/" if dirty else "")
    sha = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    target = TMP_DIR / f"src-{sha[:12]}"
    if not (target / "wsgi.py").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", sha], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target, f"git archive of {ref} = {sha[:12]}"


def flask_cli(app_dir: Path, env: dict[str, str], *args: str) -> str:
    """Run ``flask --app wsgi ...``; its stdout (raises with stderr on failure)."""
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"flask {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def create_key(app_dir: Path, env: dict[str, str], role: str, name: str, *extra: str) -> str:
    lines = flask_cli(
        app_dir, env, "keys", "create", "--role", role, "--name", name, *extra
    ).splitlines()
    return lines[-1].strip()


class Server:
    """gunicorn in its own process group, output to a log file."""

    def __init__(self, app_dir: Path, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.log = open(log_path, "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--config",
                "gunicorn.conf.py",
                # The app's settings, plus the time taken and the worker in each access line.
                "--access-logformat",
                ACCESS_FORMAT,
                "wsgi:app",
            ],
            cwd=app_dir,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_healthy(self, url: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not become healthy; log:\n{self.tail()}")

    def pids(self) -> list[int]:
        return [self.proc.pid, *child_pids(self.proc.pid)]

    def tail(self, lines: int = 40) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the group, SIGKILL after 10 s."""
        stop_group(self.proc, 10)
        self.log.close()


def stop_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM a child's process group, SIGKILL it after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


ACCESS_FORMAT = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms pid=%(p)s'
ACCESS_LINE = re.compile(
    r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) \S+ (?P<ms>\d+)ms'
    r" pid=<(?P<pid>\d+)>"
)


def mark_log(base: str, section: str) -> None:
    """Leave a marker in the access log so its lines can be split by scenario."""
    with contextlib.suppress(requests.RequestException):
        requests.get(f"{base}/health", params={"bench": section}, timeout=5)


def scan_server_log(path: Path) -> dict[str, Any]:
    """From gunicorn's output: per scenario and route, status codes, time taken in the
    server (ms) and requests per worker; plus lines that look like errors."""
    sections: dict[str, dict[str, Any]] = {}
    section = "setup"
    problems: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        match = ACCESS_LINE.search(line)
        if not match:
            if any(w in line for w in ("Traceback", " ERROR ", "CRITICAL", "TIMEOUT", "deadlock")):
                problems.append(line[:300])
            continue
        if "bench=" in match["path"]:
            section = match["path"].split("bench=", 1)[1]
            continue
        route = re.sub(r"(agent|task)_[0-9a-f]+", r"\1_*", match["path"].split("?")[0])
        data = sections.setdefault(section, {"status": Counter(), "ms": {}, "workers": Counter()})
        data["status"][f"{match['method']} {route} {match['status']}"] += 1
        data["ms"].setdefault(f"{match['method']} {route}", []).append(int(match["ms"]) / 1000)
        data["workers"][match["pid"]] += 1
    return {
        "sections": {
            name: {
                "status": dict(sorted(data["status"].items())),
                "server_ms": {route: summary_ms(times) for route, times in data["ms"].items()},
                "requests_per_worker": sorted(data["workers"].values(), reverse=True),
            }
            for name, data in sections.items()
        },
        "error_lines": problems[:50],
    }


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def run_main(
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace], dict[str, Any]],
    print_report: Callable[[dict[str, Any]], None],
    stopped: str,
) -> int:
    """A benchmark's main: run, report, write ``--json``; 1 if a check failed, 130 if
    interrupted (``stopped`` says what the finally blocks stopped)."""
    # SIGTERM (and SIGINT even when started in the background) behave like Ctrl-C, so the
    # finally blocks stop the processes.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = run(args)
    except KeyboardInterrupt:
        print(f"interrupted: {stopped} stopped, no results", file=sys.stderr)
        return 130
    print_report(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"results written to {args.json}")
    return 0 if result["passed"] else 1


# --------------------------------------------------------------------------- more processes


def check_bench_database(url: str, reset_any: bool = False) -> str | None:
    """Why ``url`` must not be reset (None if it may): not PostgreSQL, or a database whose
    name lacks "bench" (its public schema would be dropped) unless ``reset_any``."""
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgres"):
        return f"{without_password(url)} is not a postgresql:// URL"
    if "bench" not in parts.path and not reset_any:
        return (
            f"{without_password(url)} names no 'bench' database; its public schema would be "
            "dropped (pass --reset-any-database if that is what you want)"
        )
    return None


def tree_pids(pid: int) -> list[int]:
    """A process and all its descendants (gunicorn's master and workers, say)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            rest = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(entry.name)] = int(rest[1])
    found = [pid]
    for candidate in found:
        found.extend(p for p, parent in parents.items() if parent == candidate)
    return found


def pids_named(*prefixes: str) -> list[int]:
    """Processes whose command name (/proc/<pid>/comm) starts with one of ``prefixes``:
    every ``postgres`` process of the machine, or ``redis-server``."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if name.startswith(prefixes):
            found.append(int(entry.name))
    return found


class Child:
    """A Procfile process (``python -m jobs.worker`` / ``jobs.clock``) in its own process
    group, output to a log file."""

    def __init__(
        self, name: str, module: str, app_dir: Path, env: dict[str, str], log_path: Path
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.log = open(log_path, "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=app_dir,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def pids(self) -> list[int]:
        return tree_pids(self.proc.pid)

    def stop(self, grace: float = 15) -> None:
        stop_group(self.proc, grace)
        self.log.close()
