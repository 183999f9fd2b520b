"""Faults where process boundaries matter, on the whole embedded stack (`Stack`: simulator, Tansu, webhook,
worker, scheduler and admin API as child processes, PostgreSQL from the session):

- the broker stopped during notification traffic: the webhook answers 503, the simulator's delivery retries
  (on its clock) bring every notification once the broker is back, and the worker's consumers recover;
- the worker killed with SIGKILL in the middle of a batch and restarted: its offsets were not committed, so
  the batch is redone.

Each shows that nothing is lost: every changed user's End User ends up with the change.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest

from tests.faults.conftest import ChangeTracker
from tests.integration.conftest import GraphAdmin, graph_admin
from tests.integration.test_sync_rules import sim_control
from worker import bus
from worker.config import KafkaSettings
from worker.dev.embedded import create_database, drop_database
from worker.dev.stack import Stack

pytestmark = pytest.mark.slow

# The broker is away for 10 s by default rather than the 30 s: what happens during an outage does not
# depend on its length (the webhook answers 503 at once; the simulator's retries run on its own clock, which
# the test moves past the outage), and the suite must stay within its time budget. FAULT_BROKER_OUTAGE_S=30
# runs the figure.
OUTAGE_S = float(os.environ.get("FAULT_BROKER_OUTAGE_S", "10"))


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory, postgres_server_url: str) -> AsyncIterator[Stack]:
    database_url = await create_database(postgres_server_url, "entra_sync_faults")
    saved = {k: os.environ.get(k) for k in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    os.environ["DATABASE_URL"] = database_url
    os.environ.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # the stack's own Tansu: the test stops and restarts it
    s = Stack(tmp_path_factory.mktemp("fault-stack"))
    try:
        await s.start()
        yield s
    finally:
        s.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        await drop_database(postgres_server_url, database_url)


class StackEnv(ChangeTracker):
    def __init__(self, stack: Stack, pool: asyncpg.Pool, admin: GraphAdmin) -> None:
        self.stack = stack
        self.info = stack.info
        self.pool = pool
        self.admin = admin
        self.org_id = None  # the demo has two Organizations: every End User of a changed user must follow
        self.sim = SimpleNamespace(info=SimpleNamespace(graph_url=self.info["graph_url"], ca_file=self.info["ca_file"],
                                                        authority_url=self.info["authority_url"]))
        self.tenant_id = self.info["tenants"][0]["tenant_id"]

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        return await sim_control(self.sim, method, path, body)  # type: ignore[arg-type]

    async def delivery(self) -> dict[str, Any]:
        return dict((await self.control("GET", "/_sim/state"))["delivery"])

    async def synced_users(self) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT DISTINCT entra_object_id FROM end_users WHERE sync_state = 'synced' ORDER BY 1")
        return [r[0] for r in rows]

    def check_alive(self) -> None:
        dead = self.stack.children.exited()
        assert not dead, f"stack processes exited: {dead}; see {self.stack.children.log_dir}"

    def child_env(self) -> dict[str, str]:
        """The environment the stack gave its children (read from a live one), to restart the worker."""
        pid = self.stack.children.procs["scheduler"].pid
        raw = Path(f"/proc/{pid}/environ").read_bytes().decode()
        return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


@pytest.fixture(scope="module")
async def env(stack: Stack) -> AsyncIterator[StackEnv]:
    pool = await asyncpg.create_pool(stack.info["database_url"], min_size=1, max_size=2)
    tenant = stack.info["tenants"][0]
    e = StackEnv(stack, pool, await graph_admin(SimpleNamespace(info=SimpleNamespace(  # type: ignore[arg-type]
        graph_url=stack.info["graph_url"], ca_file=stack.info["ca_file"],
        authority_url=stack.info["authority_url"])), tenant))
    deadline = time.monotonic() + 60
    # The demo's Organizations sync, and their tenant gets its subscriptions (users and groups).
    while len(await e.synced_users()) < 20 or await pool.fetchval("SELECT count(*) FROM graph_subscriptions") < 2:
        assert time.monotonic() < deadline, "the demo never synced"
        await asyncio.sleep(0.2)
    yield e
    await pool.close()


async def test_broker_outage_during_notification_traffic(env: StackEnv) -> None:
    users = await env.synced_users()
    baseline = await env.converge(await env.patch_titles(users[:5], "Before outage"), timeout_s=30)
    kafka = env.stack.kafka
    assert kafka is not None

    kafka.stop()
    stopped = time.monotonic()
    failed_before = (await env.delivery())["failed_attempts"]
    wanted = await env.patch_titles(users[5:20], "During outage")
    while (await env.delivery())["failed_attempts"] <= failed_before:  # the webhook answers 503
        assert time.monotonic() - stopped < OUTAGE_S, "the webhook accepted notifications with the broker down"
        await asyncio.sleep(0.1)
    await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
    assert await env.missing(wanted) == wanted

    # Tansu keeps everything in memory: it comes back as an empty cluster, and provisioning the topics is
    # part of bringing it back (real Kafka keeps them). The worker's consumers must rejoin on their own.
    await kafka.start()
    back = time.monotonic()
    await bus.ensure_topics(KafkaSettings(bootstrap_servers=kafka.bootstrap_servers, enable_idempotence=False))
    await env.control("POST", "/_sim/clock", {"minutes": 10})  # Graph's retries, due now
    await env.converge(wanted, timeout_s=90)
    recovery = time.monotonic() - back
    delivery = await env.delivery()

    # And the live path works again end to end, not just for the retried notifications.
    after = await env.converge(await env.patch_titles(users[20:25], "After outage"), timeout_s=60)
    print(f"broker outage {back - stopped:.1f}s: {delivery['failed_attempts'] - failed_before} failed deliveries "
          f"retried; all {len(wanted)} changes in {recovery:.1f}s after the broker returned; fresh change "
          f"{after:.1f}s (baseline {baseline:.1f}s)")
    assert not env.stack.children.exited()


async def test_worker_killed_mid_batch_loses_nothing(env: StackEnv) -> None:
    users = await env.synced_users()
    await env.control("POST", "/_sim/faults", {"tenant_id": env.tenant_id, "latency_ms": 2000})
    try:
        delivered = (await env.delivery())["delivered"]
        wanted = await env.patch_titles(users[25:40], "Killed")
        deadline = time.monotonic() + 20
        while (await env.delivery())["delivered"] < delivered + len(wanted):
            assert time.monotonic() < deadline, "notifications were not delivered"
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # the worker took the batch and waits on its (slow) delta call
        worker = env.stack.children.procs["worker"]
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        killed = time.monotonic()
        assert await env.missing(wanted) == wanted, "the batch finished before the kill: not mid-batch"
    finally:
        await env.control("DELETE", f"/_sim/faults?tenant_id={env.tenant_id}")

    env.stack.children.start("worker", ["worker"], env.child_env())
    restarted = time.monotonic()
    recovery = await env.converge(wanted, timeout_s=60)
    print(f"SIGKILL mid-batch: restarted {restarted - killed:.1f}s after the kill; "
          f"all {len(wanted)} changes {recovery:.1f}s after the restart")
    assert env.stack.children.procs["worker"].poll() is None
