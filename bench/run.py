"""The issue-11 benchmark (``make bench``): AINS against Celery and RQ on this machine.

S1 submit, S2 drain and S3 latency run ``--runs`` times for every system, interleaved
(each run: S1 for ains, celery, rq-fork, rq-simple, then S2 for each, then S3), so that
noise on the machine hits all alike; the medians are compared. S4 (idle cost) and S5
(soak) are AINS-only and run once. Prints a table, writes ``--json`` and a PNG chart.

    .venv/bin/python bench/run.py                 # the whole thing (about 30 min)
    .venv/bin/python bench/run.py --quick         # a smoke run (a few minutes)

AINS runs in this process (bench/ains.py, the AINS environment); the baselines run as
``bench/.venv/bin/python bench/baselines.py`` subprocesses (their own environment).
It DROPS the public schema of --database-url and FLUSHES the Redis DBs of --redis-url and
--baseline-redis-url. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ains  # bench/ is not a package
from common import ROOT, TMP_DIR, check_bench_database, git, stop_group

BENCH = ROOT / "bench"
BASELINE_PYTHON = BENCH / ".venv" / "bin" / "python"
SYSTEMS = ("ains", "celery", "rq-fork", "rq-simple")
SCENARIOS = ("s1", "s2", "s3", "s4", "s5")
BASELINE_TIMEOUT = 1800.0  # seconds one baseline subprocess may take
# Which figures are compared, and which way is better.
HIGHER = {"batch_tasks_per_s", "tasks_per_s", "single_rate_achieved", "rate_achieved"}
RATIO_FIGURES = {
    "s1": ("batch_tasks_per_s", "single_p50_ms", "single_p99_ms"),
    "s2": ("tasks_per_s",),
    "s3": ("claimed_p50_ms", "claimed_p99_ms", "completed_p50_ms", "completed_p99_ms"),
}
TABLE = {
    "s1": (
        ("single_p50_ms", "single POST p50 ms"),
        ("single_p99_ms", "single POST p99 ms"),
        ("single_rate_achieved", "single rate achieved /s"),
        ("batch_tasks_per_s", "batch submit tasks/s"),
    ),
    "s2": (("tasks_per_s", "drain tasks/s"), ("seconds", "drain seconds")),
    "s3": (
        ("claimed_p50_ms", "created->claimed p50 ms"),
        ("claimed_p99_ms", "created->claimed p99 ms"),
        ("completed_p50_ms", "created->completed p50 ms"),
        ("completed_p99_ms", "created->completed p99 ms"),
        ("rate_achieved", "rate achieved /s"),
    ),
}
# Issue 11's targets by figure (bench/chart.py draws them); target_checks judges them.
TARGETS = {
    "s2_tasks_per_s": 1500.0,
    "s2_ratio_celery": 1.2,
    "s2_ratio_rq_fork": 3.0,
    "s1_batch_tasks_per_s": 8000.0,
    "s1_single_p50_ms": 3.0,
    "s1_single_p99_ms": 15.0,
    "s3_claimed_p50_ms": 10.0,
    "s3_claimed_p99_ms": 50.0,
    "s4_server_db_cpu_pct": 5.0,
    "s4_queries_per_s": 20.0,
    "s5_drift_pct": 10.0,
}
CHILDREN: list[subprocess.Popen] = []  # baseline subprocesses alive, stopped on exit


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


# --------------------------------------------------------------------------- running


def baseline_tasks(system: str, sizes: dict[str, Any]) -> int:
    """How many tasks a baseline's S1 batch and S2 drain use.

    RQ runs a job at a time per worker (the forking pool forks for each one), some tens of
    jobs a second here: 20,000 would take the forking pool over 20 minutes a run. Its rate
    settles within a few thousand jobs, so RQ gets ``rq_tasks`` (the JSON records it).
    """
    if system.startswith("rq-"):
        return min(sizes["tasks"], sizes["rq_tasks"])
    return sizes["tasks"]


def run_baseline(system: str, scenario: str, args: argparse.Namespace) -> dict[str, Any]:
    """One baselines.py run as a subprocess in its own process group; its JSON object."""
    sizes = args.sizes
    command = [
        str(BASELINE_PYTHON),
        str(BENCH / "baselines.py"),
        "--system",
        system,
        "--scenario",
        scenario,
        "--redis-url",
        args.baseline_redis_url,
        "--tasks",
        str(baseline_tasks(system, sizes)),
        "--workers",
        "4",
        "--concurrency",
        "8",
    ]
    if scenario == "s1":
        command += ["--rate", str(sizes["s1_rate"]), "--duration", str(sizes["s1_seconds"])]
    elif scenario == "s3":
        command += ["--rate", str(sizes["s3_rate"]), "--duration", str(sizes["s3_seconds"])]
    out = Path(tempfile.mkstemp(prefix=f"baseline-{system}-{scenario}-", suffix=".json")[1])
    command += ["--json", str(out)]
    log_path = TMP_DIR / f"baseline-{time.strftime('%Y%m%d-%H%M%S')}-{system}-{scenario}.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
            start_new_session=True,
        )
        CHILDREN.append(proc)
        try:
            stdout, _ = proc.communicate(timeout=BASELINE_TIMEOUT)
        except subprocess.TimeoutExpired:
            stop_group(proc, 10)
            stdout = ""
        finally:
            stop_group(proc, 10)
            CHILDREN.remove(proc)
    result: dict[str, Any] | None = None
    with contextlib.suppress(OSError, ValueError):
        text = out.read_text()
        if text.strip():
            result = json.loads(text)
    if result is None:
        with contextlib.suppress(ValueError):
            result = json.loads(stdout[stdout.find("{") :]) if "{" in stdout else None
    out.unlink(missing_ok=True)
    if result is None:
        result = {
            "figures": {},
            "checks": {
                "ok": False,
                "problems": [f"no JSON from baselines.py (exit {proc.returncode}); see {log_path}"],
            },
        }
    result["log"] = str(log_path.relative_to(ROOT))
    return result


def run_ains(scenario: str, args: argparse.Namespace, soak_rate: float | None) -> dict[str, Any]:
    target = ains.Target(
        args.database_url, args.redis_url, args.port, args.web_workers, args.web_threads
    )
    sizes = args.sizes
    try:
        if scenario == "s1":
            return ains.s1_submit(target, sizes["s1_rate"], sizes["s1_seconds"], sizes["tasks"])
        if scenario == "s2":
            return ains.s2_drain(target, sizes["tasks"])
        if scenario == "s3":
            return ains.s3_latency(target, sizes["s3_rate"], sizes["s3_seconds"])
        if scenario == "s4":
            return ains.s4_idle(target, seconds=sizes["s4_seconds"])
        bucket = min(60.0, args.soak_seconds / 3)
        return ains.s5_soak(target, soak_rate, args.soak_seconds, bucket, args.retention_days)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a crashed scenario is a failed run, not the end of the bench
        return {
            "figures": {},
            "checks": {"ok": False, "problems": [f"crashed: {exc!r}"[:2000]]},
        }


def short(result: dict[str, Any]) -> str:
    figures = result.get("figures", {})
    shown = ", ".join(
        f"{k} {fmt(v)}" for k, v in figures.items() if isinstance(v, int | float | type(None))
    )
    ok = result.get("checks", {}).get("ok")
    problems = result.get("checks", {}).get("problems") or []
    return f"{shown}; checks {'OK' if ok else 'FAILED: ' + '; '.join(map(str, problems))[:400]}"


# --------------------------------------------------------------------------- summary


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the median over the runs that passed their checks (all runs when none
    did); non-numeric figures from the last run."""
    good = [r for r in runs if r.get("checks", {}).get("ok")] or runs
    names: list[str] = []
    for run in good:
        names += [n for n in run.get("figures", {}) if n not in names]
    out: dict[str, Any] = {}
    for name in names:
        values = [r["figures"].get(name) for r in good]
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        out[name] = statistics.median(numbers) if numbers else values[-1]
    return out


