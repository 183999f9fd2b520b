"""When a tenant's hourly work is due (`worker/core/schedule.py`), with made-up clocks: stable offsets spread
over the interval, each slot caught exactly once by consecutive windows, never more than one interval's wait."""

from __future__ import annotations

import itertools
import statistics
from typing import Any

import pytest

from worker.core.schedule import due_tenants, is_due, next_slot, next_wakeup, tenant_offset

HOUR = 3600.0
T1 = "11111111-1111-1111-1111-111111111111"
T2 = "22222222-2222-2222-2222-222222222222"
FLEET = [f"{i:08x}-0000-4000-8000-{i:012x}" for i in range(500)]


def table(rows: list[tuple[Any, ...]]) -> list[Any]:
    return [pytest.param(*row[1:], id=row[0]) for row in rows]


# ---- the offset ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tenant", "interval"), table([
    ("hour", T1, HOUR),
    ("other tenant", T2, HOUR),
    ("short interval", T1, 0.5),
    ("odd interval", T2, 7.25),
]))
def test_offset_is_stable_and_inside_the_interval(tenant: str, interval: float) -> None:
    offset = tenant_offset(tenant, interval)
    assert 0 <= offset < interval
    assert tenant_offset(tenant, interval) == offset  # every replica, every restart: the same slot
    assert tenant_offset(tenant.upper(), interval) == offset  # the id's case does not move it


def test_offsets_spread_a_fleet_over_the_interval() -> None:
    offsets = sorted(tenant_offset(t, HOUR) for t in FLEET)
    per_minute = [0] * 60
    for offset in offsets:
        per_minute[int(offset // 60)] += 1
    # 500 tenants over 60 minutes: about 8 a minute; no minute holds a wave.
    assert max(per_minute) <= 20, per_minute
    assert sum(1 for n in per_minute if n == 0) <= 2, per_minute
    assert abs(statistics.mean(offsets) - HOUR / 2) < HOUR * 0.05


def test_a_bad_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        tenant_offset(T1, 0)


# ---- next slot and due windows -------------------------------------------------------------------------


OFF1 = tenant_offset(T1, HOUR)


@pytest.mark.parametrize(("after", "expected"), table([
    ("epoch start", 0.0, OFF1),
    ("just before the slot", OFF1 - 0.001, OFF1),
    ("exactly at the slot: the next one", OFF1, OFF1 + HOUR),
    ("just after the slot", OFF1 + 0.001, OFF1 + HOUR),
    ("days later", 1_764_000_000.0, None),
]))
def test_next_slot(after: float, expected: float | None) -> None:
    slot = next_slot(T1, after=after, interval_s=HOUR)
    assert after < slot <= after + HOUR
    assert (slot - OFF1) % HOUR == pytest.approx(0, abs=1e-3) or (slot - OFF1) % HOUR == pytest.approx(HOUR, abs=1e-3)
    if expected is not None:
        assert slot == pytest.approx(expected)


BASE = 1_764_000_000.0  # a made-up wall clock (December 2025)
SLOT = next_slot(T1, after=BASE, interval_s=HOUR)


@pytest.mark.parametrize(("since", "until", "due"), table([
    ("window holds the slot", SLOT - 10, SLOT + 10, True),
    ("window ends exactly at the slot", SLOT - 10, SLOT, True),
    ("window starts exactly at the slot (already taken)", SLOT, SLOT + 10, False),
    ("window before the slot", SLOT - 20, SLOT - 10, False),
    ("window after the slot", SLOT + 10, SLOT + 20, False),
    ("empty window", SLOT, SLOT, False),
    ("reversed window (clock stepped back)", SLOT + 10, SLOT - 10, False),
    ("a stall of three intervals: once", SLOT - 10, SLOT + 3 * HOUR, True),
]))
def test_is_due(since: float, until: float, due: bool) -> None:
    assert is_due(T1, since=since, until=until, interval_s=HOUR) is due


def _simulate(
    tenants: list[str], *, start: float, hours: float, step_s: float, interval: float
) -> dict[str, list[float]]:
    """A scheduler that looks every `step_s` seconds of made-up time: when each tenant was enqueued."""
    enqueued: dict[str, list[float]] = {t: [] for t in tenants}
    since = now = start
    end = start + hours * interval
    while now < end:
        now = min(end, now + step_s)
        for tenant in due_tenants(tenants, since=since, until=now, interval_s=interval):
            enqueued[tenant].append(now)
        since = now
    return enqueued


@pytest.mark.parametrize("step_s", [1.0, 7.0, 29.9, 600.0])
def test_consecutive_windows_enqueue_each_tenant_once_per_interval(step_s: float) -> None:
    tenants = FLEET[:50]
    enqueued = _simulate(tenants, start=BASE, hours=3, step_s=step_s, interval=HOUR)
    for tenant, times in enqueued.items():
        assert len(times) == 3, (tenant, times)
        # never overlapping itself: one interval between rounds, give or take the look period
        for a, b in itertools.pairwise(times):
            assert HOUR - step_s <= b - a <= HOUR + step_s
        assert times[0] - BASE <= HOUR + step_s  # nobody waits more than one interval from the start


def test_rounds_are_spread_not_a_wave() -> None:
    enqueued = _simulate(FLEET, start=BASE, hours=1, step_s=10.0, interval=HOUR)
    per_look: dict[float, int] = {}
    for times in enqueued.values():
        for t in times:
            per_look[t] = per_look.get(t, 0) + 1
    assert sum(per_look.values()) == len(FLEET)
    assert max(per_look.values()) <= 10, max(per_look.values())  # 500 at once before


def test_a_newly_enabled_tenant_waits_at_most_one_interval() -> None:
    for now in (BASE, BASE + 123.4, BASE + HOUR / 2):
        for tenant in FLEET[:100]:
            assert now < next_slot(tenant, after=now, interval_s=HOUR) <= now + HOUR


def test_due_tenants_lists_each_once_in_order() -> None:
    window = (SLOT - 1, SLOT + 1)
    assert due_tenants([T1, T2, T1], since=window[0], until=window[1], interval_s=HOUR) == [T1]


@pytest.mark.parametrize(("tenants", "max_sleep", "expected"), table([
    ("no tenants: the cap", [], 30.0, BASE + 30.0),
    ("slot sooner than the cap", [T1], HOUR, SLOT),
    ("cap sooner than the slot", [T1], 1.0, BASE + 1.0),
    ("earliest of several", [T1, T2], HOUR,
     min(SLOT, next_slot(T2, after=BASE, interval_s=HOUR))),
]))
def test_next_wakeup(tenants: list[str], max_sleep: float, expected: float) -> None:
    assert next_wakeup(tenants, now=BASE, interval_s=HOUR, max_sleep_s=max_sleep) == pytest.approx(expected)
