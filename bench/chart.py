"""Draw the issue-11 benchmark chart (AINS vs Celery vs RQ) from a results JSON.

    bench/.venv/bin/python bench/chart.py RESULTS.json OUT.png

RESULTS.json is what ``bench/run.py`` writes: ``{"date", "machine", "scenarios": {"s1":
{"ains": {"median": {...}, "runs": [...]}, "celery": {...}, ...}, "s2": ..., "s3": ...},
"ratios", "targets"}``. Four panels: S2 drain tasks/s, S1 batch submit tasks/s, S1 single
submit p50/p99 ms, S3 created -> claimed / completed p50/p99 ms (log scale). A system or a
figure that is missing is left out of its panel; a panel with nothing to show says so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

SYSTEMS = ("ains", "celery", "rq-fork", "rq-simple")
LABELS = {"ains": "AINS", "celery": "Celery", "rq-fork": "RQ fork", "rq-simple": "RQ simple"}
COLORS = {"ains": "#2b6cb0", "celery": "#38a169", "rq-fork": "#dd6b20", "rq-simple": "#d69e2e"}
# Issue 11's targets, used when RESULTS.json carries none under the same name.
DEFAULT_TARGETS = {
    "s2_tasks_per_s": 1500.0,
    "s1_batch_tasks_per_s": 8000.0,
    "s1_single_p50_ms": 3.0,
    "s1_single_p99_ms": 15.0,
    "s3_claimed_p50_ms": 10.0,
    "s3_claimed_p99_ms": 50.0,
}


def figure(results: dict[str, Any], scenario: str, system: str, name: str) -> float | None:
    """One median figure, or None when the scenario, system or figure is missing."""
    entry = (results.get("scenarios") or {}).get(scenario, {}).get(system)
    if not isinstance(entry, dict):
        return None
    figs = entry.get("median", entry.get("figures", entry))
    value = figs.get(name) if isinstance(figs, dict) else None
    return float(value) if isinstance(value, int | float) and value == value else None


def target(results: dict[str, Any], key: str) -> float | None:
    """A target from RESULTS.json when it has a number under key, else issue 11's."""
    value = (results.get("targets") or {}).get(key)
    return float(value) if isinstance(value, int | float) else DEFAULT_TARGETS.get(key)


def ms_label(v: float) -> str:
    """A bar label for a value in ms."""
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def empty(ax: Any, title: str) -> None:
    """A panel with no data."""
    ax.set_title(title)
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def bars(ax: Any, results: dict[str, Any], scenario: str, name: str, title: str, tkey: str) -> None:
    """One bar per system for a throughput figure, with the target as a dashed line."""
    pts = [(s, v) for s in SYSTEMS if (v := figure(results, scenario, s, name)) is not None]
    if not pts:
        empty(ax, title)
        return
    xs = range(len(pts))
    rects = ax.bar(xs, [v for _, v in pts], color=[COLORS[s] for s, _ in pts])
    ax.bar_label(rects, labels=[f"{v:,.0f}" for _, v in pts], padding=2, fontsize=8)
    ax.set_xticks(list(xs), [LABELS[s] for s, _ in pts])
    ax.set_ylabel("tasks/s")
    ax.set_title(title)
    t = target(results, tkey)
    if t is not None:
        ax.axhline(t, color="crimson", linestyle="--", linewidth=1)
        ax.annotate(
            f"target {t:,.0f}/s", (0.99, t), xycoords=("axes fraction", "data"), ha="right",
            xytext=(0, 3), textcoords="offset points", color="crimson", fontsize=8,
        )  # fmt: skip
        ax.set_ylim(0, max(t, max(v for _, v in pts)) * 1.18)


def grouped(
    ax: Any,
    results: dict[str, Any],
    scenario: str,
    series: list[tuple[str, str]],
    title: str,
    targets: list[tuple[str, str]],
    log: bool = False,
) -> None:
    """Grouped bars (one group per system, one bar per figure in series), in ms."""
    systems = [
        s for s in SYSTEMS if any(figure(results, scenario, s, n) is not None for n, _ in series)
    ]
    if not systems:
        empty(ax, title)
        return
    width = 0.8 / len(series)
    shades = ["#90cdf4", "#2b6cb0", "#fbd38d", "#c05621"]
    for k, (name, label) in enumerate(series):
        vals = [figure(results, scenario, s, name) for s in systems]
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(systems))]
        keep = [(x, v) for x, v in zip(xs, vals, strict=True) if v is not None]
        if not keep:
            continue
        rects = ax.bar(
            [x for x, _ in keep], [v for _, v in keep], width, label=label, color=shades[k % 4]
        )
        ax.bar_label(
            rects, labels=[ms_label(v) for _, v in keep], padding=1, fontsize=7, rotation=90
        )
    ax.set_xticks(range(len(systems)), [LABELS[s] for s in systems])
    ax.set_ylabel("ms" + (" (log scale)" if log else ""))
    tvals = [t for key, _ in targets if (t := target(results, key)) is not None]
    if log:
        ax.set_yscale("log")
        lo, hi = ax.get_ylim()
        ax.set_ylim(min([lo, *tvals]) / 1.5, max([hi, *tvals]) * 4)
    else:
        ax.set_ylim(0, max([ax.get_ylim()[1], *tvals]) * 1.2)
    for key, label in targets:
        t = target(results, key)
        if t is not None:
            ax.axhline(t, color="crimson", linestyle=":", linewidth=1)
            ax.annotate(
                label.format(t), (1.0, t), xycoords=("axes fraction", "data"), ha="right",
                xytext=(0, 2), textcoords="offset points", color="crimson", fontsize=7,
            )  # fmt: skip
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")


def draw(results: dict[str, Any], out: Path) -> None:
    """Draw the four panels into out (PNG)."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    bars(axes[0][0], results, "s2", "tasks_per_s", "S2 drain: 20,000 no-op tasks", "s2_tasks_per_s")
    bars(
        axes[0][1], results, "s1", "batch_tasks_per_s", "S1 submit, batches of 100",
        "s1_batch_tasks_per_s",
    )  # fmt: skip
    grouped(
        axes[1][0], results, "s1",
        [("single_p50_ms", "p50"), ("single_p99_ms", "p99")],
        "S1 single submit at 200/s: call latency",
        [("s1_single_p50_ms", "p50 target {:g} ms"), ("s1_single_p99_ms", "p99 target {:g} ms")],
    )  # fmt: skip
    grouped(
        axes[1][1], results, "s3",
        [
            ("claimed_p50_ms", "claimed p50"), ("claimed_p99_ms", "claimed p99"),
            ("completed_p50_ms", "completed p50"), ("completed_p99_ms", "completed p99"),
        ],
        "S3 latency at 100 tasks/s: created -> claimed / completed",
        [("s3_claimed_p50_ms", "claimed p50 target {:g} ms"),
         ("s3_claimed_p99_ms", "claimed p99 target {:g} ms")],
        log=True,
    )  # fmt: skip
    machine = results.get("machine")
    if isinstance(machine, dict):
        machine = ", ".join(f"{k} {v}" for k, v in list(machine.items())[:4])
    sub = " · ".join(str(x) for x in (results.get("date"), machine) if x)
    fig.suptitle(
        "AINS vs Celery and RQ, same machine, same no-op task" + (f"\n{sub}" if sub else "")
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    """Entry point: chart.py RESULTS.json OUT.png."""
    if len(argv) != 3:
        print("usage: chart.py RESULTS.json OUT.png", file=sys.stderr)
        return 2
    results = json.loads(Path(argv[1]).read_text())
    draw(results, Path(argv[2]))
    print(f"wrote {argv[2]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
