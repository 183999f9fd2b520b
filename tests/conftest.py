"""Session-wide real infrastructure for the tests: a Tansu broker and a PostgreSQL database.

PostgreSQL: `DATABASE_URL` when set (a fresh database is created on that server for the session and dropped
after), else an embedded `pgserver`. Kafka: a Tansu broker started for the session, or
`KAFKA_BOOTSTRAP_SERVERS` when set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from worker.config import KafkaSettings
from worker.dev.embedded import EmbeddedKafka, EmbeddedPostgres, create_database, drop_database


@pytest.fixture(scope="session")
def tmp_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="session")
async def kafka_bootstrap(tmp_state: Path) -> AsyncIterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    broker = EmbeddedKafka(log_file=tmp_state / "tansu.log")
    await broker.start()
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    idempotence = "KAFKA_BOOTSTRAP_SERVERS" in os.environ and os.environ.get(
        "KAFKA_ENABLE_IDEMPOTENCE", "true"
    ).lower() in ("1", "true")
    return KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        enable_idempotence=idempotence,
        consumer_group=f"test-{uuid.uuid4().hex[:8]}",
        topic_partitions=4,
    )


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
    url = pg.start()
    try:
        yield url
    finally:
        pg.stop()


@pytest.fixture(scope="session")
async def database_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A fresh, migrated database for the whole session."""
    from worker.store.migrations import migrate

    url = await create_database(postgres_server_url, "entra_sync_test")
    await migrate(url)
    yield url
    await drop_database(postgres_server_url, url)


@pytest.fixture
async def fresh_database_url(postgres_server_url: str) -> AsyncIterator[str]:
    """An empty, unmigrated database for one test (migration tests)."""
    url = await create_database(postgres_server_url, "entra_sync_t")
    yield url
    await drop_database(postgres_server_url, url)
