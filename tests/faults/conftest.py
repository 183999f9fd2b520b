"""The real-time path assembled in-process for fault tests: the simulator delivers change notifications over
HTTP to the real webhook app, which publishes to the real broker; the real worker (`run_worker`: three
consumer groups) syncs from the simulator into the session's PostgreSQL. Nothing is mocked.

Each test gets a fresh simulated tenant with one Organization (sync enabled, every user in scope) already
synced, subscriptions pointing at its own webhook, and a worker whose consumer groups start at the current
end of every topic (earlier tests' messages are not its business).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from aiohttp import web
from aiokafka import TopicPartition
from pydantic import SecretStr

from schemas import messages
from simulator.server import Simulator
from tests.integration.conftest import ALL, GraphAdmin, graph_admin, make_org
from tests.integration.test_sync_rules import sim_control
from webhook.app import create_app
from worker import bus
from worker.config import DatabaseSettings, GraphSettings, KafkaSettings, Settings, SyncSettings, WebhookSettings
from worker.engine.subscriptions import SubscriptionManager
from worker.engine.sync import SyncEngine
from worker.graph import GraphClients
from worker.processes.worker import run_worker
from worker.store.pool import create_pool

SECRET = secrets.token_urlsafe(32)  # the worker refuses a weak one


@pytest.fixture(scope="session")
async def fault_sim(tmp_state: Path) -> AsyncIterator[Simulator]:
    async with Simulator(state_dir=tmp_state / "fault-sim", tenants=1, users=5, seed=11) as simulator:
        yield simulator


@pytest.fixture(scope="session")
async def fault_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, max_size=4)
    yield p
    await p.close()


def with_query(url: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


async def start_groups_at_end(settings: KafkaSettings, group_prefix: str) -> None:
    """Commit the current end of every topic for the worker's three groups, so they start from now."""
    from worker.processes.worker import GROUPS

    for name, names in GROUPS:
        consumer = bus.make_consumer(settings, group_id=f"{group_prefix}-{name}")
        await consumer.start()
        try:
            tps = [TopicPartition(t, p) for t in names for p in consumer.partitions_for_topic(t) or ()]
            if tps:
                consumer.assign(tps)
                ends = await consumer.end_offsets(tps)
                await consumer.commit({tp: off for tp, off in ends.items()})
        finally:
            await consumer.stop()


class ChangeTracker:
    """Changes job titles through Graph and waits until every End User of those Entra users shows them.

    Shared by the in-process pipeline and the whole-stack fault tests; `check_alive` says why a wait failed.
    """

    admin: GraphAdmin
    pool: asyncpg.Pool
    org_id: str | None  # None: End Users of every Organization

    async def patch_titles(self, object_ids: Iterable[str], tag: str) -> dict[str, str]:
        wanted = {oid: f"{tag} {i}" for i, oid in enumerate(object_ids)}
        # An empty change set would make every check below pass without anything having happened.
        assert wanted, "no user to change: the tenant has fewer synced users than the test slices"
        await asyncio.gather(*(self.admin.call("PATCH", f"/users/{oid}", {"jobTitle": title})
                               for oid, title in wanted.items()))
        return wanted

    async def missing(self, wanted: dict[str, str]) -> dict[str, str]:
        assert wanted, "nothing to look for: `missing({})` is always empty"
        rows = await self.pool.fetch(
            "SELECT entra_object_id, job_title FROM end_users WHERE entra_object_id = ANY($1::text[])"
            " AND ($2::uuid IS NULL OR organization_id = $2::uuid)", list(wanted), self.org_id)
        wrong = {r["entra_object_id"] for r in rows if r["job_title"] != wanted[r["entra_object_id"]]}
        absent = set(wanted) - {r["entra_object_id"] for r in rows}
        return {oid: wanted[oid] for oid in wrong | absent}

    async def converge(self, wanted: dict[str, str], timeout_s: float) -> float:
        """Seconds until every End User of `wanted` carries its change; fails with what is missing."""
        started = time.monotonic()
        while missing := await self.missing(wanted):
            assert time.monotonic() - started < timeout_s, f"{len(missing)} changes lost: {missing}"
            self.check_alive()
            await asyncio.sleep(0.1)
        return time.monotonic() - started

    def check_alive(self) -> None:
        """Raise when what should deliver the changes has died."""


