"""The Kafka adapter: the only package of the worker that touches aiokafka (the webhook's sink is the other
importer). `kafka.py`: connections, producers, consumers, topics and the typed `Publisher`; `consumer.py`: a
consumer-group member as the worker's consumer loop uses it (records, rebalances, commits, dead letters)."""

from worker.bus.kafka import (
    BusError,
    KafkaPublisher,
    Publisher,
    connection_options,
    ensure_topics,
    make_consumer,
    make_producer,
)

__all__ = [
    "BusError", "KafkaPublisher", "Publisher", "connection_options", "ensure_topics", "make_consumer",
    "make_producer",
]
