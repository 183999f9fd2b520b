"""Fixtures for the webhook tests: settings with known secrets, a real server, and a topic reader."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from pydantic import SecretStr

from schemas.client_state import client_state_for
from webhook.app import create_app
from webhook.sink import NotificationSink
from worker.bus import make_consumer
from worker.config import KafkaSettings, Settings, WebhookSettings

# The webhook and the worker refuse weak secrets: tests use random ones, as `entra-sync up` does.
SECRET = secrets.token_urlsafe(32)
PREVIOUS = secrets.token_urlsafe(32)
MAX_BODY = 64 * 1024

Client = TestClient[web.Request, web.Application]


def make_settings(kafka: KafkaSettings, **webhook: Any) -> Settings:
    options: dict[str, Any] = {
        "host": "127.0.0.1", "port": 0, "secret": SecretStr(SECRET),
        "previous_secret": SecretStr(PREVIOUS), "max_body_bytes": MAX_BODY, **webhook,
    }
    return Settings(kafka=kafka, webhook=WebhookSettings(**options))


def change_item(tenant: str, object_id: str, *, secret: str = SECRET, **extra: Any) -> dict[str, Any]:
    """A change notification item exactly as Graph sends one for a user."""
    return {
        "subscriptionId": str(uuid.uuid4()),
        "subscriptionExpirationDateTime": "2030-01-01T00:00:00+00:00",
        "changeType": "updated",
        "resource": f"Users/{object_id}",
        "tenantId": tenant,
        "clientState": client_state_for(tenant, secret),
        "resourceData": {"@odata.type": "#Microsoft.Graph.User", "@odata.id": f"Users/{object_id}",
                         "id": object_id},
        "encryptedContent": None,
        **extra,
    }


def new_id() -> str:
    return str(uuid.uuid4())



@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., Any]]:
    """Start a real TCP server for `create_app(settings, sink=...)`; closed at the end of the test."""
    clients: list[Client] = []

    async def start(settings: Settings, sink: NotificationSink | None = None) -> Client:
        client = TestClient(TestServer(create_app(settings, sink=sink), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def client(
    make_client: Callable[..., Any], kafka_settings: KafkaSettings
) -> Client:
    result: Client = await make_client(make_settings(kafka_settings))
    return result


class TopicTail:
    """Reads what a topic received after `start()`: snapshot end offsets, then read up to the new ends."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self._consumer = make_consumer(kafka, group_id=None, enable_auto_commit=False)
        self._topic = topic
        self._since: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        await self._consumer.start()
        partitions = self._consumer.partitions_for_topic(self._topic) or set()
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        self._since = await self._consumer.end_offsets(tps)

    async def read_new(self) -> list[ConsumerRecord[bytes, bytes]]:
        ends = await self._consumer.end_offsets(list(self._since))
        records: list[ConsumerRecord[bytes, bytes]] = []
        for tp, offset in self._since.items():
            self._consumer.seek(tp, offset)
        pending = {tp for tp in ends if ends[tp] > self._since[tp]}
        async with asyncio.timeout(10):
            while pending:
                batch = await self._consumer.getmany(*pending, timeout_ms=200)
                for tp, recs in batch.items():
                    records.extend(recs)
                    if recs and recs[-1].offset + 1 >= ends[tp]:
                        pending.discard(tp)
        self._since = ends
        return records

    async def stop(self) -> None:
        await self._consumer.stop()


@pytest.fixture
async def tail(kafka_settings: KafkaSettings, client: Client) -> AsyncIterator[Callable[[str], Any]]:
    """`await tail(topic)` → a started TopicTail (the app fixture has created the topics already)."""
    tails: list[TopicTail] = []

    async def start(topic: str) -> TopicTail:
        t = TopicTail(kafka_settings, topic)
        await t.start()
        tails.append(t)
        return t

    yield start
    for t in tails:
        await t.stop()


@dataclass
class HookProcess:
    """`python -m webhook` as production runs it (serve(), the body guard), logging JSON to `log`."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def log_lines(self) -> list[dict[str, Any]]:
        lines = self.log.read_text(errors="replace").splitlines()
        return [json.loads(line) if line.startswith("{") else {"event": "(not json)", "text": line} for line in lines]

    def rss_kb(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


BODY_TIMEOUT_S = 1.5
BODIES_IN_FLIGHT = 20


@pytest.fixture(scope="module")
def hook_process(kafka_settings: KafkaSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookProcess]:
    """One webhook process for a module, with a short body deadline and a small cap on bodies in flight."""
    log = tmp_path_factory.mktemp("hook") / "webhook.log"
    env = {
        **os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": str(kafka_settings.enable_idempotence).lower(),
        "WEBHOOK_HOST": "127.0.0.1", "WEBHOOK_PORT": "0", "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_PREVIOUS_SECRET": PREVIOUS, "WEBHOOK_MAX_BODY_BYTES": str(MAX_BODY),
        "WEBHOOK_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S), "WEBHOOK_MAX_BODIES_IN_FLIGHT": str(BODIES_IN_FLIGHT),
        "LOG_FORMAT": "json", "LOG_LEVEL": "info",
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "webhook"], env=env, stdout=subprocess.PIPE, stderr=out)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, log.read_text()
        yield HookProcess(json.loads(line)["webhook_url"], proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
