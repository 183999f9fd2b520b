"""Geometry of the tenant page's charts, rendered as inline SVG by the template (no script, no library).

Pure: the caller passes the runs and the time; this module returns bars with coordinates and labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

WIDTH = 720
HEIGHT = 160
LEFT = 44        # room for the y-axis labels
BOTTOM = 24      # room for the x-axis labels
TOP = 10


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str       # the tooltip (<title>) and the table row
    value: float


@dataclass(frozen=True)
class Chart:
    bars: tuple[Bar, ...]
    ticks: tuple[tuple[float, str], ...]    # x, label
    y_max: float
    y_label: str
    marker_x: float | None = None           # e.g. the last notification
    marker_label: str = ""
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    bottom: int = BOTTOM

    @property
    def plot_height(self) -> int:
        return self.height - self.top - self.bottom


def _parse(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _nice_max(value: float) -> float:
    """The y-axis top: 1, 2 or 5 times a power of ten, at least the value."""
    if value <= 0:
        return 1.0
    step = 1.0
    while step * 10 <= value:
        step *= 10
    for factor in (1, 2, 5, 10):
        if value <= factor * step:
            return factor * step
    return 10 * step


def _hour_start(now: datetime, hours: int) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)


def _hourly(totals: Sequence[int], start: datetime, *, unit: str, y_label: str) -> tuple[tuple[Bar, ...], Any, float]:
    hours = len(totals)
    y_max = max(2.0, _nice_max(max(totals, default=0)))  # whole numbers: an axis of 1 would label its middle 0.5
    slot_w = (WIDTH - LEFT) / hours
    plot_h = HEIGHT - TOP - BOTTOM
    bars = []
    for i, value in enumerate(totals):
        h = plot_h * value / y_max
        hour = start + timedelta(hours=i)
        bars.append(Bar(x=LEFT + i * slot_w + 1, y=TOP + plot_h - h, width=slot_w - 2, height=h,
                        label=f"{hour:%H}:00-{hour:%H}:59 UTC: {value:,} {unit}", value=value))
    ticks = tuple((LEFT + i * slot_w + slot_w / 2, f"{start + timedelta(hours=i):%H}:00")
                  for i in range(0, hours, 3))
    return tuple(bars), ticks, y_max


def changes_per_hour(runs: Sequence[dict[str, Any]], *, now: datetime, last_notification: Any = None,
                     hours: int = 24) -> Chart:
    """End User changes applied per hour over the last `hours`, with the last notification marked."""
    start = _hour_start(now, hours)
    totals = [0] * hours
    for run in runs:
        finished = _parse(run.get("finished_at"))
        if finished is None or finished < start:
            continue
        slot = min(hours - 1, int((finished - start).total_seconds() // 3600))
        totals[slot] += int(run.get("changes") or 0)
    bars, ticks, y_max = _hourly(totals, start, unit="changes", y_label="changes")
    slot_w = (WIDTH - LEFT) / hours
    marker = _parse(last_notification)
    marker_x = None
    if marker is not None and marker >= start:
        marker_x = LEFT + min(hours, (marker - start).total_seconds() / 3600) * slot_w
    return Chart(bars=bars, ticks=ticks, y_max=y_max, y_label="changes",
                 marker_x=marker_x, marker_label=f"last notification {marker:%H:%M} UTC" if marker_x else "")


def notifications_per_hour(counts: Sequence[tuple[Any, int]], *, now: datetime, hours: int = 24) -> Chart:
    """Change notifications accepted per UTC hour over the last `hours`, from (hour, count) pairs."""
    start = _hour_start(now, hours)
    totals = [0] * hours
    for hour, count in counts:
        at = _parse(hour)
        if at is None or at < start:
            continue
        slot = int((at - start).total_seconds() // 3600)
        if slot < hours:
            totals[slot] += int(count)
    bars, ticks, y_max = _hourly(totals, start, unit="notifications", y_label="notifications")
    return Chart(bars=bars, ticks=ticks, y_max=y_max, y_label="notifications")


def run_durations(runs: Sequence[dict[str, Any]], *, limit: int = 48) -> Chart:
    """Each of the newest `limit` runs' duration in seconds, oldest first."""
    timed = []
    for run in runs:
        started, finished = _parse(run.get("started_at")), _parse(run.get("finished_at"))
        if started is not None and finished is not None:
            timed.append((finished, (finished - started).total_seconds(), run))
    timed = timed[-limit:]
    y_max = _nice_max(max((d for _, d, _ in timed), default=0.0))
    slot_w = (WIDTH - LEFT) / max(len(timed), 12)  # a few runs get wide bars, 48 fill the width
    plot_h = HEIGHT - TOP - BOTTOM
    bars = []
    for i, (finished, seconds, run) in enumerate(timed):
        h = max(1.0, plot_h * seconds / y_max)
        bars.append(Bar(x=LEFT + i * slot_w + 1, y=TOP + plot_h - h, width=max(slot_w - 2, 1), height=h,
                        label=f"{run.get('kind')} {finished:%H:%M} UTC: {seconds:.1f} s ({run.get('status')})",
                        value=seconds))
    return Chart(bars=tuple(bars), ticks=(), y_max=y_max, y_label="seconds")
