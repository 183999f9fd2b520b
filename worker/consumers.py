"""Kafka consumers of the worker: poll → decode → handle per tenant → commit.

Delivery (ARCHITECTURE.md): offsets are committed as `offset + 1` only after the work is durable in
PostgreSQL; commits are throttled and forced on partition revoke and shutdown. A message that can never
succeed goes to `entra.dead-letter` and its offset moves on. A transient failure (Graph throttling or 5xx,
PostgreSQL unavailable) rewinds the batch and retries it after a backoff, without committing.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import structlog
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from schemas import messages, topics
from worker import bus
from worker.config import Settings
from worker.graph import GraphBadRequest, GraphForbidden, GraphTransient
from worker.subscriptions import SubscriptionManager
from worker.sync import SyncEngine, UnknownTenant

log = structlog.get_logger(__name__)

TRANSIENT = (GraphTransient, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError,
             asyncio.TimeoutError, asyncpg.exceptions.DeadlockDetectedError,
             asyncpg.exceptions.SerializationError)


class Poison(Exception):
    """This message can never succeed: dead-letter it."""


@dataclass
class CommitPolicy:
    """When to commit: throttled to one commit per `interval_s` (arroyo's pattern), forced on demand."""

    interval_s: float
    last: float = 0.0

    def should_commit(self, now: float, pending: int) -> bool:
        return pending > 0 and now - self.last >= self.interval_s


@dataclass
class TenantWork:
    """Everything one batch asks of one tenant, coalesced: N notifications become one delta call."""

    delta: bool = False
    groups: bool = False  # a group changed: walk groups delta too
    resync: bool = False
    renew: bool = False
    org_syncs: dict[str, str | None] = field(default_factory=dict)  # organization id -> run id
    confirmed: set[str] = field(default_factory=set)  # organizations whose held deactivations are confirmed
    reauthorize: set[str] = field(default_factory=set)
    recreate: bool = False


def coalesce(batch: Sequence[tuple[str, msgspec.Struct]]) -> dict[str, TenantWork]:
    """Group a batch of decoded messages into one TenantWork per tenant (pure)."""
    work: dict[str, TenantWork] = defaultdict(TenantWork)
    for _topic, msg in batch:
        if isinstance(msg, messages.ChangeNotification):
            work[msg.tenant_id].delta = True
            work[msg.tenant_id].groups |= msg.object_type == "group"
        elif isinstance(msg, messages.LifecycleNotification):
            w = work[msg.tenant_id]
            if msg.lifecycle_event == "reauthorizationRequired":
                w.reauthorize.add(msg.subscription_id)
            elif msg.lifecycle_event == "subscriptionRemoved":
                w.recreate = w.resync = True
            elif msg.lifecycle_event == "missed":
                w.resync = True
        elif isinstance(msg, messages.Command):
            w = work[msg.tenant_id]
            if msg.command == "resync":
                w.resync = True
            elif msg.command == "renew-subscriptions":
                w.renew = True
            elif msg.command == "org-sync" and msg.organization_id:
                w.org_syncs[msg.organization_id] = msg.run_id
                if msg.confirm_deactivations:
                    w.confirmed.add(msg.organization_id)
                w.renew = True  # an Organization just started syncing: its tenant needs subscriptions
    return dict(work)


class Handler:
    """Performs a tenant's coalesced work through the engine and the subscription manager."""

    def __init__(self, *, engine: SyncEngine, subscriptions: SubscriptionManager, max_parallel: int) -> None:
        self._engine = engine
        self._subs = subscriptions
        self._limit = asyncio.Semaphore(max_parallel)

    async def __call__(self, batch: Sequence[tuple[str, msgspec.Struct]]) -> dict[str, str]:
        """Do the batch's work; returns the tenants whose messages are poison, with why.

        Tenants run in parallel (bounded), each serially. A transient failure of any tenant is raised
        after all have finished, so the batch is retried; replaying the others writes nothing.
        """
        work = coalesce(batch)
        tenants = list(work)
        results = await asyncio.gather(*(self._tenant(t, work[t]) for t in tenants), return_exceptions=True)
        poison: dict[str, str] = {}
        for tenant_id, result in zip(tenants, results, strict=True):
            if isinstance(result, Poison):
                poison[tenant_id] = str(result)
            elif isinstance(result, BaseException):
                raise result
        return poison

    async def _tenant(self, tenant_id: str, w: TenantWork) -> None:
        async with self._limit:
            try:
                await self._perform(tenant_id, w)
            except UnknownTenant:
                log.warning("work.unknown_tenant", tenant_id=tenant_id)
            except GraphForbidden as exc:
                # Consent revoked or a licence gone: retrying cannot help; the hourly resync tries again.
                log.error("work.forbidden", tenant_id=tenant_id, status=exc.status, code=exc.code)
            except GraphBadRequest as exc:
                raise Poison(str(exc)) from exc

    async def _perform(self, tenant_id: str, w: TenantWork) -> None:
        for sub_id in w.reauthorize:
            if not await self._subs.reauthorize(tenant_id, sub_id):
                w.recreate = True
        if w.resync:
            await self._engine.resync(tenant_id)
        elif w.delta:
            await self._engine.sync_changes(tenant_id, groups=w.groups)
        for org_id, run_id in w.org_syncs.items():
            await self._engine.org_sync(tenant_id, org_id, run_id, confirm_deactivations=org_id in w.confirmed)
        if w.renew or w.recreate:
            await self._subs.reconcile_tenant(tenant_id)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, on_revoke: Callable[[], Awaitable[None]]) -> None:
        self._on_revoke = on_revoke

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._on_revoke()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        pass


