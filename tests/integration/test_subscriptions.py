"""Subscription lifecycle against the simulator: created for users and groups while an Organization syncs,
renewed near expiry, recreated when Graph forgot them, deleted when nothing syncs; lifecycle notifications
(`reauthorizationRequired`, `subscriptionRemoved`) through the TenantWorkPerformer; last_notification_at recorded.

This module has its own simulator because it moves the simulated clock by weeks. Our side reads the same
clock through SubscriptionManager's `now`, and the validation handshake is answered by a tiny receiver on
127.0.0.1 that also keeps whatever Graph delivers to it.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from pydantic import SecretStr
from structlog.testing import capture_logs

from schemas import messages, topics
from schemas.client_state import client_state_for
from simulator.server import Simulator
from tests.integration.conftest import ALL, GraphAdmin, graph_admin, make_org
from tests.integration.test_sync_rules import sim_control
from worker.config import GraphSettings, Settings, WebhookSettings
from worker.core.delivery import DONE
from worker.engine.subscriptions import SubscriptionManager
from worker.engine.sync import SyncEngine
from worker.graph import GraphClients
from worker.processes.work import TenantWorkPerformer

SECRET = secrets.token_urlsafe(32)


@dataclass
class Receiver:
    """Answers Graph's validation handshake and keeps every notification body it receives, by path."""

    url: str = ""
    bodies: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        token = request.query.get("validationToken")
        if token is not None:
            return web.Response(text=token, content_type="text/plain")
        self.bodies.setdefault(request.path, []).append(await request.json())
        return web.Response(status=202)

    def items(self, path: str) -> list[dict[str, Any]]:
        return [item for body in self.bodies.get(path, []) for item in body["value"]]


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.url = f"http://127.0.0.1:{port}"
    yield rec
    await runner.cleanup()


@pytest.fixture(scope="module")
async def own_sim(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Simulator]:
    async with Simulator(state_dir=tmp_path_factory.mktemp("subs-sim"), tenants=1, users=10, seed=3) as simulator:
        yield simulator


@dataclass
class SubEnv:
    sim: Simulator
    subs: SubscriptionManager
    engine: SyncEngine
    settings: Settings
    tenant: dict[str, str]
    admin: GraphAdmin
    org_id: str

    @property
    def tenant_id(self) -> str:
        return self.tenant["tenant_id"]

    def graph_side(self) -> dict[str, Any]:
        return dict(self.sim.state.tenants[self.tenant_id].subscriptions)

    async def rows(self, pool: asyncpg.Pool) -> dict[str, asyncpg.Record]:
        found = await pool.fetch("SELECT * FROM graph_subscriptions WHERE tenant_id = $1", self.tenant_id)
        return {r["resource"]: r for r in found}


def sim_now(sim: Simulator) -> datetime:
    return datetime.fromtimestamp(sim.state.clock.now(), UTC)


@pytest.fixture
async def env(own_sim: Simulator, pool: asyncpg.Pool, receiver: Receiver, tmp_path: Path) -> AsyncIterator[SubEnv]:
    tenant = await sim_control(own_sim, "POST", "/_sim/tenants", {"users": 12})
    settings = Settings(
        graph=GraphSettings(url=own_sim.info.graph_url, authority_url=own_sim.info.authority_url,
                            ca_file=own_sim.info.ca_file, max_retries=2),
        webhook=WebhookSettings(public_url=receiver.url + "/hook", secret=SecretStr(SECRET)),
    )
    graph = GraphClients(settings.graph)
    async with pool.acquire() as conn:
        org = await make_org(conn, tenant, ALL)
    yield SubEnv(own_sim, SubscriptionManager(pool=pool, graph=graph, settings=settings, now=lambda: sim_now(own_sim)),
                 SyncEngine(pool=pool, graph=graph, settings=settings), settings, tenant,
                 await graph_admin(own_sim, tenant), org)
    await graph.close()


async def test_created_for_users_and_groups_with_hmac_client_state(env: SubEnv, pool: asyncpg.Pool,
                                                                   receiver: Receiver) -> None:
    done = await env.subs.reconcile_tenant(env.tenant_id)
    assert done["created"] == 2 and done["failed"] == 0

    graph_side = env.graph_side()
    assert sorted(s.resource for s in graph_side.values()) == ["groups", "users"]
    for sub in graph_side.values():
        assert sub.client_state == client_state_for(env.tenant_id, SECRET)
        assert sub.notification_url == f"{receiver.url}/hook/notifications"
        assert sub.lifecycle_notification_url == f"{receiver.url}/hook/lifecycle"
        assert set(sub.change_type.split(",")) == {"updated", "deleted"}
    rows = await env.rows(pool)
    assert {r["id"] for r in rows.values()} == set(graph_side)
    for row in rows.values():  # what Graph granted, not what we asked for
        assert abs(row["expires_at"].timestamp() - graph_side[row["id"]].expiration) < 1

    again = await env.subs.reconcile_tenant(env.tenant_id)
    assert again["kept"] == 2 and again["created"] == 0
    assert set(env.graph_side()) == set(graph_side)