def ratios(scenarios: dict[str, Any]) -> dict[str, Any]:
    """AINS / baseline of each compared figure's median (for a latency, < 1 is better)."""
    found: dict[str, Any] = {}
    for scenario, figures in RATIO_FIGURES.items():
        systems = scenarios.get(scenario, {})
        mine = systems.get("ains", {}).get("median", {})
        for system, data in systems.items():
            if system == "ains":
                continue
            for figure in figures:
                a, b = mine.get(figure), data.get("median", {}).get(figure)
                if isinstance(a, int | float) and isinstance(b, int | float) and b:
                    found[f"{scenario}.{figure}.ains/{system}"] = a / b
    return found


def target_check(
    name: str, value: Any, limit: float, higher: bool, unit: str = ""
) -> dict[str, Any]:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return {"target": name, "value": value, "status": "n/a"}
    met = value >= limit if higher else value <= limit
    if met:
        margin = (
            f"{value / limit:.2f} x the target"
            if higher
            else f"{limit - value:,.1f}{unit} to spare"
        )
    elif higher:
        margin = f"{value / limit:.0%} of the target ({limit - value:,.1f}{unit} short)"
    else:
        margin = f"{value - limit:,.1f}{unit} over ({value / limit:.1f} x the limit)"
    return {"target": name, "value": value, "status": "PASS" if met else "MISS", "margin": margin}


