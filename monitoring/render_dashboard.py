"""Render a provisioned Grafana dashboard's panels from a real Prometheus into a PNG.

Grafana is not something this project installs, so the README's pictures of the dashboards
come from here: the dashboard JSON is read as Grafana would read it (panels, grid
positions, targets, legend formats, units, thresholds), every target is run as a range
query against Prometheus, and the panels are drawn as SVG in a page that headless
Chromium (Playwright) screenshots. Time series, stat and bar gauge panels are drawn; the
look follows Grafana's dark theme, not its every detail.

    python monitoring/render_dashboard.py monitoring/grafana/dashboards/ains-http.json \\
        --prometheus http://localhost:9090 --minutes 10 --out docs/screenshots/grafana-http.png

Exits 1, naming the panel and expression, when Prometheus refuses a query.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

PALETTE = [
    "#73BF69",
    "#F2CC0C",
    "#8AB8FF",
    "#FF780A",
    "#F2495C",
    "#5794F2",
    "#B877D9",
    "#FADE2A",
    "#96D98D",
    "#FFB357",
    "#CA95E5",
    "#FF7383",
]
ROW_PX = 30  # Grafana's grid: 24 columns, rows of 30 px
GAP_PX = 8


@dataclass
class Series:
    name: str
    points: list[tuple[float, float]]  # (unix time, value); NaN values left out

    @property
    def last(self) -> float | None:
        return self.points[-1][1] if self.points else None


@dataclass
class Panel:
    spec: dict[str, Any]
    series: list[Series] = field(default_factory=list)

    @property
    def unit(self) -> str:
        return self.spec.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")

    @property
    def defaults(self) -> dict[str, Any]:
        return self.spec.get("fieldConfig", {}).get("defaults", {})


class QueryError(Exception):
    pass


def substitute(expr: str, board: dict[str, Any], rate_interval: str, step: int) -> str:
    """Grafana's variables: $__rate_interval, $__interval and the dashboard's own (as All)."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("$__interval", f"{step}s")
    for variable in board.get("templating", {}).get("list", []):
        value = variable.get("allValue") or ".*"
        expr = re.sub(rf"\$\{{?{re.escape(variable['name'])}\}}?\b", value, expr)
    return expr


def legend(fmt: str, labels: dict[str, str]) -> str:
    if not fmt:
        inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
        return f"{labels.get('__name__', '')}{{{inner}}}"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def query_range(prometheus: str, expr: str, start: float, end: float, step: int) -> list[Any]:
    response = requests.get(
        f"{prometheus.rstrip('/')}/api/v1/query_range",
        params={"query": expr, "start": start, "end": end, "step": step},
        timeout=30,
    )
    body = response.json()
    if body.get("status") != "success":
        raise QueryError(f"{body.get('errorType')}: {body.get('error')}")
    return body["data"]["result"]


def load_panels(
    board: dict[str, Any],
    prometheus: str,
    start: float,
    end: float,
    step: int,
    rate_interval: str,
) -> list[Panel]:
    panels = []
    for spec in board["panels"]:
        panel = Panel(spec)
        for target in spec.get("targets", []):
            expr = substitute(target["expr"], board, rate_interval, step)
            try:
                result = query_range(prometheus, expr, start, end, step)
            except QueryError as exc:
                raise QueryError(f"panel {spec['title']!r}: {expr}\n  {exc}") from exc
            for item in result:
                points = [
                    (float(t), float(v)) for t, v in item["values"] if not math.isnan(float(v))
                ]
                name = legend(target.get("legendFormat", ""), item["metric"])
                panel.series.append(Series(name, points))
        panels.append(panel)
    return panels


