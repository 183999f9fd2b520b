"""The worker's consumer loops: poll → decode → each tenant's work (`work.py` performs it) → commit. The broker is
reached only through the bus adapter (`worker.bus.consumer`: the group member, its records, dead letters).

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import msgspec
import structlog

from schemas import messages
from worker import bus
from worker.bus.consumer import DeadLetters, GroupConsumer, Partition, Record, partition_of
from worker.config import Settings
from worker.core.delivery import (
    DONE,
    Action,
    Outcome,
    RetryPolicy,
    decide,
    poll_timeout_ms,
    restart_delay,
    to_commit,
)

log = structlog.get_logger(__name__)

COMMIT_TIMEOUT_S = 10.0
MAX_HELD_RECORDS = 20_000  # above this many records held by tenants a consumer stops fetching until they drain


@dataclass
class CommitPolicy:
    """When to commit: throttled to one commit per `interval_s` (arroyo's pattern), forced on demand."""

    interval_s: float
    last: float = 0.0

    def should_commit(self, now: float, pending: int) -> bool:
        return pending > 0 and now - self.last >= self.interval_s


class BatchHandler(Protocol):
    async def __call__(self, batch: Sequence[tuple[str, msgspec.Struct]]) -> dict[str, Outcome]: ...

    async def give_up(self, tenant_id: str, batch: Sequence[tuple[str, msgspec.Struct]], error: str) -> None: ...


Item = tuple[Record, msgspec.Struct]


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

    def held(self) -> list[Record]:
        return [r for r, _ in self.running] + [r for r, _ in self.waiting]


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
        self._dead_letters = DeadLetters(settings.kafka)
        self._policy = CommitPolicy(settings.sync.commit_interval_s)
        self._retry = RetryPolicy(max_attempts=max(1, settings.sync.max_attempts),
                                  max_retry_after_s=settings.graph.max_retry_after_s)
        self._failures = 0  # consecutive failed starts of the consumer: the backoff
        self._taken: dict[Partition, int] = {}  # next offset after the last record polled
        self._committed: dict[Partition, int] = {}
        self._tenants: dict[str, TenantQueue] = {}
        self._broken: bus.BusError | None = None  # the dead-letter topic failed inside a tenant's task
        self._paused = False

    async def run(self) -> None:
        """Consume until cancelled; a consumer broken by the broker is replaced after a backoff."""
        while True:
            try:
                await self._consume()
            except bus.BusError as exc:
                log.warning("consumer.restart", group=self._group, error=repr(exc))
                # What was polled belongs to the old member: replaying it writes nothing.
                self._taken, self._committed, self._tenants, self._broken = {}, {}, {}, None
                self._paused = False
                self._consumer = self._make_consumer()
                self._dead_letters = DeadLetters(self._settings.kafka)
                await self._backoff()

    def _make_consumer(self) -> GroupConsumer:
        return GroupConsumer(self._settings.kafka, self._group, self._topics, on_revoke=self._revoked)

    async def _consume(self) -> None:
        try:
            await bus.ensure_topics(self._settings.kafka)
            await self._dead_letters.start()
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
        flat = await self._consumer.poll(
            timeout_ms=poll_timeout_ms(time.monotonic(), dues, idle_ms=500),
            max_records=self._settings.sync.batch_max_messages,
        )
        if flat:
            await self._take(flat)
        self._start_due(time.monotonic())
        if self._policy.should_commit(time.monotonic(), len(self._offsets_to_commit())):
            await self.commit()

    async def _take(self, flat: list[Record]) -> None:
        """Queue each record behind its tenant's earlier ones; undecodable ones are dead-lettered at once."""
        decoded, poison = decode_records(flat)
        for record, error in poison:
            await self._dead_letters.send(record, error)  # the broker is away: BusError restarts the consumer
        for record, msg in decoded:
            tenant = msg.tenant_id  # type: ignore[attr-defined]
            self._tenants.setdefault(tenant, TenantQueue()).waiting.append((record, msg))
        for record in flat:  # past these, only records still held by their tenant keep the offset back
            tp = partition_of(record)
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
        except bus.BusError as exc:  # the dead-letter topic is unreachable: the consumer restarts
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
            # Records of partitions revoked meanwhile are not kept: the new owner replays them.
            kept = [(r, m) for r, m in items if partition_of(r) in owned]
            queue.waiting = kept + queue.waiting
            queue.due, queue.attempts, queue.retries = decision.due, decision.attempts, decision.retries
            log.warning("tenant.parked", group=self._group, tenant_id=tenant, outcome=outcome.kind.value,
                        due_in_s=round(decision.due - time.monotonic(), 2), attempts=decision.attempts,
                        records=len(queue.waiting), error=outcome.error)
        elif decision.action is Action.DEAD_LETTER:
            error = f"failed {decision.attempts} times: {outcome.error}"
            for record, _ in items:
                await self._dead_letters.send(record, error)
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
            self._consumer.pause()
            self._paused = True
            log.warning("consumer.paused", group=self._group, held_records=held)
        elif held <= MAX_HELD_RECORDS // 2 and self._paused:
            self._consumer.resume()
            self._paused = False

    def _offsets_to_commit(self) -> dict[Partition, int]:
        held: dict[Partition, int] = {}
        for queue in self._tenants.values():
            for record in queue.held():
                tp = partition_of(record)
                held[tp] = min(held.get(tp, record.offset), record.offset)
        return to_commit(self._taken, held, self._committed)

    async def _revoked(self, revoked: set[Partition]) -> None:
        """Commit what is done, then forget the revoked partitions: their new owner replays from there (work
        of theirs under way finishes here too; the tenant lock keeps the two apart, replays write nothing)."""
        await self.commit()
        for tp in revoked:
            self._taken.pop(tp, None)
            self._committed.pop(tp, None)
        for queue in self._tenants.values():
            queue.waiting = [(r, m) for r, m in queue.waiting if partition_of(r) not in revoked]

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
        except (bus.BusError, TimeoutError) as exc:
            log.warning("commit.failed", group=self._group, error=repr(exc), partitions=len(pending))
            with contextlib.suppress(bus.BusError, OSError, TimeoutError):
                async with asyncio.timeout(COMMIT_TIMEOUT_S):
                    await bus.ensure_topics(self._settings.kafka)



def decode_records(records: Sequence[Record]) -> tuple[list[Item], list[tuple[Record, str]]]:
    """Decode each record by its topic's type; undecodable ones are poison."""
    good: list[Item] = []
    bad: list[tuple[Record, str]] = []
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


def decode_batch(records: Sequence[Record]) -> tuple[list[tuple[str, msgspec.Struct]],
                                                             list[tuple[Record, str]]]:
    """Decode each record by its topic's type; undecodable ones are poison."""
    good, bad = decode_records(records)
    return [(r.topic, m) for r, m in good], bad