def targets(scenarios: dict[str, Any], found_ratios: dict[str, Any]) -> list[dict[str, Any]]:
    def med(scenario: str, figure: str, system: str = "ains") -> Any:
        return scenarios.get(scenario, {}).get(system, {}).get("median", {}).get(figure)

    checks = []
    if "s2" in scenarios:
        checks.append(target_check("S2 >= 1,500 tasks/s", med("s2", "tasks_per_s"), 1500, True))
        for system, times in (("celery", 1.2), ("rq-fork", 3.0)):
            ratio = found_ratios.get(f"s2.tasks_per_s.ains/{system}")
            checks.append(target_check(f"S2 >= {times} x {system}", ratio, times, True, " x"))
    if "s1" in scenarios:
        checks += [
            target_check("S1 batch >= 8,000 tasks/s", med("s1", "batch_tasks_per_s"), 8000, True),
            target_check("S1 single p50 <= 3 ms", med("s1", "single_p50_ms"), 3, False, " ms"),
            target_check("S1 single p99 <= 15 ms", med("s1", "single_p99_ms"), 15, False, " ms"),
        ]
    if "s3" in scenarios:
        checks += [
            target_check(
                "S3 created->claimed p50 <= 10 ms", med("s3", "claimed_p50_ms"), 10, False, " ms"
            ),
            target_check(
                "S3 created->claimed p99 <= 50 ms", med("s3", "claimed_p99_ms"), 50, False, " ms"
            ),
        ]
    if "s4" in scenarios:
        checks += [
            target_check(
                "S4 server + database <= 5 % of a core",
                med("s4", "server_db_cpu_pct"),
                5,
                False,
                " %",
            ),
            target_check("S4 <= 20 queries/s", med("s4", "pg_transactions_per_s"), 20, False, "/s"),
        ]
    if "s5" in scenarios:
        for figure in ("throughput_drift", "p99_drift"):
            value = med("s5", figure)
            checks.append(
                target_check(
                    f"S5 {figure.replace('_', ' ')} within 10 %",
                    abs(value) * 100 if isinstance(value, int | float) else None,
                    10,
                    False,
                    " %",
                )
            )
        plateau = med("s5", "tables_plateaued")
        checks.append(
            {
                "target": "S5 tables bounded",
                "value": plateau,
                "status": "n/a" if plateau is None else ("PASS" if plateau else "MISS"),
            }
        )
    return checks


def print_table(result: dict[str, Any]) -> None:
    scenarios = result["scenarios"]
    systems = [s for s in SYSTEMS if any(s in scenarios.get(sc, {}) for sc in TABLE)]
    width = 28
    print()
    print("=" * 96)
    print(
        f"AINS vs Celery and RQ — medians of {result['params']['runs']} run(s)   {result['date']}"
    )
    machine = result["machine"]
    print(
        f"{machine['cpus']} CPUs, load average at start {machine['loadavg_start']}, "
        f"{machine['platform']}; git {result['git']}"
    )
    print("=" * 96)
    header = f"{'':<{width}}" + "".join(f"{s:>14}" for s in systems)
    for scenario, rows in TABLE.items():
        if scenario not in scenarios:
            continue
        print(f"\n{scenario.upper()}{header[len(scenario) :]}")
        for figure, label in rows:
            cells = []
            for system in systems:
                data = scenarios[scenario].get(system)
                value = data["median"].get(figure) if data else None
                ok = data and all(r.get("checks", {}).get("ok") for r in data["runs"])
                cells.append(fmt(value) + ("" if ok or value is None else "!"))
            print(f"  {label:<{width - 2}}" + "".join(f"{c:>14}" for c in cells))
    for scenario in ("s4", "s5"):
        data = scenarios.get(scenario, {}).get("ains")
        if not data:
            continue
        print(f"\n{scenario.upper()} (AINS only, run once)")
        for name, value in data["median"].items():
            if name != "rows_last":
                print(f"  {name:<{width + 10}}{fmt(value, 3 if 'drift' in name else 1):>14}")
        if scenario == "s5":
            print(f"  {'rows at the end':<{width + 10}}{data['median'].get('rows_last')}")
    if result["ratios"]:
        print("\nRatios AINS / baseline (throughput: > 1 is better; latency: < 1 is better)")
        for name, value in result["ratios"].items():
            print(f"  {name:<60}{value:>10.2f}")
    print("\nTargets")
    for check in result["target_checks"]:
        print(
            f"  {check['status']:<5} {check['target']:<40} {fmt(check['value']):>10}"
            f"  {check.get('margin', '')}"
        )
    failed = [
        f"{scenario}/{system} run {i + 1}: {'; '.join(map(str, r['checks']['problems']))[:300]}"
        for scenario, systems_ in scenarios.items()
        for system, data in systems_.items()
        for i, r in enumerate(data["runs"])
        if not r.get("checks", {}).get("ok")
    ]
    print("\nChecks: " + ("every run passed" if not failed else f"{len(failed)} run(s) failed"))
    for line in failed:
        print(f"  ! {line}")
    if failed:
        print("  (a figure marked ! comes from a system with a failed run)")


