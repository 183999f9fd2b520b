"""`entra-sync bench webhook`: Graph-like notification batches POSTed to a real webhook, acked by a real broker.

The webhook runs as a child process (`python -m webhook`) so it has its own event loop and interpreter, as in
production; the load generator is open-loop at `rate` notifications/s (batches of 1-10 items, several
tenants), with bounded concurrency. Afterwards the topic is read back: `lost` counts notifications the webhook
acknowledged (202) that are not in `entra.notifications`. `hello_rps` is a bare aiohttp handler, in a child
process too, hammered by the same client: the ceiling of this machine for comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import msgspec
from aiokafka import TopicPartition

from schemas import topics
from schemas.client_state import client_state_for
from worker.bench.common import terminate
from worker.bus import ensure_topics, make_consumer
from worker.config import KafkaSettings, load_settings
from worker.dev.embedded import EmbeddedKafka, child_env

CONCURRENCY = 64
TENANTS = 8
HELLO_SECONDS = 3.0
_TICK_S = 0.002


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)
    acked_ids: set[str] = field(default_factory=set)
    errors: int = 0
    started: float = 0.0
    finished: float = 0.0

    @property
    def notifications_per_s(self) -> float:
        return len(self.acked_ids) / max(self.finished - self.started, 1e-9)


async def bench_webhook(*, seconds: float, rate: int, state_dir: Path | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the CONTRACTS.md JSON object."""
    async with contextlib.AsyncExitStack() as stack:
        kafka = await stack.enter_async_context(_broker(state_dir))
        await ensure_topics(kafka)
        secret = secrets.token_urlsafe(24)
        url = await stack.enter_async_context(_webhook_process(kafka, secret, state_dir))
        since = await _end_offsets(kafka)
        load = await _generate_load(url, secret, seconds=seconds, rate=rate)
        seen = await _read_object_ids(kafka, since)
    hello_rps = await _hello_rps(HELLO_SECONDS)
    return _result(load, lost=len(load.acked_ids - seen), hello_rps=hello_rps)


def _result(load: LoadResult, *, lost: int, hello_rps: float) -> dict[str, Any]:
    latencies = sorted(load.latencies_ms) or [0.0]
    return {
        "bench": "webhook",
        "notifications_per_s": round(load.notifications_per_s, 1),
        "p50_ms": round(_percentile(latencies, 0.50), 2),
        "p99_ms": round(_percentile(latencies, 0.99), 2),
        "errors": load.errors,
        "lost": lost,
        "hello_rps": round(hello_rps, 1),
    }


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


