"""A consumer-group member as the worker's consumer loop uses it: records in, offsets committed explicitly.

The aiokafka consumer is built with the delivery rules of ARCHITECTURE.md (no auto-commit; the loop commits
`offset + 1` once the work is durable) and the pacing a worker needs; partitions revoked by a rebalance are
reported to the loop before they go, so it can commit what is done. Dead letters are sent from here too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeAlias

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from schemas import messages, topics
from worker.bus.kafka import KafkaPublisher, make_consumer
from worker.config import KafkaSettings

log = structlog.get_logger(__name__)

Record: TypeAlias = ConsumerRecord  # one polled record: topic, partition, offset, key, value
Partition: TypeAlias = TopicPartition  # (topic, partition): the unit offsets are committed for
Revoked: TypeAlias = Callable[[set[Partition]], Awaitable[None]]


def partition_of(record: Record) -> Partition:
    return TopicPartition(record.topic, record.partition)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, on_revoke: Revoked) -> None:
        self._on_revoke = on_revoke

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._on_revoke(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        pass


class GroupConsumer:
    """One member of consumer group `group` over `topic_names`; `on_revoke` runs before partitions are taken."""

    def __init__(self, settings: KafkaSettings, group: str, topic_names: Sequence[str], on_revoke: Revoked) -> None:
        self._topics = list(topic_names)
        self._on_revoke = on_revoke
        self._consumer: AIOKafkaConsumer = make_consumer(
            settings, group_id=group,
            # While the broker is away, aiokafka retries its fetches and coordinator lookups at this pace
            # (its default, 100 ms, logs a few hundred lines a second).
            retry_backoff_ms=500,
            # A SIGKILLed member is noticed after this long and its partitions go to the others (or to the
            # restarted worker); heartbeats run beside the work, so a long unit of work does not count.
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            # A full resync of a large tenant may take longer than aiokafka's 5-minute default between polls.
            max_poll_interval_ms=30 * 60 * 1000,
        )

    async def start(self) -> None:
        """Join the group; partitions come with the first polls."""
        self._consumer.subscribe(self._topics, listener=_Rebalance(self._on_revoke))
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def poll(self, *, timeout_ms: int, max_records: int) -> list[Record]:
        """The records fetched within `timeout_ms`, every partition's together (each partition's in order)."""
        records = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return [r for rs in records.values() for r in rs]

    def assignment(self) -> set[Partition]:
        return set(self._consumer.assignment())

    def pause(self) -> None:
        """Stop fetching from every assigned partition (the group membership and heartbeats go on)."""
        self._consumer.pause(*self._consumer.assignment())

    def resume(self) -> None:
        self._consumer.resume(*self._consumer.assignment())

    async def commit(self, offsets: dict[Partition, int]) -> None:
        """Commit these offsets (each the next offset to read) for the group."""
        await self._consumer.commit(offsets)


class DeadLetters(KafkaPublisher):
    """The dead-letter topic: records that cannot be done, each with the error that ended it."""

    async def send(self, record: Record, error: str) -> None:
        letter = messages.DeadLetter(
            topic=record.topic, partition=record.partition, offset=record.offset,
            key=record.key.decode(errors="replace") if record.key else None,
            value=(record.value or b"").decode(errors="replace"), error=error,
            failed_at=datetime.now(UTC).isoformat(),
        )
        await self._producer.send_and_wait(topics.DEAD_LETTER, messages.encode(letter), key=record.key)
        log.error("message.dead_lettered", topic=record.topic, partition=record.partition,
                  offset=record.offset, error=error)
