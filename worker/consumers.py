"""Kafka consumers of the worker: poll → decode → handle per tenant → commit.

Delivery (ARCHITECTURE.md): offsets are committed as `offset + 1` only after the work is durable in
PostgreSQL; commits are throttled and forced on partition revoke and shutdown.

Tenant isolation: a batch's tenants succeed or fail independently (`worker/core/delivery.py` decides). A tenant
that Graph throttles, or whose work fails, is *parked*: its records (and any newer ones of that tenant) are set
aside until it is due again, while the loop goes on polling and the tenant's neighbours on the partition
proceed. A parked record stays uncommitted, so the partition's committed offset never passes it: parked work is
kept durable by the broker and replayed after a crash or rebalance (replays write nothing). Work that fails
non-transiently `max_attempts` times is dead-lettered (with the error) and its runs end `failed`; transient
trouble (Graph 5xx, PostgreSQL away) is retried with backoff without limit; refused credentials are recorded on
the tenant and its runs and not retried (the next hourly resync or a credential change tries again).

Losing the broker never ends the loop: a failed commit is dropped (the work is replayed, idempotently), the
topics are recreated if the broker came back empty, and a consumer that breaks is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from schemas import messages, topics
from worker import bus
from worker import store as db
from worker.config import Settings
from worker.core.delivery import (
    DONE,
    Action,
    Kind,
    Outcome,
    RetryPolicy,
    decide,
    poll_timeout_ms,
    restart_delay,
    to_commit,
)
from worker.engine.subscriptions import SubscriptionManager
from worker.engine.sync import SyncEngine, UnknownTenant
from worker.graph import GraphAuthFailed, GraphForbidden, GraphThrottled, GraphTransient

log = structlog.get_logger(__name__)

TRANSIENT = (GraphTransient, KafkaError, *db.TRANSIENT)  # db.TRANSIENT: OSError and TimeoutError included
COMMIT_TIMEOUT_S = 10.0
YIELD_MAX_S = 10.0  # longest a tenant's commands wait for change notifications to get their budget
MAX_HELD_RECORDS = 20_000  # above this many records held by tenants a consumer stops fetching until they drain


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
    notifications: int = 0  # how many change notifications (the tenant page's notifications per hour)


def coalesce(batch: Sequence[tuple[str, msgspec.Struct]]) -> dict[str, TenantWork]:
    """Group a batch of decoded messages into one TenantWork per tenant (pure)."""
    work: dict[str, TenantWork] = defaultdict(TenantWork)
    for _topic, msg in batch:
        if isinstance(msg, messages.ChangeNotification):
            work[msg.tenant_id].delta = True
            work[msg.tenant_id].groups |= msg.object_type == "group"
            work[msg.tenant_id].notified.add(msg.subscription_id)
            work[msg.tenant_id].notifications += 1
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


class Backlog:
    """How many of one consumer's tenants wait for its concurrency budget; another consumer's work may hold
    back while any do (`Handler`'s `yields_to`)."""

    def __init__(self) -> None:
        self.waiting = 0
        self._clear = asyncio.Event()
        self._clear.set()

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        self.waiting += 1
        self._clear.clear()
        try:
            yield
        finally:
            self.waiting -= 1
            if not self.waiting:
                self._clear.set()

    async def cleared(self, max_wait_s: float) -> None:
        """Return once nothing waits, or after `max_wait_s` whatever waits."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max_wait_s):
                await self._clear.wait()


class Handler:
    """Performs each tenant's coalesced work through the engine and the subscription manager, within one
    concurrency budget (one Handler per consumer, so notifications never wait behind resyncs).

    The worker's CPU is shared too: a wave of resyncs starves change notifications of the event loop even with
    budgets apart. So the commands' Handler `yields_to` the notifications' `backlog`: it starts no tenant's
    work while notifications wait for their budget (each start for at most `YIELD_MAX_S`, so a sustained flood
    of changes slows the resyncs down without stopping them)."""

    def __init__(
        self, *, engine: SyncEngine, subscriptions: SubscriptionManager, max_parallel: int,
        backlog: Backlog | None = None, yields_to: Backlog | None = None,
    ) -> None:
        self._engine = engine
        self._subs = subscriptions
        self._limit = asyncio.Semaphore(max_parallel)
        self._backlog = backlog
        self._yields_to = yields_to

    @contextlib.asynccontextmanager
    async def _budget(self) -> AsyncIterator[None]:
        """A place in the budget: after any backlog this yields to, counted in this one's backlog meanwhile."""
        with self._backlog.entered() if self._backlog is not None else contextlib.nullcontext():
            await self._limit.acquire()
        try:
            if self._yields_to is not None:  # with the place taken: each start yields, not all at once
                await self._yields_to.cleared(YIELD_MAX_S)
            yield
        finally:
            self._limit.release()

    async def __call__(self, batch: Sequence[tuple[str, msgspec.Struct]]) -> dict[str, Outcome]:
        """Do the batch's work, tenants in parallel (bounded), each serially; returns each tenant's outcome.

        Never raises for a tenant's failure: each tenant's outcome is its own.
        """
        work = coalesce(batch)
        tenants = list(work)
        results = await asyncio.gather(*(self._tenant(t, work[t]) for t in tenants))
        return dict(zip(tenants, results, strict=True))

    async def give_up(self, tenant_id: str, batch: Sequence[tuple[str, msgspec.Struct]], error: str) -> None:
        """The work was dead-lettered: its runs end failed, the error shows in the tenant's status."""
        w = coalesce(batch).get(tenant_id, TenantWork())
        await self._engine.fail_runs(tenant_id, [r for r in w.org_syncs.values() if r], error)

    async def _tenant(self, tenant_id: str, w: TenantWork) -> Outcome:
        async with self._budget():
            runs = [r for r in w.org_syncs.values() if r]
            try:
                try:
                    await self._perform(tenant_id, w)
                except UnknownTenant:
                    log.warning("work.unknown_tenant", tenant_id=tenant_id)
                    await self._engine.fail_runs(tenant_id, runs, f"Microsoft tenant {tenant_id} is not registered",
                                                 record=False)
                except GraphForbidden as exc:
                    # Credentials refused, consent revoked or a licence gone: retrying cannot help; the error is
                    # shown on the tenant and its runs, and the hourly resync (or a credential change) tries again.
                    error = f"{exc.code}: {exc.message}" if isinstance(exc, GraphAuthFailed) else (
                        f"{exc.status} {exc.code}: {exc.message}")
                    log.error("work.refused", tenant_id=tenant_id, status=exc.status, code=exc.code, error=exc.message)
                    await self._engine.fail_runs(tenant_id, runs, error)
                    return Outcome(Kind.REFUSED, error)
            except GraphThrottled as exc:
                return Outcome(Kind.THROTTLED, str(exc), retry_after=exc.retry_after)
            except TRANSIENT as exc:
                return Outcome(Kind.TRANSIENT, repr(exc)[:500])
            except Exception as exc:  # a failure we cannot classify: retried, then dead-lettered
                log.exception("work.failed", tenant_id=tenant_id, error=repr(exc))
                return Outcome(Kind.FAILED, f"{type(exc).__name__}: {exc}"[:500])
            return DONE

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
            await self._subs.record_notifications(tenant_id, w.notified, w.notifications)


class BatchHandler(Protocol):
    async def __call__(self, batch: Sequence[tuple[str, msgspec.Struct]]) -> dict[str, Outcome]: ...

    async def give_up(self, tenant_id: str, batch: Sequence[tuple[str, msgspec.Struct]], error: str) -> None: ...


Item = tuple[ConsumerRecord, msgspec.Struct]


@dataclass
class TenantQueue:
    """One tenant's records in a consumer: those waiting (queued behind its running work, or parked until
    `due`, monotonic) and those of the attempt under way, with its failures so far."""

    waiting: list[Item] = field(default_factory=list)
    running: list[Item] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    due: float = 0.0
    attempts: int = 0
    retries: int = 0

    def held(self) -> list[ConsumerRecord]:
        return [r for r, _ in self.running] + [r for r, _ in self.waiting]


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, on_revoke: Callable[[set[TopicPartition]], Awaitable[None]]) -> None:
        self._on_revoke = on_revoke

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._on_revoke(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        pass


def _tp(record: ConsumerRecord) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


class ConsumerLoop:
    """One consumer group over some topics, feeding decoded records to a handler, tenant by tenant.

    Polling never waits for work: each tenant with records gets a task of its own (the handler's budget bounds
    how many work at once), which takes the tenant's waiting records in order, coalesced. So a tenant whose
    work is slow, blocked or parked holds back none of the others, not even those on its partition.
    """

    def __init__(
        self, *, settings: Settings, topic_names: Sequence[str], group: str, handler: BatchHandler,
    ) -> None:
        self._settings = settings
        self._topics = list(topic_names)
        self._group = group
        self._handler = handler
        self._consumer = self._make_consumer()
        self._dead_letters = bus.make_producer(settings.kafka)
        self._policy = CommitPolicy(settings.sync.commit_interval_s)
        self._retry = RetryPolicy(max_attempts=max(1, settings.sync.max_attempts),
                                  max_retry_after_s=settings.graph.max_retry_after_s)
        self._failures = 0  # consecutive failed starts of the consumer: the backoff
        self._taken: dict[TopicPartition, int] = {}  # next offset after the last record polled
        self._committed: dict[TopicPartition, int] = {}
        self._tenants: dict[str, TenantQueue] = {}
        self._broken: KafkaError | None = None  # the dead-letter topic failed inside a tenant's task
        self._paused = False

    async def run(self) -> None:
        """Consume until cancelled; a consumer broken by the broker is replaced after a backoff."""
        while True:
            try:
                await self._consume()
            except KafkaError as exc:
                log.warning("consumer.restart", group=self._group, error=repr(exc))
                # What was polled belongs to the old member: replaying it writes nothing.
                self._taken, self._committed, self._tenants, self._broken = {}, {}, {}, None
                self._paused = False
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
            self._consumer.subscribe(self._topics, listener=_Rebalance(self._revoked))
            await self._consumer.start()
            self._failures = 0
            while True:
                await self._step()
        finally:
            try:
                await self._stop_tenants()
                await self.commit()  # what is done: work stopped half-way keeps its records held
            finally:
                await self._consumer.stop()
                await self._dead_letters.stop()

    async def _stop_tenants(self) -> None:
        tasks = [q.task for q in self._tenants.values() if q.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _step(self) -> None:
        if self._broken is not None:
            raise self._broken
        self._backpressure()
        dues = [q.due for q in self._tenants.values() if q.task is None and q.waiting]
        records = await self._consumer.getmany(
            timeout_ms=poll_timeout_ms(time.monotonic(), dues, idle_ms=500),
            max_records=self._settings.sync.batch_max_messages,
        )
        flat = [r for rs in records.values() for r in rs]
        if flat:
            await self._take(flat)
        self._start_due(time.monotonic())
        if self._policy.should_commit(time.monotonic(), len(self._offsets_to_commit())):
            await self.commit()

    async def _take(self, flat: list[ConsumerRecord]) -> None:
        """Queue each record behind its tenant's earlier ones; undecodable ones are dead-lettered at once."""
        decoded, poison = decode_records(flat)
        for record, error in poison:
            await self._dead_letter(record, error)  # the broker is away: KafkaError restarts the consumer
        for record, msg in decoded:
            tenant = msg.tenant_id  # type: ignore[attr-defined]
            self._tenants.setdefault(tenant, TenantQueue()).waiting.append((record, msg))
        for record in flat:  # past these, only records still held by their tenant keep the offset back
            tp = _tp(record)
            self._taken[tp] = max(self._taken.get(tp, 0), record.offset + 1)

    def _start_due(self, now: float) -> None:
        for tenant, queue in self._tenants.items():
            if queue.task is None and queue.waiting and queue.due <= now:
                queue.task = asyncio.create_task(self._work(tenant, queue), name=f"{self._group}:{tenant}")

    async def _work(self, tenant: str, queue: TenantQueue) -> None:
        """The tenant's waiting records, attempt after attempt, until none wait or the tenant is parked."""
        try:
            while queue.waiting and queue.due <= time.monotonic():
                queue.running, queue.waiting = queue.waiting, []
                started = time.monotonic()
                outcomes = await self._handler([(r.topic, m) for r, m in queue.running])
                outcome = outcomes.get(tenant, DONE)
                await self._settle(tenant, queue, outcome)
                log.info("tenant.done", group=self._group, tenant_id=tenant, outcome=outcome.kind.value,
                         duration_ms=round((time.monotonic() - started) * 1000, 1))
        except KafkaError as exc:  # the dead-letter topic is unreachable: the consumer restarts
            self._broken = exc
        finally:
            queue.task = None
            if not queue.waiting and not queue.running and self._tenants.get(tenant) is queue:
                del self._tenants[tenant]

    async def _settle(self, tenant: str, queue: TenantQueue, outcome: Outcome) -> None:
        """Perform the decision about one attempt at a tenant's work; its records stop being `running` only
        once they are done, dead-lettered, or back among the waiting ones."""
        decision = decide(outcome, attempts=queue.attempts, retries=queue.retries, now=time.monotonic(),
                          policy=self._retry)
        items = queue.running
        if decision.action is Action.PARK:
            owned = self._consumer.assignment()
            kept = [(r, m) for r, m in items if _tp(r) in owned]  # revoked meanwhile: the new owner replays them
            queue.waiting = kept + queue.waiting
            queue.due, queue.attempts, queue.retries = decision.due, decision.attempts, decision.retries
            log.warning("tenant.parked", group=self._group, tenant_id=tenant, outcome=outcome.kind.value,
                        due_in_s=round(decision.due - time.monotonic(), 2), attempts=decision.attempts,
                        records=len(queue.waiting), error=outcome.error)
        elif decision.action is Action.DEAD_LETTER:
            error = f"failed {decision.attempts} times: {outcome.error}"
            for record, _ in items:
                await self._dead_letter(record, error)
            queue.attempts = queue.retries = 0
            try:
                await self._handler.give_up(tenant, [(r.topic, m) for r, m in items], error)
            except Exception as exc:  # its runs stay as they are; the records are dead-lettered already
                log.warning("tenant.give_up_failed", tenant_id=tenant, error=repr(exc))
        else:
            queue.attempts = queue.retries = 0
        queue.running = []

    def _backpressure(self) -> None:
        """Stop fetching while too many records are held (a long outage of PostgreSQL or Graph); resume once
        they drain. Parked tenants keep being retried meanwhile."""
        held = sum(len(q.waiting) + len(q.running) for q in self._tenants.values())
        if held > MAX_HELD_RECORDS and not self._paused:
            self._consumer.pause(*self._consumer.assignment())
            self._paused = True
            log.warning("consumer.paused", group=self._group, held_records=held)
        elif held <= MAX_HELD_RECORDS // 2 and self._paused:
            self._consumer.resume(*self._consumer.assignment())
            self._paused = False

    def _offsets_to_commit(self) -> dict[TopicPartition, int]:
        held: dict[TopicPartition, int] = {}
        for queue in self._tenants.values():
            for record in queue.held():
                tp = _tp(record)
                held[tp] = min(held.get(tp, record.offset), record.offset)
        return to_commit(self._taken, held, self._committed)

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        """Commit what is done, then forget the revoked partitions: their new owner replays from there (work
        of theirs under way finishes here too; the tenant lock keeps the two apart, replays write nothing)."""
        await self.commit()
        for tp in revoked:
            self._taken.pop(tp, None)
            self._committed.pop(tp, None)
        for queue in self._tenants.values():
            queue.waiting = [(r, m) for r, m in queue.waiting if _tp(r) not in revoked]

    async def _backoff(self) -> None:
        self._failures += 1
        delay = restart_delay(self._failures, cap_s=30.0, jitter=random.uniform(0.5, 1.0))
        log.info("consumer.backoff", group=self._group, delay_s=round(delay, 2), failures=self._failures)
        await asyncio.sleep(delay)

    async def commit(self) -> None:
        """Commit what is done, never past a record still held by its tenant (waiting, parked or under way). A
        failed commit is dropped, never retried in a loop: the records are replayed after a restart or
        rebalance, which writes nothing. A broker that came back empty (Tansu keeps topics in memory) answers
        with unknown-topic errors: the topics are recreated."""
        self._policy.last = time.monotonic()
        owned = self._consumer.assignment()
        pending = {tp: offset for tp, offset in self._offsets_to_commit().items() if tp in owned}
        if not pending:
            return
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT_S):
                await self._consumer.commit(pending)
            self._committed.update(pending)
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


def decode_records(records: Sequence[ConsumerRecord]) -> tuple[list[Item], list[tuple[ConsumerRecord, str]]]:
    """Decode each record by its topic's type; undecodable ones are poison."""
    good: list[Item] = []
    bad: list[tuple[ConsumerRecord, str]] = []
    for r in records:
        type_ = messages.BY_TOPIC.get(r.topic)
        if type_ is None:
            bad.append((r, f"unexpected topic {r.topic}"))
            continue
        try:
            good.append((r, messages.decode(r.value or b"", type_)))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            bad.append((r, f"undecodable {type_.__name__}: {exc}"))
    return good, bad


def decode_batch(records: Sequence[ConsumerRecord]) -> tuple[list[tuple[str, msgspec.Struct]],
                                                             list[tuple[ConsumerRecord, str]]]:
    """Decode each record by its topic's type; undecodable ones are poison."""
    good, bad = decode_records(records)
    return [(r.topic, m) for r, m in good], bad
