"""A really stopped broker: the webhook answers 503 well within Graph's 3 s, and /readyz says not ready."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from worker.config import KafkaSettings
from worker.dev.embedded import EmbeddedKafka, free_port

from .conftest import Client, change_item, make_settings, new_id


@pytest.fixture
async def own_broker(tmp_path: Path) -> AsyncIterator[EmbeddedKafka]:
    broker = EmbeddedKafka(log_file=tmp_path / "tansu.log")
    await broker.start()
    yield broker
    broker.stop()


async def test_stopped_broker_gives_503_within_3s(
    own_broker: EmbeddedKafka, make_client: Callable[..., Any]
) -> None:
    kafka = KafkaSettings(bootstrap_servers=own_broker.bootstrap_servers, enable_idempotence=False,
                          topic_partitions=2)
    client: Client = await make_client(make_settings(kafka, publish_timeout_s=2.0))
    tenant = new_id()
    body = {"value": [change_item(tenant, new_id()) for _ in range(3)]}
    assert (await client.post("/notifications", json=body)).status == 202

    _kill(own_broker)
    started = time.monotonic()
    resp = await client.post("/notifications", json=body)
    elapsed = time.monotonic() - started
    assert resp.status == 503
    assert elapsed < 3.0
    assert (await resp.json())["error"]["code"] == "broker_unavailable"
    assert (await client.get("/readyz")).status == 503
    assert (await client.get("/healthz")).status == 200


def _kill(broker: EmbeddedKafka) -> None:
    """SIGKILL, as a crash would (Tansu takes its full grace period to honour SIGTERM)."""
    assert broker.pid is not None
    os.kill(broker.pid, signal.SIGKILL)
    broker.stop()


async def test_webhook_starts_without_a_broker_and_connects_when_it_appears(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    port = free_port()
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", enable_idempotence=False, topic_partitions=2)
    client: Client = await make_client(make_settings(kafka, publish_timeout_s=0.5))
    body = {"value": [change_item(new_id(), new_id())]}
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 503
    assert (await client.post("/notifications", json=body)).status == 503

    broker = EmbeddedKafka(port=port, log_file=tmp_path / "tansu.log")
    await broker.start()
    try:
        statuses = []
        for _ in range(20):  # Graph's retries, compressed
            statuses.append((await client.post("/notifications", json=body)).status)
            if statuses[-1] == 202:
                break
            await asyncio.sleep(0.25)
        assert statuses[-1] == 202, statuses
    finally:
        await client.close()
        broker.stop()
