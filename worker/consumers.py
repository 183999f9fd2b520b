"""Kafka consumers of the worker: poll → decode → handle per tenant → commit.

Delivery (ARCHITECTURE.md): offsets are committed as `offset + 1` only after the work is durable in
PostgreSQL; commits are throttled and forced on partition revoke and shutdown. A message that can never
succeed goes to `entra.dead-letter` and its offset moves on. A transient failure (Graph throttling or 5xx,
PostgreSQL unavailable, the broker away) rewinds the batch and retries it after a backoff, without
committing; an unexpected error does the same, and after a few attempts a batch of notifications is
dead-lettered rather than stall its partition (the hourly resync and renewal repair what it would have done),
while a batch of commands (an Organization's initial sync has no other trigger) keeps being retried. Losing the broker
never ends the loop: a failed commit is dropped (the work is replayed, idempotently), the topics are
recreated if the broker came back empty, and a consumer that breaks is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from schemas import messages, topics
from worker import bus
from worker.config import Settings
from worker.graph import GraphBadRequest, GraphForbidden, GraphTransient
from worker.subscriptions import SubscriptionManager
from worker.sync import SyncEngine, UnknownTenant

log = structlog.get_logger(__name__)

TRANSIENT = (GraphTransient, KafkaError, OSError, asyncio.TimeoutError,
             asyncpg.PostgresConnectionError,  # incl. ConnectionDoesNotExistError
             asyncpg.InterfaceError,  # incl. "connection is closed", released while in use
             asyncpg.exceptions.OperatorInterventionError,  # pg_terminate_backend, shutdown, cancel
             asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
             asyncpg.exceptions.CannotConnectNowError,
             asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)
MAX_UNEXPECTED = 5  # consecutive unexpected failures of a notification batch before it is dead-lettered
COMMIT_TIMEOUT_S = 10.0


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
    notified: set[str] = field(default_factory=set)  # subscriptions whose change notifications these are


def coalesce(batch: Sequence[tuple[str, msgspec.Struct]]) -> dict[str, TenantWork]:
    """Group a batch of decoded messages into one TenantWork per tenant (pure)."""
    work: dict[str, TenantWork] = defaultdict(TenantWork)
    for _topic, msg in batch:
        if isinstance(msg, messages.ChangeNotification):
            work[msg.tenant_id].delta = True
            work[msg.tenant_id].groups |= msg.object_type == "group"
            work[msg.tenant_id].notified.add(msg.subscription_id)
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
                # Credentials refused, consent revoked or a licence gone: retrying cannot help; the error is
                # shown in the tenant's sync status and the hourly resync tries again.
                log.error("work.forbidden", tenant_id=tenant_id, status=exc.status, code=exc.code, error=exc.message)
                await self._engine.record_error(tenant_id, f"{exc.status} {exc.code}: {exc.message}")
            except GraphBadRequest as exc:
                raise Poison(str(exc)) from exc

    async def _perform(self, tenant_id: str, w: TenantWork) -> None:
        for sub_id in w.reauthorize:
            if not await self._subs.reauthorize(tenant_id, sub_id):
                w.recreate = True
        # Subscriptions first: changes made while the resync runs then arrive as notifications.
        if w.renew or w.recreate:
            await self._subs.reconcile_tenant(tenant_id)
        if w.resync:
            await self._engine.resync(tenant_id)
        elif w.delta:
            await self._engine.sync_changes(tenant_id, groups=w.groups)
        for org_id, run_id in w.org_syncs.items():
            await self._engine.org_sync(tenant_id, org_id, run_id, confirm_deactivations=org_id in w.confirmed)
        if w.notified:
            await self._subs.record_notifications(tenant_id, w.notified)


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
        self._group = group
        self._handler = handler
        self._consumer = self._make_consumer()
        self._dead_letters = bus.make_producer(settings.kafka)
        self._policy = CommitPolicy(settings.sync.commit_interval_s)
        self._pending: dict[TopicPartition, int] = {}
        self._failures = 0  # consecutive failed attempts (batches or the consumer itself): the backoff
        self._unexpected = 0  # consecutive unexpected failures of the current batch
        # Notifications and lifecycle events are repaired by the hourly resync and renewal; commands are not.
        self._may_give_up = topics.COMMANDS not in self._topics

    async def run(self) -> None:
        """Consume until cancelled; a consumer broken by the broker is replaced after a backoff."""
        while True:
            try:
                await self._consume()
            except KafkaError as exc:
                log.warning("consumer.restart", group=self._group, error=repr(exc))
                self._pending.clear()  # belongs to the old member; replaying it writes nothing
                self._consumer = self._make_consumer()
                self._dead_letters = bus.make_producer(self._settings.kafka)
                await self._backoff()

    def _make_consumer(self) -> AIOKafkaConsumer:
        return bus.make_consumer(
            self._settings.kafka, group_id=self._group,
            # While the broker is away, aiokafka retries its fetches and coordinator lookups at this pace
            # (its default, 100 ms, logs a few hundred lines a second).
            retry_backoff_ms=500,
            # A SIGKILLed member is noticed after this long and its partitions go to the others (or to the
            # restarted worker); heartbeats run beside the work, so a long unit of work does not count.
            session_timeout_ms=self._settings.kafka.session_timeout_ms,
            heartbeat_interval_ms=self._settings.kafka.heartbeat_interval_ms,
            # A full resync of a large tenant may take longer than aiokafka's 5-minute default between polls.
            max_poll_interval_ms=30 * 60 * 1000,
        )

    async def _consume(self) -> None:
        try:
            await bus.ensure_topics(self._settings.kafka)
            await self._dead_letters.start()
            self._consumer.subscribe(self._topics, listener=_Rebalance(self.commit))
            await self._consumer.start()
            self._failures = 0
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
            log.warning("batch.retry", error=repr(exc), messages=len(flat))
            await self._rewind(records)
            return
        except Exception as exc:
            self._unexpected += 1
            if self._unexpected < MAX_UNEXPECTED or not self._may_give_up:
                log.exception("batch.failed", error=repr(exc), messages=len(flat), attempt=self._unexpected)
                await self._rewind(records)
                return
            log.exception("batch.gave_up", error=repr(exc), messages=len(flat))
            poison, poison_tenants = [(r, f"failed {MAX_UNEXPECTED} times: {exc!r}") for r in flat], {}
        try:
            poison += [(r, poison_tenants[k]) for r in flat
                       if (k := (r.key or b"").decode(errors="replace")) in poison_tenants]
            for record, error in poison:
                await self._dead_letter(record, error)
        except KafkaError as exc:  # the dead-letter topic is unreachable: keep the batch
            log.warning("batch.retry", error=repr(exc), messages=len(flat))
            await self._rewind(records)
            return
        self._failures = self._unexpected = 0
        for tp, rs in records.items():
            self._pending[tp] = rs[-1].offset + 1
        log.info("batch.done", messages=len(flat), dead_lettered=len(poison),
                 duration_ms=round((time.monotonic() - started) * 1000, 1))

    async def _rewind(self, records: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Seek back to the batch's first offsets and back off, so the batch is retried without a tight loop."""
        for tp, rs in records.items():
            try:
                self._consumer.seek(tp, rs[0].offset)
            except (KafkaError, AssertionError):  # revoked meanwhile: its new owner replays it
                self._pending.pop(tp, None)
        await self._backoff()

    async def _backoff(self) -> None:
        self._failures += 1
        delay = min(30.0, 0.5 * 2 ** min(self._failures, 6)) * random.uniform(0.5, 1.0)
        log.info("consumer.backoff", group=self._group, delay_s=round(delay, 2), failures=self._failures)
        await asyncio.sleep(delay)

    async def commit(self) -> None:
        """Commit what is done. A failed commit is dropped, never retried in a loop: the records are
        replayed after a restart or rebalance, which writes nothing. A broker that came back empty (Tansu
        keeps topics in memory) answers with unknown-topic errors: the topics are recreated."""
        pending, self._pending = self._pending, {}
        self._policy.last = time.monotonic()
        if not pending:
            return
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT_S):
                await self._consumer.commit(pending)
        except (KafkaError, TimeoutError) as exc:
            log.warning("commit.failed", group=self._group, error=repr(exc), partitions=len(pending))
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                async with asyncio.timeout(COMMIT_TIMEOUT_S):
                    await bus.ensure_topics(self._settings.kafka)

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
