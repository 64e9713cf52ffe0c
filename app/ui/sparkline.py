"""Trust history as a sparkline: a series of scores turned into inline SVG geometry.

The template draws what it is given (a polyline and a dot on the latest score) and needs
no script. Scores live in 0..1; the vertical scale follows the series but never spans
less than MIN_SPAN, so a few +0.02 steps read as a gentle slope, not a cliff.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MIN_SPAN = 0.2
PAD = 2.5  # room for the end dot and the stroke


@dataclass(frozen=True)
class Sparkline:
    width: int
    height: int
    points: str  # "x,y x,y …" for <polyline>, empty when there is no history
    end_x: float
    end_y: float
    first: float | None
    last: float | None
    count: int

    @property
    def trend(self) -> str:
        """'up', 'down' or 'flat': the colour of the line."""
        if self.first is None or self.last is None or abs(self.last - self.first) < 1e-9:
            return "flat"
        return "up" if self.last > self.first else "down"

    @property
    def changes(self) -> int:
        """Steps between the points: the series starts with the score before the first."""
        return max(self.count - 1, 0)

    @property
    def label(self) -> str:
        """What the line says, for screen readers and the tooltip."""
        if self.first is None or self.last is None:
            return "No trust changes yet"
        if self.changes == 0:
            return f"Trust {self.last:.2f}"
        steps = "change" if self.changes == 1 else f"{self.changes} changes"
        return f"Trust {self.first:.2f} → {self.last:.2f} over the last {steps}"


def scale(values: Sequence[float]) -> tuple[float, float]:
    """The score range drawn: the series' own, widened to MIN_SPAN inside 0..1."""
    low, high = min(values), max(values)
    if high - low < MIN_SPAN:
        middle = (low + high) / 2
        low, high = middle - MIN_SPAN / 2, middle + MIN_SPAN / 2
        if low < 0:
            low, high = 0.0, MIN_SPAN
        elif high > 1:
            low, high = 1 - MIN_SPAN, 1.0
    return low, high


def sparkline(values: Sequence[float], *, width: int = 96, height: int = 24) -> Sparkline:
    """The geometry of ``values`` (oldest first) in a ``width`` x ``height`` box.

    ``values`` is what trust.sparkline_points gives: the score before the first change
    shown, then the score after each change.
    """
    if not values:
        return Sparkline(width, height, "", 0.0, 0.0, None, None, 0)
    low, high = scale(values)
    inner_w, inner_h = width - 2 * PAD, height - 2 * PAD
    # One score draws a level line across the box; more spread evenly from left to right.
    series = list(values) if len(values) > 1 else [values[0], values[0]]
    step = inner_w / (len(series) - 1)
    coords = [
        (PAD + i * step, PAD + inner_h * (1 - (min(max(v, low), high) - low) / (high - low)))
        for i, v in enumerate(series)
    ]
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    end_x, end_y = coords[-1]
    return Sparkline(
        width, height, points, round(end_x, 1), round(end_y, 1), values[0], values[-1], len(values)
    )
