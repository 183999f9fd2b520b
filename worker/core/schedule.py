"""When is a tenant's hourly work due: each tenant's resync spread over the interval by a stable offset.

Every tenant owns one slot per interval, at `offset + k * interval` seconds of the Unix epoch, where the offset
is a hash of its (lower-case) tenant id modulo the interval. So 500 tenants do not all start their full
resync in the same second (the "hourly wave"), yet every replica and every restart agrees on each tenant's
slot without storing anything. A tenant is due when one of its slots falls in the window the scheduler has
not looked at yet, `(since, until]`: a late look (a busy or restarted leader) still catches every slot it
slept through, and enqueues each tenant at most once per look however long the window, so the scheduler
never queues several rounds for one tenant. A newly enabled tenant (or a new leader, which starts its
window at the moment it took over) waits for its next slot: at most one interval.

Pure: no I/O, no clock, no logging. Times are float seconds on the caller's clock (the scheduler passes the
wall clock, so replicas agree).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable


def tenant_offset(tenant_id: str, interval_s: float) -> float:
    """The tenant's stable position inside the interval, in [0, interval_s)."""
    if interval_s <= 0:
        raise ValueError("interval_s must be positive")
    digest = hashlib.sha256(tenant_id.strip().lower().encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    return fraction * interval_s


def next_slot(tenant_id: str, *, after: float, interval_s: float) -> float:
    """The tenant's first slot strictly after `after`."""
    offset = tenant_offset(tenant_id, interval_s)
    k = math.floor((after - offset) / interval_s) + 1
    slot = offset + k * interval_s
    return slot if slot > after else slot + interval_s  # float rounding at an exact slot boundary


def is_due(tenant_id: str, *, since: float, until: float, interval_s: float) -> bool:
    """Whether one of the tenant's slots falls in `(since, until]` (never for an empty or reversed window)."""
    return next_slot(tenant_id, after=since, interval_s=interval_s) <= until


def due_tenants(tenant_ids: Iterable[str], *, since: float, until: float, interval_s: float) -> list[str]:
    """The tenants of `tenant_ids` with a slot in `(since, until]`, each once, in the order given."""
    return [t for t in dict.fromkeys(tenant_ids) if is_due(t, since=since, until=until, interval_s=interval_s)]


def next_wakeup(tenant_ids: Iterable[str], *, now: float, interval_s: float, max_sleep_s: float) -> float:
    """When to look again: the earliest next slot of these tenants, but no later than `now + max_sleep_s`
    (so a tenant enabled meanwhile, whose slot may come sooner, is noticed)."""
    wake = now + max_sleep_s
    for tenant_id in tenant_ids:
        wake = min(wake, next_slot(tenant_id, after=now, interval_s=interval_s))
    return wake
