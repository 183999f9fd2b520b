"""The simulated clock: wall time plus an offset that only ever grows.

Tests advance it (`POST /_sim/clock`) to cover hours and days without waiting. Access-token lifetimes use real
time instead, so advancing the clock never invalidates a client's cached token.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


class Clock:
    """Simulated time in epoch seconds."""

    def __init__(self) -> None:
        self._offset = 0.0

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> float:
        """Move simulated time forward by `seconds` (never backwards); returns the new time."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._offset += seconds
        return self.now()

    @property
    def offset(self) -> float:
        return self._offset

    def iso(self, at: float | None = None) -> str:
        return iso(self.now() if at is None else at)


_DAYS: dict[int, str] = {}


def iso(epoch: float) -> str:
    """Graph's timestamp format: `2024-01-31T12:00:00Z` (seconds precision in most properties)."""
    day, rest = divmod(int(epoch), 86_400)
    date = _DAYS.get(day)
    if date is None:
        date = _DAYS[day] = time.strftime("%Y-%m-%d", time.gmtime(day * 86_400))
    return f"{date}T{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}Z"


def iso_precise(epoch: float) -> str:
    """Graph's subscription timestamp format, with fractional seconds: `2024-01-31T12:00:00.1234567Z`."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def parse_iso(value: str) -> float:
    """Epoch seconds of an ISO 8601 timestamp (`Z` or an offset; up to 7 fractional digits)."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    head, sep, tail = text.partition(".")
    if sep:
        digits = ""
        rest = tail
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest}"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