class ConsumerLoop:
    """One consumer group over some topics, feeding decoded batches to a handler."""

    def __init__(
        self, *, settings: Settings, topic_names: Sequence[str], group: str,
        handler: Callable[[Sequence[tuple[str, msgspec.Struct]]], Awaitable[dict[str, str]]],
    ) -> None:
        self._settings = settings
        self._topics = list(topic_names)
        self._handler = handler
        self._consumer = bus.make_consumer(settings.kafka, group_id=group)
        self._dead_letters = bus.make_producer(settings.kafka)
        self._policy = CommitPolicy(settings.sync.commit_interval_s)
        self._pending: dict[TopicPartition, int] = {}
        self._failures = 0

    async def run(self) -> None:
        await self._dead_letters.start()
        self._consumer.subscribe(self._topics, listener=_Rebalance(self.commit))
        await self._consumer.start()
        try:
            while True:
                await self._step()
        finally:
            try:
                await self.commit()
            finally:
                await self._consumer.stop()
                await self._dead_letters.stop()

    async def _step(self) -> None:
        records = await self._consumer.getmany(
            timeout_ms=500, max_records=self._settings.sync.batch_max_messages
        )
        flat = [r for rs in records.values() for r in rs]
        if flat:
            await self._process(records, flat)
        if self._policy.should_commit(time.monotonic(), len(self._pending)):
            await self.commit()

    async def _process(self, records: dict[TopicPartition, list[ConsumerRecord]], flat: list[ConsumerRecord]) -> None:
        decoded, poison = decode_batch(flat)
        started = time.monotonic()
        try:
            poison_tenants = await self._handler(decoded)
        except TRANSIENT as exc:
            self._failures += 1
            delay = min(30.0, 0.5 * 2 ** min(self._failures, 6)) * random.uniform(0.5, 1.0)
            log.warning("batch.retry", error=repr(exc), messages=len(flat), delay_s=round(delay, 2))
            for tp, rs in records.items():
                self._consumer.seek(tp, rs[0].offset)
            await asyncio.sleep(delay)
            return
        self._failures = 0
        poison += [(r, poison_tenants[k]) for r in flat
                   if (k := (r.key or b"").decode(errors="replace")) in poison_tenants]
        for record, error in poison:
            await self._dead_letter(record, error)
        for tp, rs in records.items():
            self._pending[tp] = rs[-1].offset + 1
        log.info("batch.done", messages=len(flat), dead_lettered=len(poison),
                 duration_ms=round((time.monotonic() - started) * 1000, 1))

    async def commit(self) -> None:
        pending, self._pending = self._pending, {}
        if pending:
            await self._consumer.commit(pending)
        self._policy.last = time.monotonic()

    async def _dead_letter(self, record: ConsumerRecord, error: str) -> None:
        letter = messages.DeadLetter(
            topic=record.topic, partition=record.partition, offset=record.offset,
            key=record.key.decode(errors="replace") if record.key else None,
            value=(record.value or b"").decode(errors="replace"), error=error,
            failed_at=datetime.now(UTC).isoformat(),
        )
        await self._dead_letters.send_and_wait(topics.DEAD_LETTER, messages.encode(letter), key=record.key)
        log.error("message.dead_lettered", topic=record.topic, partition=record.partition,
                  offset=record.offset, error=error)


def decode_batch(records: Sequence[ConsumerRecord]) -> tuple[list[tuple[str, msgspec.Struct]],
                                                             list[tuple[ConsumerRecord, str]]]:
    """Decode each record by its topic's type; undecodable ones are poison."""
    good: list[tuple[str, msgspec.Struct]] = []
    bad: list[tuple[ConsumerRecord, str]] = []
    for r in records:
        type_ = messages.BY_TOPIC.get(r.topic)
        if type_ is None:
            bad.append((r, f"unexpected topic {r.topic}"))
            continue
        try:
            good.append((r.topic, messages.decode(r.value or b"", type_)))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            bad.append((r, f"undecodable {type_.__name__}: {exc}"))
    return good, bad