@dataclass
class Pipeline(ChangeTracker):
    sim: Simulator
    pool: asyncpg.Pool
    tenant: dict[str, str]
    admin: GraphAdmin
    org_id: str
    settings: Settings
    webhook_url: str
    app_name: str
    worker: asyncio.Task[None] | None = None

    @property
    def tenant_id(self) -> str:
        return self.tenant["tenant_id"]

    def start_worker(self) -> None:
        self.worker = asyncio.create_task(run_worker(self.settings))

    async def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.worker
            self.worker = None

    async def faults(self, **faults: Any) -> Any:
        return await sim_control(self.sim, "POST", "/_sim/faults", {"tenant_id": self.tenant_id, **faults})

    async def end_users(self) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT * FROM end_users WHERE organization_id = $1::uuid ORDER BY entra_object_id", self.org_id)

    def check_alive(self) -> None:
        if self.worker is not None and self.worker.done():
            self.worker.result()  # the worker died: show why

    async def publish(self, topic: str, message: msgspec.Struct) -> None:
        publisher = bus.KafkaPublisher(self.settings.kafka)
        await publisher.start()
        try:
            await publisher.publish(topic, self.tenant_id, message)
        finally:
            await publisher.stop()

    async def delivery(self) -> dict[str, Any]:
        return dict((await sim_control(self.sim, "GET", "/_sim/state"))["delivery"])


@pytest.fixture
async def pipeline(
    fault_sim: Simulator, fault_pool: asyncpg.Pool, database_url: str, kafka_settings: KafkaSettings,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Pipeline]:
    users = getattr(request, "param", 30)
    tenant = await sim_control(fault_sim, "POST", "/_sim/tenants", {"users": users})
    tag = uuid.uuid4().hex[:8]
    kafka = kafka_settings.model_copy(update={"consumer_group": f"faults-{tag}"})
    hook_settings = Settings(kafka=kafka, webhook=WebhookSettings(host="127.0.0.1", port=0, secret=SecretStr(SECRET)))
    runner = web.AppRunner(create_app(hook_settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    webhook_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    app_name = f"fault-worker-{tag}"
    settings = Settings(
        database=DatabaseSettings(url=with_query(database_url, application_name=app_name), pool_max=4),
        kafka=kafka,
        graph=GraphSettings(url=fault_sim.info.graph_url, authority_url=fault_sim.info.authority_url,
                            ca_file=fault_sim.info.ca_file),
        webhook=WebhookSettings(public_url=webhook_url, secret=SecretStr(SECRET)),
        sync=SyncSettings(commit_interval_s=0.2),
    )
    async with fault_pool.acquire() as conn:
        org = await make_org(conn, tenant, ALL)
    graph = GraphClients(settings.graph)
    try:
        await SyncEngine(pool=fault_pool, graph=graph, settings=settings).org_sync(tenant["tenant_id"], org, None)
        await SubscriptionManager(pool=fault_pool, graph=graph, settings=settings).reconcile_tenant(
            tenant["tenant_id"])
    finally:
        await graph.close()
    await bus.ensure_topics(kafka)
    await start_groups_at_end(kafka, kafka.consumer_group)
    pipe = Pipeline(fault_sim, fault_pool, tenant, await graph_admin(fault_sim, tenant), org, settings,
                    webhook_url, app_name)
    pipe.start_worker()
    try:
        yield pipe
    finally:
        await pipe.stop_worker()
        await pipe.faults(drop_notifications=1.0)  # its subscriptions outlive the test: keep them quiet
        await runner.cleanup()


def change_note(tenant_id: str, object_id: str, subscription_id: str = "replay") -> messages.ChangeNotification:
    return messages.ChangeNotification(tenant_id=tenant_id, subscription_id=subscription_id, change_type="updated",
                                       resource=f"Users/{object_id}", object_type="user", object_id=object_id,
                                       received_at="replay")
