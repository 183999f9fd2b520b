"""Connections to Kafka: producers, consumers and the admin client built from `KafkaSettings`, the product's
topics (`ensure_topics`), and a small typed `Publisher` (what the admin API and scheduler need). Consumers are
built with the delivery rules of ARCHITECTURE.md: no auto-commit, commit `offset + 1` after the durable write.
"""

from __future__ import annotations

import ssl
from typing import Any, Protocol

import msgspec
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from schemas import messages, topics
from worker.config import KafkaSettings

log = structlog.get_logger(__name__)

BusError = KafkaError  # any failure of the broker or of a client of it


def connection_options(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka keyword arguments shared by producers, consumers and the admin client."""
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        opts["ssl_context"] = ssl.create_default_context(cafile=settings.ssl_ca_file)
    if settings.sasl_mechanism:
        opts["sasl_mechanism"] = settings.sasl_mechanism
        opts["sasl_plain_username"] = settings.sasl_username
        opts["sasl_plain_password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else None
        )
    return opts


def make_producer(settings: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """A producer that waits for every in-sync replica (acks=all) before a send counts as done."""
    kwargs: dict[str, Any] = {
        **connection_options(settings),
        "acks": "all",
        "enable_idempotence": settings.enable_idempotence,
        "linger_ms": 2,
        **overrides,
    }
    return AIOKafkaProducer(**kwargs)


def make_consumer(settings: KafkaSettings, *topic_names: str, **overrides: Any) -> AIOKafkaConsumer:
    kwargs: dict[str, Any] = {
        **connection_options(settings),
        "group_id": settings.consumer_group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        **overrides,
    }
    return AIOKafkaConsumer(*topic_names, **kwargs)


async def ensure_topics(settings: KafkaSettings) -> None:
    """Create this product's topics when missing (off for brokers where topics are provisioned)."""
    if not settings.create_topics:
        return
    admin = AIOKafkaAdminClient(**connection_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics.ALL if t not in existing]
        if missing:
            new = [NewTopic(t, settings.topic_partitions, settings.topic_replication) for t in missing]
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # another process created them first
            log.info("kafka.topics.created", topics=missing)
    finally:
        await admin.close()


class Publisher(Protocol):
    async def publish(self, topic: str, key: str, message: msgspec.Struct) -> None: ...


class KafkaPublisher:
    """Publishes typed messages keyed by tenant id and waits for the broker's acknowledgement."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._producer = make_producer(settings)

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, topic: str, key: str, message: msgspec.Struct) -> None:
        await self._producer.send_and_wait(topic, messages.encode(message), key=key.encode())
