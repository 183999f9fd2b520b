"""The console templates' filters: times as "3 min ago" or a UTC timestamp, counts with thousands separators."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def _when(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def ago(value: Any) -> str:
    """'3 min ago' / 'in 2 days' / 'never'."""
    when = _when(value)
    if when is None:
        return "never"
    seconds = (datetime.now(UTC) - when).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    for size, unit in ((86400, "day"), (3600, "h"), (60, "min")):
        if seconds >= size:
            n = int(seconds // size)
            text = f"{n} {unit}{'s' if unit == 'day' and n != 1 else ''}"
            break
    else:
        text = f"{int(seconds)} s"
    return f"in {text}" if future else f"{text} ago"


def timestamp(value: Any) -> str:
    when = _when(value)
    return "—" if when is None else when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def number(value: Any) -> str:
    return f"{int(value or 0):,}"