# --------------------------------------------------------------------------- main


QUICK = {
    "tasks": 2000,
    "rq_tasks": 500,
    "s1_rate": 200,
    "s1_seconds": 3,
    "s3_rate": 100,
    "s3_seconds": 5,
    "s4_seconds": 15,
}
FULL = {
    "tasks": 20_000,
    "rq_tasks": 3000,
    "s1_rate": 200,
    "s1_seconds": 10,
    "s3_rate": 100,
    "s3_seconds": 20,
    "s4_seconds": 60,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=None, help="S1-S3 runs per system (3)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated")
    parser.add_argument("--soak-seconds", type=float, default=None, help="S5 length (600)")
    parser.add_argument(
        "--soak-rate", type=float, default=None, help="S5 tasks/s (default 70 %% of S2's median)"
    )
    parser.add_argument(
        "--retention-days",
        type=float,
        default=None,
        help="S5 TASK_RETENTION_DAYS (0.001 = 86 s; --quick 0.0002 = 17 s)",
    )
    parser.add_argument("--tasks", type=int, default=None, help="S1 batch and S2 size (20,000)")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, 1 run, 60 s soak: a smoke run"
    )
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/ains_bench",
        help="AINS's database: its public schema is DROPPED for each scenario",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13", help="FLUSHED")
    parser.add_argument("--baseline-redis-url", default="redis://127.0.0.1:6379/14", help="FLUSHED")
    parser.add_argument("--port", type=int, default=8102, help="gunicorn's port")
    parser.add_argument("--web-workers", type=int, default=2, help="AINS gunicorn workers (2)")
    parser.add_argument("--web-threads", type=int, default=32, help="threads per worker (32)")
    parser.add_argument("--reset-any-database", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="default bench/results/<date>.json")
    parser.add_argument("--chart", type=Path, default=None, help="default docs/perf-chart.png")
    args = parser.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for name, chosen, allowed in (
        ("--scenarios", args.scenarios, SCENARIOS),
        ("--systems", args.systems, SYSTEMS),
    ):
        bad = [c for c in chosen if c not in allowed]
        if bad or not chosen:
            parser.error(f"{name}: {bad or 'nothing chosen'} not in {', '.join(allowed)}")
    refused = check_bench_database(args.database_url, args.reset_any_database)
    if refused:
        parser.error(refused)
    if urlsplit(args.redis_url).path == urlsplit(args.baseline_redis_url).path:
        parser.error("--redis-url and --baseline-redis-url must be different Redis DBs")
    args.sizes = dict(QUICK if args.quick else FULL)
    if args.tasks:
        args.sizes["tasks"] = args.tasks
    args.runs = args.runs or (1 if args.quick else 3)
    args.soak_seconds = args.soak_seconds or (60 if args.quick else 600)
    args.retention_days = args.retention_days or (0.0002 if args.quick else 0.001)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    # A smoke run does not overwrite the committed results and chart.
    where = TMP_DIR if args.quick else BENCH / "results"
    args.json = args.json or where / f"{today}{'-quick' if args.quick else ''}.json"
    args.chart = args.chart or (
        TMP_DIR / f"{today}-quick.png" if args.quick else ROOT / "docs" / "perf-chart.png"
    )
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    TMP_DIR.mkdir(parents=True, exist_ok=True)
    baselines = [s for s in args.systems if s != "ains"]
    if baselines and not (BASELINE_PYTHON.exists() and (BENCH / "baselines.py").exists()):
        log(f"no {BASELINE_PYTHON.relative_to(ROOT)} (make bench creates it): baselines skipped")
        baselines = []
    systems = [s for s in args.systems if s == "ains" or s in baselines]
    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = bool(git("status", "--porcelain", "--", "app", "migrations", "bench"))
    except (OSError, subprocess.CalledProcessError):
        head, dirty = "unknown", False
    result: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            "platform": f"{platform.platform()}, Python {platform.python_version()}",
        },
        "git": head + (" + local changes" if dirty else ""),
        "params": {
            "runs": args.runs,
            "quick": args.quick,
            "sizes": args.sizes,
            "systems": systems,
            "scenarios": args.scenarios,
            "soak_seconds": args.soak_seconds,
            "retention_days": args.retention_days,
            "workers": f"AINS: gunicorn {args.web_workers} x {args.web_threads} threads, "
            "4 agents x 8 executors; "
            "baselines: 4 workers x concurrency 8",
            "order": "per run: S1 for each system, then S2, then S3 (interleaved); "
            "S4 and S5 once, AINS only",
        },
        "scenarios": {},
    }
    scenarios: dict[str, Any] = result["scenarios"]
    comparable = [s for s in ("s1", "s2", "s3") if s in args.scenarios]
    steps = args.runs * len(comparable) * len(systems)
    step = 0
    started = time.monotonic()
    for run_index in range(args.runs):
        for scenario in comparable:
            for system in systems:
                step += 1
                log(f"({step}/{steps}) run {run_index + 1}/{args.runs} {scenario} {system} ...")
                t0 = time.monotonic()
                if system == "ains":
                    outcome = run_ains(scenario, args, None)
                else:
                    outcome = run_baseline(system, scenario, args)
                entry = scenarios.setdefault(scenario, {}).setdefault(system, {"runs": []})
                entry["runs"].append(outcome)
                log(f"    {time.monotonic() - t0:.0f} s: {short(outcome)}")
    for scenario in ("s4", "s5"):
        if scenario not in args.scenarios or "ains" not in systems:
            continue
        soak_rate = args.soak_rate
        if scenario == "s5" and soak_rate is None:
            s2 = scenarios.get("s2", {}).get("ains")
            peak = medians(s2["runs"]).get("tasks_per_s") if s2 else None
            soak_rate = 0.7 * peak if isinstance(peak, int | float) and peak > 0 else 100.0
            source = "70 % of this run's S2 median" if s2 else "no S2 in this run: 100/s"
            log(f"S5 rate {soak_rate:.0f} tasks/s ({source})")
        what = "idle cost" if scenario == "s4" else f"soak {args.soak_seconds:.0f} s"
        log(f"{scenario} ains ({what}, AINS only, once) ...")
        t0 = time.monotonic()
        outcome = run_ains(scenario, args, soak_rate)
        scenarios.setdefault(scenario, {})["ains"] = {"runs": [outcome]}
        log(f"    {time.monotonic() - t0:.0f} s: {short(outcome)}")
    for systems_ in scenarios.values():
        for data in systems_.values():
            data["median"] = medians(data["runs"])
    result["ratios"] = ratios(scenarios)
    result["targets"] = dict(TARGETS)
    result["target_checks"] = targets(scenarios, result["ratios"])
    result["seconds"] = round(time.monotonic() - started)
    return result


