"""Template filters: times for people, JSON for reading, short ids."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from app.lib.clock import as_utc, utcnow
from app.ui import bp

UNITS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))


@bp.app_template_filter("ago")
def ago(value: datetime | None, now: datetime | None = None) -> str:
    """'just now', '42 s ago', '3 min ago', 'in 5 s'; 'never' for None."""
    value = as_utc(value)
    if value is None:
        return "never"
    seconds = int(((now or utcnow()) - value).total_seconds())
    if abs(seconds) < 2:
        return "just now"
    size, unit = next((s, u) for s, u in UNITS if abs(seconds) >= s)
    amount = f"{abs(seconds) // size} {unit}"
    return f"{amount} ago" if seconds > 0 else f"in {amount}"


@bp.app_template_filter("utc")
def utc(value: datetime | None) -> str:
    """A timestamp people read, in UTC: '2026-03-01 14:03:22 UTC'."""
    value = as_utc(value)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "—"


@bp.app_template_filter("stamp")
def stamp(value: datetime | None) -> str:
    """A compact UTC timestamp for table cells: '2026-03-01 14:03:22'."""
    value = as_utc(value)
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "—"


@bp.app_template_filter("elapsed")
def elapsed(start: datetime | None, end: datetime | None = None) -> float | None:
    """Seconds from ``start`` to ``end`` (or now, for something still running)."""
    start = as_utc(start)
    if start is None:
        return None
    return max(0.0, ((as_utc(end) or utcnow()) - start).total_seconds())


@bp.app_template_filter("clock")
def clock(value: datetime | None) -> str:
    """Time of day in UTC with seconds, for timelines: '14:03:22'."""
    value = as_utc(value)
    return value.strftime("%H:%M:%S") if value is not None else "—"


@bp.app_template_filter("iso")
def iso(value: datetime | None) -> str:
    """Machine-readable timestamp for <time datetime>."""
    value = as_utc(value)
    return value.isoformat() if value is not None else ""


@bp.app_template_filter("pretty_json")
def pretty_json(value: Any) -> str:
    """Indented JSON; the template escapes it like any other text."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


@bp.app_template_filter("short_id")
def short_id(value: str | None, length: int = 8) -> str:
    """'task_3f2a9c1d' from 'task_3f2a9c1d…': the prefix and the first hex digits."""
    if not value:
        return ""
    kind, _, rest = value.partition("_")
    return f"{kind}_{rest[:length]}" if rest else value[: length + 5]


@bp.app_template_filter("duration")
def duration(seconds: float | int | None) -> str:
    """'45 s', '12 min', '3 h 5 min'."""
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60} min" if rest >= 60 else f"{hours} h"
