"""The scheduler: a `resync` and a `renew-subscriptions` command per syncing tenant, once per interval each.

It runs on every replica and acts only where it holds the leader lock (a PostgreSQL advisory lock held on a
dedicated connection: if that replica dies, its connection closes and another takes over). Tenants are not
enqueued all at once: each has a stable slot inside the interval (`worker/core/schedule.py`), so a fleet's
full resyncs are spread over the hour instead of arriving as one wave. It never overlaps itself: one loop
looks at the window since its last look, enqueues the tenants due in it, then sleeps until the next slot.
Subscription renewal rides on the same slot (renewal starts days before expiry, so an hour's spread is
harmless).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable
from datetime import UTC, datetime

import structlog

from schemas import messages, topics
from worker import store as db
from worker.bus import BusError, KafkaPublisher, Publisher, ensure_topics
from worker.config import Settings
from worker.core.delivery import restart_delay
from worker.core.schedule import due_tenants, next_wakeup
from worker.store import leader
from worker.store.tenants import tenants_with_enabled_sync

log = structlog.get_logger(__name__)

MAX_SLEEP_S = 30.0  # look at least this often, so a newly enabled tenant's slot is not slept through


async def enqueue_tenants(publisher: Publisher, tenant_ids: Iterable[str], *, reason: str = "scheduled") -> int:
    """Enqueue renewal + resync for each tenant now; returns the count."""
    now = datetime.now(UTC).isoformat()
    count = 0
    for tenant_id in tenant_ids:
        for command in ("renew-subscriptions", "resync"):
            await publisher.publish(topics.COMMANDS, tenant_id, messages.Command(
                command=command, tenant_id=tenant_id, reason=reason, requested_at=now))  # type: ignore[arg-type]
        count += 1
    return count


async def enqueue_tick(conn: db.Conn, publisher: Publisher, *, reason: str = "scheduled") -> int:
    """Enqueue one round for every tenant with an enabled sync at once (not the hourly path: see `_lead`)."""
    return await enqueue_tenants(publisher, await tenants_with_enabled_sync(conn), reason=reason)


async def run_scheduler(settings: Settings) -> None:
    """Lead when possible, until cancelled. Losing PostgreSQL (and with it the leader lock) or the broker
    ends the current leadership, never the process: it reconnects after a backoff and competes again."""
    failures = 0
    while True:
        try:
            await _lead(settings)
        except (BusError, OSError, TimeoutError, *db.ANY_ERROR) as exc:
            failures += 1
            delay = restart_delay(failures, cap_s=60.0, jitter=random.uniform(0.5, 1.0))
            log.warning("scheduler.retry", error=repr(exc), delay_s=round(delay, 2))
            await asyncio.sleep(delay)


async def _lead(settings: Settings) -> None:
    await ensure_topics(settings.kafka)
    publisher = KafkaPublisher(settings.kafka)
    await publisher.start()
    try:
        conn = await db.connect(settings.database.url)
        try:
            interval = settings.sync.resync_interval_s
            while not await leader.try_lead(conn):
                await asyncio.sleep(min(MAX_SLEEP_S, interval))
            log.info("scheduler.leader")
            # A new leader starts its window now: tenants wait for their own slot (at most one interval),
            # so a leader change or restart never sends the whole fleet at once.
            since = time.time()
            while True:
                tenants = await tenants_with_enabled_sync(conn)
                now = time.time()
                due = due_tenants(tenants, since=since, until=now, interval_s=interval)
                if due:
                    await enqueue_tenants(publisher, due)
                    log.info("scheduler.tick", tenants=len(due), syncing=len(tenants))
                since = now
                wake = next_wakeup(tenants, now=now, interval_s=interval, max_sleep_s=min(MAX_SLEEP_S, interval))
                await asyncio.sleep(max(0.0, wake - time.time()))
        finally:
            await conn.close()
    finally:
        await publisher.stop()