async def test_renewed_within_renew_before_of_expiry(env: SubEnv, pool: asyncpg.Pool) -> None:
    await env.subs.reconcile_tenant(env.tenant_id)
    before = {s.id: s.expiration for s in env.graph_side().values()}
    sync = env.settings.sync
    # Not yet: just outside the renewal window nothing happens.
    await sim_control(env.sim, "POST", "/_sim/clock",
                      {"minutes": sync.subscription_lifetime_min - sync.renew_before_min - 60})
    assert (await env.subs.reconcile_tenant(env.tenant_id))["kept"] == 2
    # Inside the window: both are renewed in place, same ids, a full lifetime from (simulated) now.
    await sim_control(env.sim, "POST", "/_sim/clock", {"minutes": 120})
    done = await env.subs.reconcile_tenant(env.tenant_id)
    assert done["renewed"] == 2 and done["created"] == 0
    after = {s.id: s.expiration for s in env.graph_side().values()}
    assert set(after) == set(before)
    expected = env.sim.state.clock.now() + sync.subscription_lifetime_min * 60
    assert all(abs(exp - expected) < 5 for exp in after.values())
    rows = await env.rows(pool)
    assert all(abs(r["expires_at"].timestamp() - after[r["id"]]) < 1 for r in rows.values())
    assert all(r["renewed_at"] is not None for r in rows.values())


async def test_recreated_when_graph_no_longer_knows_it(env: SubEnv, pool: asyncpg.Pool) -> None:
    await env.subs.reconcile_tenant(env.tenant_id)
    users_sub = (await env.rows(pool))["users"]["id"]
    await env.admin.call("DELETE", f"/subscriptions/{users_sub}")  # an administrator, or an expiry

    done = await env.subs.reconcile_tenant(env.tenant_id)
    assert done["lost"] == 1 and done["created"] == 1 and done["kept"] == 1
    rows = await env.rows(pool)
    assert rows["users"]["id"] != users_sub
    assert set(env.graph_side()) == {r["id"] for r in rows.values()}