# --- infrastructure -----------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _broker(state_dir: Path | None) -> AsyncIterator[KafkaSettings]:
    """KAFKA_BOOTSTRAP_SERVERS (settings from the environment) or an embedded Tansu broker."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield load_settings().kafka
        return
    broker = EmbeddedKafka(log_file=state_dir / "tansu.log" if state_dir else None)
    await broker.start()
    try:
        # Tansu rejects the idempotent producer.
        yield KafkaSettings.model_validate(
            {"bootstrap_servers": broker.bootstrap_servers, "enable_idempotence": False}
        )
    finally:
        broker.stop()


@contextlib.asynccontextmanager
async def _webhook_process(kafka: KafkaSettings, secret: str, state_dir: Path | None) -> AsyncIterator[str]:
    env = child_env(
        KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        KAFKA_ENABLE_IDEMPOTENCE=str(kafka.enable_idempotence).lower(),
        KAFKA_CREATE_TOPICS="false",
        WEBHOOK_HOST="127.0.0.1", WEBHOOK_PORT="0", WEBHOOK_SECRET=secret,
        LOG_FORMAT="json", LOG_LEVEL="info",
    )
    env.pop("WEBHOOK_PREVIOUS_SECRET", None)
    async with _child([sys.executable, "-m", "webhook"], env, state_dir, "webhook.log") as announced:
        url = str(announced["webhook_url"])
        await _wait_ready(url + "/readyz")
        yield url


@contextlib.asynccontextmanager
async def _child(
    argv: list[str], env: dict[str, str] | None, state_dir: Path | None, log_name: str
) -> AsyncIterator[dict[str, Any]]:
    """A child process that prints one JSON line when it listens; SIGTERM (then SIGKILL) on exit."""
    log = _log_file(state_dir, log_name)
    proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=subprocess.PIPE, stderr=log)
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            line = await proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{argv} exited before listening (rc={await proc.wait()})")
        yield json.loads(line)
    finally:
        await terminate(proc)
        if not isinstance(log, int):
            log.close()


def _log_file(state_dir: Path | None, name: str) -> IO[bytes] | int:
    return open(state_dir / name, "ab") if state_dir else subprocess.DEVNULL


async def _wait_ready(url: str, timeout_s: float = 30.0) -> None:
    async with aiohttp.ClientSession() as session, asyncio.timeout(timeout_s):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)


# --- load -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tenant:
    tenant_id: str
    client_state: str
    subscription_id: str
    use_organization_id: bool


def _tenants(secret: str) -> list[_Tenant]:
    ids = [str(uuid.uuid4()) for _ in range(TENANTS)]
    return [_Tenant(t, client_state_for(t, secret), str(uuid.uuid4()), i % 4 == 3) for i, t in enumerate(ids)]


class _Bodies:
    """Graph-shaped bodies with a unique object id per item (how lost notifications are found)."""

    def __init__(self, secret: str, seed: int = 7) -> None:
        self._tenants = _tenants(secret)
        self._random = random.Random(seed)
        self._run = uuid.uuid4().hex[:8]
        self._n = 0
        self._encode = msgspec.json.Encoder().encode

    def size(self) -> int:
        """Graph batches vary; 1-10 items, 5.5 on average."""
        return self._random.randint(1, 10)

    def next(self, size: int) -> tuple[bytes, list[str]]:
        items, ids = [], []
        for _ in range(size):
            self._n += 1
            object_id = f"{self._run}-0000-4000-8000-{self._n:012x}"
            ids.append(object_id)
            items.append(self._item(self._random.choice(self._tenants), object_id))
        return self._encode({"value": items}), ids

    def _item(self, tenant: _Tenant, object_id: str) -> dict[str, Any]:
        resource = f"{'Users' if self._n % 2 else 'users'}/{object_id}"
        return {
            "subscriptionId": tenant.subscription_id,
            "subscriptionExpirationDateTime": "2030-01-01T11:00:00.0000000+00:00",
            "changeType": "updated",
            "resource": resource,
            "resourceData": {"@odata.type": "#Microsoft.Graph.User", "@odata.id": resource, "id": object_id,
                             "organizationId": tenant.tenant_id},
            "clientState": tenant.client_state,
            "encryptedContent": None,
            "organizationId" if tenant.use_organization_id else "tenantId": tenant.tenant_id,
        }


async def _generate_load(url: str, secret: str, *, seconds: float, rate: int) -> LoadResult:
    """Open loop: every tick, send the batches that are due; each request is timed from send to response."""
    bodies = _Bodies(secret)
    result = LoadResult()
    gate = asyncio.Semaphore(CONCURRENCY)
    pending: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        target = f"{url}/notifications"
        result.started = time.perf_counter()
        scheduled = 0
        while (elapsed := time.perf_counter() - result.started) < seconds:
            while scheduled < int(elapsed * rate):
                size = min(bodies.size(), int(elapsed * rate) - scheduled)
                body, ids = bodies.next(size)
                scheduled += size
                task = asyncio.create_task(_post(session, target, body, ids, gate, result))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.sleep(_TICK_S)
        await asyncio.gather(*pending)
        result.finished = time.perf_counter()
    return result


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, ids: list[str], gate: asyncio.Semaphore,
    result: LoadResult,
) -> None:
    async with gate:
        started = time.perf_counter()
        try:
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
                ok = resp.status == 202
        except aiohttp.ClientError:
            ok = False
        result.latencies_ms.append((time.perf_counter() - started) * 1000)
    if ok:
        result.acked_ids.update(ids)
    else:
        result.errors += 1


# --- read back ------------------------------------------------------------------------------------------------


class _ObjectId(msgspec.Struct):
    object_id: str | None = None


async def _end_offsets(kafka: KafkaSettings) -> dict[TopicPartition, int]:
    consumer = make_consumer(kafka, group_id=None)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topics.NOTIFICATIONS) or set()
        tps = [TopicPartition(topics.NOTIFICATIONS, p) for p in sorted(partitions)]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def _read_object_ids(kafka: KafkaSettings, since: dict[TopicPartition, int]) -> set[str]:
    """Object ids of everything written to the topic after `since`, up to its current end."""
    decoder = msgspec.json.Decoder(_ObjectId)
    consumer = make_consumer(kafka, group_id=None, max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    seen: set[str] = set()
    try:
        consumer.assign(list(since))
        ends = await consumer.end_offsets(list(since))
        for tp, offset in since.items():
            consumer.seek(tp, offset)
        pending = {tp for tp in since if ends[tp] > since[tp]}
        async with asyncio.timeout(60):
            while pending:
                for tp, records in (await consumer.getmany(*pending, timeout_ms=500)).items():
                    seen.update(i for r in records if r.value and (i := decoder.decode(r.value).object_id))
                    if records and records[-1].offset + 1 >= ends[tp]:
                        pending.discard(tp)
    finally:
        await consumer.stop()
    return seen


# --- hello ----------------------------------------------------------------------------------------------------


async def _hello_rps(seconds: float) -> float:
    """Requests/s a bare aiohttp handler (child process) answers to the same client, closed loop."""
    argv = [sys.executable, "-m", "worker.bench.webhook", "hello"]
    async with _child(argv, None, None, "") as announced:
        url = str(announced["url"])
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        async with aiohttp.ClientSession(connector=connector) as session:
            deadline = time.perf_counter() + seconds
            counts = await asyncio.gather(*(_hammer(session, url, deadline) for _ in range(CONCURRENCY)))
    return sum(counts) / seconds


async def _hammer(session: aiohttp.ClientSession, url: str, deadline: float) -> int:
    done = 0
    while time.perf_counter() < deadline:
        async with session.get(url) as resp:
            await resp.read()
        done += 1
    return done


def _serve_hello() -> None:
    from aiohttp import web

    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        print(json.dumps({"url": f"http://127.0.0.1:{port}/"}), flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


if __name__ == "__main__" and sys.argv[1:] == ["hello"]:
    _serve_hello()
