"""The scheduler: every interval, a `resync` and a `renew-subscriptions` command per syncing tenant.

It runs on every replica and acts only where it holds the leader lock (a PostgreSQL advisory lock held on a
dedicated connection: if that replica dies, its connection closes and another takes over). It never
overlaps itself: the next tick is planned only after the current one has been enqueued.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import asyncpg
import structlog
from aiokafka.errors import KafkaError

from schemas import messages, topics
from worker.bus import KafkaPublisher, Publisher, ensure_topics
from worker.config import Settings
from worker.store import sync as store

log = structlog.get_logger(__name__)

LEADER_LOCK = 0x656E7472_6C656164  # "entrlead"


async def enqueue_tick(conn: asyncpg.Connection, publisher: Publisher, *, reason: str = "scheduled") -> int:
    """Enqueue one round of resync + renewal for every tenant with an enabled sync; returns the count."""
    now = datetime.now(UTC).isoformat()
    tenants = await store.tenants_with_enabled_sync(conn)
    for tenant_id in tenants:
        for command in ("renew-subscriptions", "resync"):
            await publisher.publish(topics.COMMANDS, tenant_id, messages.Command(
                command=command, tenant_id=tenant_id, reason=reason, requested_at=now))  # type: ignore[arg-type]
    return len(tenants)


async def run_scheduler(settings: Settings) -> None:
    """Lead when possible, until cancelled. Losing PostgreSQL (and with it the leader lock) or the broker
    ends the current leadership, never the process: it reconnects after a backoff and competes again."""
    failures = 0
    while True:
        try:
            await _lead(settings)
        except (KafkaError, OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            failures += 1
            delay = min(60.0, 0.5 * 2 ** min(failures, 7)) * random.uniform(0.5, 1.0)
            log.warning("scheduler.retry", error=repr(exc), delay_s=round(delay, 2))
            await asyncio.sleep(delay)


async def _lead(settings: Settings) -> None:
    await ensure_topics(settings.kafka)
    publisher = KafkaPublisher(settings.kafka)
    await publisher.start()
    try:
        conn = await asyncpg.connect(settings.database.url)
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK):
                await asyncio.sleep(min(30.0, settings.sync.resync_interval_s))
            log.info("scheduler.leader")
            while True:
                count = await enqueue_tick(conn, publisher)
                log.info("scheduler.tick", tenants=count, next_in_s=settings.sync.resync_interval_s)
                await asyncio.sleep(settings.sync.resync_interval_s)
        finally:
            await conn.close()
    finally:
        await publisher.stop()
