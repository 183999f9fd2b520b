"""Where accepted notifications go: the `NotificationSink` seam and its Kafka implementation.

`publish` returns only when the broker acknowledged every record (acks=all), so the webhook can answer 202;
it raises (or the caller's deadline cancels it) otherwise, and the webhook answers 503 so Graph retries.
This module and nothing else in `webhook/` touches aiokafka.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import structlog
from aiokafka import AIOKafkaProducer

from worker.bus import ensure_topics, make_producer
from worker.config import KafkaSettings

log = structlog.get_logger(__name__)

_CONNECT_TIMEOUT_S = 10.0


class Record(NamedTuple):
    topic: str
    key: bytes
    value: bytes


class NotificationSink(Protocol):
    async def publish(self, records: Sequence[Record]) -> None:
        """Return once the broker acknowledged every record; raise if it cannot."""

    async def ready(self) -> bool:
        """Whether the broker is reachable (may be cached for a moment)."""


class BrokerUnavailable(RuntimeError):
    """No producer could be started: the broker is unreachable."""


class KafkaSink:
    """One shared aiokafka producer (acks=all, small linger); connects lazily if the broker was away."""

    def __init__(self, settings: KafkaSettings, *, linger_ms: int = 1, readiness_ttl_s: float = 2.0) -> None:
        self._settings = settings
        self._linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None
        self._connecting: asyncio.Task[AIOKafkaProducer] | None = None
        self._next_connect_at = 0.0
        self._readiness_ttl_s = readiness_ttl_s
        self._ready: tuple[float, bool] = (0.0, False)

    async def start(self) -> None:
        """Connect now if the broker is there; otherwise keep serving (503) and retry on demand."""
        try:
            await self._connected_producer()
        except BrokerUnavailable:
            log.warning("webhook.kafka.unavailable", bootstrap_servers=self._settings.bootstrap_servers)

    async def stop(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def publish(self, records: Sequence[Record]) -> None:
        producer = await self._connected_producer()
        # Enqueue the whole batch first so it shares produce requests, then wait for every ack.
        futures = [await producer.send(r.topic, r.value, key=r.key) for r in records]
        await asyncio.gather(*futures)
        self._ready = (time.monotonic(), True)

    async def ready(self) -> bool:
        checked_at, ok = self._ready
        if time.monotonic() - checked_at < self._readiness_ttl_s:
            return ok
        ok = await self._check_metadata()
        self._ready = (time.monotonic(), ok)
        return ok

    async def _check_metadata(self) -> bool:
        try:
            producer = await self._connected_producer()
            async with asyncio.timeout(1.0):
                await producer.client.fetch_all_metadata()
        except Exception:  # any failure here just means "not ready"
            return False
        return True

    async def _connected_producer(self) -> AIOKafkaProducer:
        """The producer, connecting first if needed. One connection attempt at a time, shared by all
        callers and shielded from their deadlines, so a request timing out never leaves a half-made producer."""
        if self._producer is not None:
            return self._producer
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._connect())
            self._connecting.add_done_callback(self._connect_done)
        return await asyncio.shield(self._connecting)

    def _connect_done(self, task: asyncio.Task[AIOKafkaProducer]) -> None:
        self._connecting = None
        if not task.cancelled() and task.exception() is None:
            self._producer = task.result()

    async def _connect(self) -> AIOKafkaProducer:
        now = time.monotonic()
        if now < self._next_connect_at:
            raise BrokerUnavailable("broker unreachable; retrying shortly")
        self._next_connect_at = now + 1.0  # at most one connection attempt a second
        # Batches not acked within request_timeout_ms expire; the caller answered 503 long before, so a
        # short expiry only bounds memory and shutdown time while the broker is away.
        producer = make_producer(self._settings, linger_ms=self._linger_ms, request_timeout_ms=5000)
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                await ensure_topics(self._settings)
                await producer.start()
        except BaseException as exc:
            await producer.stop()
            if not isinstance(exc, Exception):
                raise  # cancelled: the sink is stopping
            raise BrokerUnavailable(f"cannot reach the broker: {type(exc).__name__}") from exc
        log.info("webhook.kafka.connected", bootstrap_servers=self._settings.bootstrap_servers)
        return producer