# ---------------------------------------------------------------------------------------
# Units and colours
# ---------------------------------------------------------------------------------------
def si(value: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    if value == 0:
        return "0"
    return f"{value:.3g}"


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "No data"
    if unit == "percentunit":
        return f"{value * 100:.3g}%"
    if unit == "s":
        if value == 0:
            return "0 s"
        if abs(value) < 1:
            return f"{value * 1000:.3g} ms"
        if abs(value) < 120:
            return f"{value:.3g} s"
        if abs(value) < 7200:
            return f"{value / 60:.3g} min"
        return f"{value / 3600:.3g} h"
    if unit == "reqps":
        return f"{si(value)} req/s"
    if unit == "ops":
        return f"{si(value)} ops/s"
    return si(value)


def threshold_colour(defaults: dict[str, Any], value: float | None, fallback: str) -> str:
    steps = defaults.get("thresholds", {}).get("steps")
    if not steps or value is None:
        return fallback
    colour = fallback
    for step in steps:
        if step.get("value") is None or value >= step["value"]:
            colour = {"green": "#73BF69", "orange": "#FF9830", "red": "#F2495C"}.get(
                step["color"], step["color"]
            )
    return colour


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 0.001:
        ticks.append(round(value, 12))
        value += step
    return ticks


# ---------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------
def esc(text: str) -> str:
    return html.escape(text, quote=True)


def timeseries_svg(panel: Panel, width: int, height: int, start: float, end: float) -> str:
    # (colour index, points, the points of the band's lower edge when stacked)
    drawn: list[tuple[int, list[tuple[float, float]], list[tuple[float, float]] | None]] = []
    stacked = panel.defaults.get("custom", {}).get("stacking", {}).get("mode", "none") == "normal"
    totals: dict[float, float] = {}
    for index, s in enumerate(panel.series):
        if not s.points:
            continue
        if stacked:  # each series drawn as a band over the ones before it
            lower = [(t, totals.get(t, 0.0)) for t, _ in s.points]
            upper = [(t, totals.get(t, 0.0) + v) for t, v in s.points]
            totals.update(upper)
            drawn.append((index, upper, lower))
        else:
            drawn.append((index, s.points, None))
    series = [Series("", points) for _, points, _ in drawn]
    if not series:
        return (
            f'<svg width="{width}" height="{height}"><text x="{width / 2}" y="{height / 2}" '
            f'class="nodata" text-anchor="middle">No data</text></svg>'
        )
    values = [v for s in series for _, v in s.points]
    low = min([*values, panel.defaults.get("min", min([*values, 0.0]))])
    high = max([*values, panel.defaults.get("max", max(values))])
    if high == low:
        high = low + (abs(low) or 1)
    if panel.unit == "s" and high > 180:  # round minutes, not round seconds
        ticks = [t * 60 for t in nice_ticks(low / 60, high / 60)]
    else:
        ticks = nice_ticks(low, high)
    low, high = min(ticks[0], low), max(ticks[-1], high)
    left, right, top, bottom = 64, 8, 6, 20
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(t: float) -> float:
        return left + (t - start) / (end - start) * plot_w

    def y(v: float) -> float:
        return top + plot_h - (v - low) / (high - low) * plot_h

    parts = [f'<svg width="{width}" height="{height}">']
    for tick in ticks:
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            f'class="grid"/><text x="{left - 6}" y="{y(tick) + 4:.1f}" class="axis" '
            f'text-anchor="end">{esc(fmt(tick, panel.unit))}</text>'
        )
    span = end - start
    tick_every = next(s for s in (15, 30, 60, 120, 300, 600, 900, 1800, 3600) if span / s <= 8)
    t = math.ceil(start / tick_every) * tick_every
    while t <= end:
        label = datetime.fromtimestamp(t, UTC).strftime("%H:%M" if tick_every >= 60 else "%H:%M:%S")
        parts.append(
            f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{top + plot_h}" class="grid"/>'
            f'<text x="{x(t):.1f}" y="{height - 4}" class="axis" text-anchor="middle">'
            f"{label}</text>"
        )
        t += tick_every
    fill = panel.defaults.get("custom", {}).get("fillOpacity", 10) / 100
    for index, points, lower in reversed(drawn):
        colour = PALETTE[index % len(PALETTE)]
        path = " ".join(
            f"{'M' if i == 0 else 'L'}{x(t):.1f},{y(v):.1f}" for i, (t, v) in enumerate(points)
        )
        if lower is None:
            base = y(max(low, 0.0))
            edge = f"L{x(points[-1][0]):.1f},{base:.1f} L{x(points[0][0]):.1f},{base:.1f}"
        else:
            edge = " ".join(f"L{x(t):.1f},{y(v):.1f}" for t, v in reversed(lower))
        parts.append(
            f'<path d="{path} {edge} Z" fill="{colour}" fill-opacity="{fill}" stroke="none"/>'
            f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def legend_html(panel: Panel) -> str:
    items = []
    for index, s in enumerate(panel.series):
        if not s.points:
            continue
        colour = PALETTE[index % len(PALETTE)]
        items.append(
            f'<span class="item"><i style="background:{colour}"></i>{esc(s.name)}'
            f" <b>{esc(fmt(s.last, panel.unit))}</b></span>"
        )
    return f'<div class="legend">{"".join(items)}</div>'


def stat_html(panel: Panel, width: int, height: int, start: float, end: float) -> str:
    series = [s for s in panel.series if s.points]
    value = series[0].last if series else None
    colour = threshold_colour(panel.defaults, value, PALETTE[0])
    spark = ""
    if series and len(series[0].points) > 1:
        points = series[0].points
        values = [v for _, v in points]
        low, high = min(values), max(values)
        high = high if high > low else low + 1
        coords = " ".join(
            f"{(t - start) / (end - start) * width:.1f},"
            f"{height - (v - low) / (high - low) * height * 0.45:.1f}"
            for t, v in points
        )
        spark = (
            f'<svg class="spark" width="{width}" height="{height}"><polyline points="{coords}" '
            f'fill="none" stroke="{colour}" stroke-opacity="0.6" stroke-width="1.5"/></svg>'
        )
    size = max(18, min(48, height * 0.45))
    return (
        f'<div class="stat" style="height:{height}px">{spark}'
        f'<div class="value" style="color:{colour};font-size:{size:.0f}px">'
        f"{esc(fmt(value, panel.unit))}</div></div>"
    )


def bargauge_html(panel: Panel) -> str:
    rows = []
    low = panel.defaults.get("min", 0.0)
    high = panel.defaults.get("max", max([s.last or 0 for s in panel.series] + [1]))
    for s in sorted(panel.series, key=lambda s: -(s.last or 0)):
        value = s.last
        share = 0 if value is None else max(0.0, min(1.0, (value - low) / (high - low)))
        colour = threshold_colour(panel.defaults, value, PALETTE[0])
        rows.append(
            f'<div class="bar"><div class="label">{esc(s.name)}</div><div class="track">'
            f'<div class="fill" style="width:{share * 100:.1f}%;background:linear-gradient('
            f'90deg,{colour}55,{colour})"></div></div><div class="num" style="color:{colour}">'
            f"{esc(fmt(value, panel.unit))}</div></div>"
        )
    if not rows:
        rows.append('<div class="nodata">No data</div>')
    return f'<div class="bars">{"".join(rows)}</div>'


def page(board: dict[str, Any], panels: list[Panel], width: int, start: float, end: float) -> str:
    column = (width - 2 * GAP_PX) / 24
    boxes = []
    bottom = 0
    for panel in panels:
        grid = panel.spec["gridPos"]
        left = GAP_PX + grid["x"] * column
        top = 64 + grid["y"] * ROW_PX
        w = grid["w"] * column - GAP_PX
        h = grid["h"] * ROW_PX - GAP_PX
        bottom = max(bottom, top + h)
        body_h = int(h - 34)
        kind = panel.spec["type"]
        if kind == "stat":
            body = stat_html(panel, int(w - 16), body_h, start, end)
        elif kind == "bargauge":
            body = bargauge_html(panel)
        else:
            legend_rows = max(1, math.ceil(len([s for s in panel.series if s.points]) / 3))
            chart_h = max(60, body_h - min(legend_rows, 3) * 17 - 4)
            body = timeseries_svg(panel, int(w - 16), chart_h, start, end) + legend_html(panel)
        boxes.append(
            f'<section class="panel" style="left:{left:.0f}px;top:{top}px;width:{w:.0f}px;'
            f'height:{h}px"><h2>{esc(panel.spec["title"])}</h2>{body}</section>'
        )
    rendered = datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%d %H:%M UTC")
    span = round((end - start) / 60)
    return f"""<!doctype html><html><head><meta charset="utf-8"><style>
body {{ margin:0; background:#111217; color:#ccccdc; font:12px Inter, "Liberation Sans",
  Arial, sans-serif; width:{width}px; height:{bottom + GAP_PX}px; position:relative; }}
header {{ position:absolute; left:{GAP_PX}px; top:10px; right:{GAP_PX}px; display:flex;
  justify-content:space-between; align-items:baseline; }}
header h1 {{ font-size:18px; font-weight:500; margin:0; color:#d8d9da; }}
header span {{ color:#8e8e8e; }}
.panel {{ position:absolute; box-sizing:border-box; background:#181b1f; border:1px solid
  #2c3235; border-radius:3px; padding:6px 8px; overflow:hidden; }}
.panel h2 {{ font-size:13px; font-weight:500; margin:0 0 8px; color:#d8d9da; }}
.grid {{ stroke:#2c3235; stroke-width:1; }}
.axis {{ fill:#8e8e8e; font-size:10px; }}
.nodata {{ fill:#8e8e8e; color:#8e8e8e; font-size:13px; }}
.legend {{ display:flex; flex-wrap:wrap; gap:2px 14px; font-size:11px; max-height:51px;
  overflow:hidden; }}
.legend .item {{ white-space:nowrap; }}
.legend i {{ display:inline-block; width:12px; height:3px; margin:0 5px 3px 0; }}
.legend b {{ font-weight:500; color:#8e8e8e; }}
.stat {{ position:relative; display:flex; align-items:center; justify-content:center; }}
.stat .value {{ position:relative; font-weight:500; }}
.stat .spark {{ position:absolute; left:0; top:0; }}
.bars {{ display:flex; flex-direction:column; gap:6px; }}
.bar {{ display:grid; grid-template-columns:40% 1fr 56px; align-items:center; gap:8px; }}
.bar .label {{ overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }}
.bar .track {{ background:#22252b; height:16px; }}
.bar .fill {{ height:16px; }}
.bar .num {{ text-align:right; font-weight:500; }}
</style></head><body>
<header><h1>{esc(board["title"])}</h1><span>last {span} min to {rendered} · panels of
{esc(board["uid"])}.json rendered from Prometheus</span></header>
{"".join(boxes)}
</body></html>"""


def screenshot(document: str, out: Path, width: int, chromium: str | None) -> None:
    from playwright.sync_api import sync_playwright

    out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        try:
            view = browser.new_page(viewport={"width": width, "height": 800})
            view.set_content(document, wait_until="load")
            view.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dashboard", type=Path, help="a dashboard JSON file")
    parser.add_argument("--prometheus", default="http://localhost:9090")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--minutes", type=float, default=15, help="time range (default 15)")
    parser.add_argument("--step", type=int, default=5, help="query step in seconds (default 5)")
    parser.add_argument(
        "--rate-interval", default="1m", help="what $__rate_interval stands for (default 1m)"
    )
    parser.add_argument("--width", type=int, default=1600, help="page width in px")
    parser.add_argument(
        "--chromium",
        default=os.environ.get("CHROMIUM_PATH")
        or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None),
        help="Chromium executable (default $CHROMIUM_PATH, else /usr/bin/chromium when there, "
        "else Playwright's own)",
    )
    parser.add_argument("--html", type=Path, help="also write the page as HTML here")
    args = parser.parse_args(argv)

    board = json.loads(args.dashboard.read_text())
    end = time.time()
    start = end - args.minutes * 60
    try:
        panels = load_panels(board, args.prometheus, start, end, args.step, args.rate_interval)
    except QueryError as exc:
        print(f"error: Prometheus refused a query of {args.dashboard}: {exc}", file=sys.stderr)
        return 1
    except requests.RequestException as exc:
        print(f"error: cannot query {args.prometheus}: {exc}", file=sys.stderr)
        return 1
    document = page(board, panels, args.width, start, end)
    if args.html:
        args.html.write_text(document)
    screenshot(document, args.out, args.width, args.chromium)
    empty = [p.spec["title"] for p in panels if not any(s.points for s in p.series)]
    print(f"{args.out}: {len(panels)} panels, {len(empty)} without data {empty or ''}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