async def test_orphan_with_our_url_is_deleted_not_doubled(env: SubEnv, pool: asyncpg.Pool,
                                                          receiver: Receiver) -> None:
    await env.subs.reconcile_tenant(env.tenant_id)
    # A crash between Graph's create and our save leaves a subscription we never recorded.
    expires = (sim_now(env.sim) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await env.admin.call("POST", "/subscriptions", {
        "changeType": "updated,deleted", "resource": "users", "expirationDateTime": expires,
        "notificationUrl": f"{receiver.url}/hook/notifications", "clientState": "x"})

    done = await env.subs.reconcile_tenant(env.tenant_id)
    assert done["orphans"] == 1 and done["kept"] == 2
    assert len(env.graph_side()) == 2


async def test_deleted_when_no_organization_of_the_tenant_syncs(env: SubEnv, pool: asyncpg.Pool) -> None:
    await env.subs.reconcile_tenant(env.tenant_id)
    await pool.execute("UPDATE org_user_syncs SET status = 'disabled' WHERE organization_id = $1::uuid", env.org_id)

    done = await env.subs.reconcile_tenant(env.tenant_id)
    assert done["deleted"] == 2
    assert env.graph_side() == {}
    assert await env.rows(pool) == {}


async def _lifecycle(env: SubEnv, receiver: Receiver, sub_id: str, event: str) -> messages.LifecycleNotification:
    """Fire a lifecycle event on the simulator and turn what the receiver got into our Kafka message."""
    await sim_control(env.sim, "POST", "/_sim/lifecycle", {"subscription_id": sub_id, "event": event})
    deadline = time.monotonic() + 10
    while not (items := [i for i in receiver.items("/hook/lifecycle")
                         if i["subscriptionId"] == sub_id and i["lifecycleEvent"] == event]):
        assert time.monotonic() < deadline, "lifecycle notification not delivered"
        await asyncio.sleep(0.05)
    item = items[0]
    assert item["clientState"] == client_state_for(env.tenant_id, SECRET)
    return messages.LifecycleNotification(tenant_id=env.tenant_id, subscription_id=sub_id,
                                          lifecycle_event=event, received_at=datetime.now(UTC).isoformat())


async def test_reauthorization_required_reauthorizes(env: SubEnv, pool: asyncpg.Pool, receiver: Receiver) -> None:
    await env.subs.reconcile_tenant(env.tenant_id)
    sub_id = (await env.rows(pool))["users"]["id"]
    note = await _lifecycle(env, receiver, sub_id, "reauthorizationRequired")
    handler = TenantWorkPerformer(engine=env.engine, subscriptions=env.subs, max_parallel=2)

    assert await handler([(topics.LIFECYCLE, note)]) == {env.tenant_id: DONE}
    assert sub_id in env.graph_side()  # reauthorized in place, nothing recreated
    assert (await env.rows(pool))["users"]["id"] == sub_id

    # Graph forgot it meanwhile: reauthorizing fails with 404, so it is recreated instead.
    await env.admin.call("DELETE", f"/subscriptions/{sub_id}")
    assert await handler([(topics.LIFECYCLE, note)]) == {env.tenant_id: DONE}
    rows = await env.rows(pool)
    assert rows["users"]["id"] != sub_id and rows["users"]["id"] in env.graph_side()


async def test_subscription_removed_recreates_and_resyncs(env: SubEnv, pool: asyncpg.Pool,
                                                          receiver: Receiver) -> None:
    await env.engine.org_sync(env.tenant_id, env.org_id, None)
    await env.subs.reconcile_tenant(env.tenant_id)
    sub_id = (await env.rows(pool))["users"]["id"]
    target = await pool.fetchrow("SELECT * FROM end_users WHERE organization_id = $1::uuid LIMIT 1", env.org_id)
    # A change made while the subscription is gone: no notification of it will ever be processed.
    await env.admin.call("PATCH", f"/users/{target['entra_object_id']}", {"jobTitle": "Lighthouse Keeper"})
    note = await _lifecycle(env, receiver, sub_id, "subscriptionRemoved")
    assert sub_id not in env.graph_side()

    handler = TenantWorkPerformer(engine=env.engine, subscriptions=env.subs, max_parallel=2)
    assert await handler([(topics.LIFECYCLE, note), (topics.LIFECYCLE, note)]) == {env.tenant_id: DONE}  # coalesced

    rows = await env.rows(pool)
    assert rows["users"]["id"] != sub_id and rows["users"]["id"] in env.graph_side()
    assert len(env.graph_side()) == 2
    assert await pool.fetchval("SELECT job_title FROM end_users WHERE id = $1", target["id"]) == "Lighthouse Keeper"
    assert await pool.fetchval("SELECT last_full_resync_at FROM tenant_sync_status WHERE tenant_id = $1",
                               env.tenant_id) is not None


async def test_processed_notifications_stamp_tenant_and_subscription(env: SubEnv, pool: asyncpg.Pool) -> None:
    await env.engine.org_sync(env.tenant_id, env.org_id, None)
    await env.subs.reconcile_tenant(env.tenant_id)
    rows = await env.rows(pool)
    assert rows["users"]["last_notification_at"] is None
    note = messages.ChangeNotification(tenant_id=env.tenant_id, subscription_id=rows["users"]["id"],
                                       change_type="updated", resource="Users/x", object_type="user",
                                       received_at=datetime.now(UTC).isoformat())
    handler = TenantWorkPerformer(engine=env.engine, subscriptions=env.subs, max_parallel=2)

    assert await handler([(topics.NOTIFICATIONS, note)]) == {env.tenant_id: DONE}

    rows = await env.rows(pool)
    assert rows["users"]["last_notification_at"] is not None
    assert rows["groups"]["last_notification_at"] is None
    status = await pool.fetchrow("SELECT * FROM tenant_sync_status WHERE tenant_id = $1", env.tenant_id)
    assert status["last_notification_at"] is not None and status["last_delta_at"] is not None


async def test_reauthorization_for_another_tenants_subscription_is_ignored(env: SubEnv, pool: asyncpg.Pool) -> None:
    other = await sim_control(env.sim, "POST", "/_sim/tenants", {"users": 3})
    async with pool.acquire() as conn:
        await make_org(conn, other, ALL)
    await env.subs.reconcile_tenant(env.tenant_id)
    await env.subs.reconcile_tenant(other["tenant_id"])
    own_before = {r: row["id"] for r, row in (await env.rows(pool)).items()}
    foreign = await pool.fetchval(
        "SELECT id FROM graph_subscriptions WHERE tenant_id = $1 AND resource = 'users'", other["tenant_id"])
    note = messages.LifecycleNotification(tenant_id=env.tenant_id, subscription_id=foreign,
                                          lifecycle_event="reauthorizationRequired",
                                          received_at=datetime.now(UTC).isoformat())

    with capture_logs() as logs:
        assert await env.subs.reauthorize(note.tenant_id, note.subscription_id) is True

    # The other tenant keeps its subscription, on our side and on Graph's; the claimant is untouched too.
    assert await pool.fetchval("SELECT tenant_id FROM graph_subscriptions WHERE id = $1", foreign) == other["tenant_id"]
    assert foreign in env.sim.state.tenants[other["tenant_id"]].subscriptions
    assert {r: row["id"] for r, row in (await env.rows(pool)).items()} == own_before
    [line] = [e for e in logs if e["event"] == "subscription.foreign_lifecycle"]
    assert line["tenant_id"] == env.tenant_id and line["owner_tenant_id"] == other["tenant_id"]