def write_outputs(result: dict[str, Any], args: argparse.Namespace) -> None:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nresults written to {args.json}")
    chart = BENCH / "chart.py"
    if not (BASELINE_PYTHON.exists() and chart.exists()):
        print("no chart: bench/chart.py or bench/.venv is missing")
        return
    args.chart.parent.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(
        [str(BASELINE_PYTHON), str(chart), str(args.json), str(args.chart)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if made.returncode == 0:
        print(f"chart written to {args.chart}")
    else:
        print(f"chart failed (exit {made.returncode}): {made.stderr[-1000:]}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    log(
        f"bench: {', '.join(args.scenarios)} for {', '.join(args.systems)}, {args.runs} run(s)"
        f"{' (quick)' if args.quick else ''}; AINS on {args.database_url} + {args.redis_url}, "
        f"baselines on {args.baseline_redis_url}"
    )
    try:
        result = run(args)
    except KeyboardInterrupt:
        for proc in list(CHILDREN):
            stop_group(proc, 5)
        print("interrupted: every server and worker stopped, no results", file=sys.stderr)
        return 130
    print_table(result)
    write_outputs(result, args)
    passed = all(
        r.get("checks", {}).get("ok")
        for systems in result["scenarios"].values()
        for data in systems.values()
        for r in data["runs"]
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
