"""A tenant's credential over its life, on the real-time path: registered through the admin API (tested against
the simulator's authority and Graph), rotated in Entra while the worker runs, changed with PATCH and used at
the worker's next unit of work without a restart, and removed with its Graph subscriptions. Another tenant
syncs normally throughout. Also: a tenant registered with an upper-case id receives its change notifications.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from structlog.testing import capture_logs

from tests.admin.conftest import TOKEN, Api, Client, unique
from tests.faults.conftest import ChangeTracker, Pipeline
from tests.integration.conftest import GraphAdmin, graph_admin
from tests.integration.test_sync_rules import sim_control
from worker.admin.api import create_admin_app
from worker.bus import KafkaPublisher
from worker.config import AdminSettings


@dataclass
class Tenant(ChangeTracker):
    """A simulated tenant onboarded through the admin API, with one Organization syncing every user."""

    creds: dict[str, str]
    admin: GraphAdmin
    pool: asyncpg.Pool
    org_id: str | None
    psa_id: str

    @property
    def tenant_id(self) -> str:
        return self.creds["tenant_id"]


@pytest.fixture
async def api(pipeline: Pipeline) -> AsyncIterator[Api]:
    """The admin API as production builds it (real KafkaPublisher), over the pipeline's database and broker,
    testing credentials against the pipeline's simulator."""
    settings = pipeline.settings.model_copy(
        update={"admin": AdminSettings(host="127.0.0.1", port=0, token=SecretStr(TOKEN))})
    publisher = KafkaPublisher(settings.kafka)
    await publisher.start()
    client: Client = TestClient(TestServer(create_admin_app(settings, pool=pipeline.pool, publisher=publisher),
                                           host="127.0.0.1"))
    await client.start_server()
    try:
        yield Api(client, pipeline.pool, pipeline.sim)
    finally:
        await client.close()
        await publisher.stop()


async def onboard(api: Api, pipeline: Pipeline, *, users: int = 8) -> Tenant:
    """A new simulated tenant registered, mapped and enabled through the API; returns once the worker's
    initial sync of its Organization succeeded."""
    creds = dict(await sim_control(pipeline.sim, "POST", "/_sim/tenants", {"users": users}))
    await api.ok("POST", "/microsoft-tenants", {
        "tenant_id": creds["tenant_id"], "display_name": unique("Tenant"),
        "client_id": creds["client_id"], "client_secret": creds["client_secret"]}, status=201)
    psa = await api.psa_tenant(creds["tenant_id"])
    org = await api.organization(psa["id"])
    run_id = await api.enable(org["id"])
    deadline = time.monotonic() + 60
    while (run := await api.ok("GET", f"/sync-runs/{run_id}"))["status"] != "succeeded":
        assert run["status"] in ("queued", "running") and time.monotonic() < deadline, run
        pipeline.check_alive()
        await asyncio.sleep(0.1)
    return Tenant(creds=creds, admin=await graph_admin(pipeline.sim, creds), pool=pipeline.pool,
                  org_id=org["id"], psa_id=psa["id"])


async def object_ids(pool: asyncpg.Pool, org_id: str | None) -> list[str]:
    rows = await pool.fetch("SELECT entra_object_id FROM end_users WHERE organization_id = $1::uuid"
                            " ORDER BY entra_object_id", org_id)
    return [r[0] for r in rows]


async def last_error(pool: asyncpg.Pool, tenant_id: str) -> str | None:
    error: str | None = await pool.fetchval(
        "SELECT last_error FROM tenant_sync_status WHERE tenant_id = $1", tenant_id)
    return error


async def sim_subscriptions(pipeline: Pipeline, tenant_id: str) -> list[dict[str, Any]]:
    state = await sim_control(pipeline.sim, "GET", "/_sim/state")
    return list(next(t for t in state["tenants"] if t["tenant_id"] == tenant_id)["subscriptions"])


async def test_rotated_secret_fails_then_a_patched_one_syncs_without_a_restart(
    pipeline: Pipeline, api: Api
) -> None:
    other = await onboard(api, pipeline)
    rotated = await onboard(api, pipeline)
    others_users, users = await object_ids(pipeline.pool, other.org_id), await object_ids(pipeline.pool,
                                                                                         rotated.org_id)
    await rotated.converge(await rotated.patch_titles(users[:1], "Before"), timeout_s=30)

    # An administrator rotates the app's secret in Entra; the worker's cached token has run out meanwhile.
    new = await sim_control(pipeline.sim, "POST", "/_sim/credentials",
                            {"tenant_id": rotated.tenant_id, "revoke_tokens": True})
    rotated.admin = await graph_admin(pipeline.sim, new)
    with capture_logs() as logs:
        missed = await rotated.patch_titles(users[1:2], "While refused")
        deadline = time.monotonic() + 30
        while "invalid_client" not in (await last_error(pipeline.pool, rotated.tenant_id) or ""):
            assert time.monotonic() < deadline, await last_error(pipeline.pool, rotated.tenant_id)
            pipeline.check_alive()
            await asyncio.sleep(0.1)
        error = await last_error(pipeline.pool, rotated.tenant_id)
        assert error is not None and "AADSTS7000215" in error and new["client_secret"] not in error
        assert await rotated.missing(missed) == missed  # nothing of it was synced
        # The other tenant is not held back by the refused one.
        await other.converge(await other.patch_titles(others_users[:2], "During refusal"), timeout_s=15)

        # The operator stores the new secret: the next change of the tenant syncs, with the one it missed.
        changed = await api.ok("PATCH", f"/microsoft-tenants/{rotated.tenant_id}",
                               {"client_secret": new["client_secret"]})
        assert changed["tenant_id"] == rotated.tenant_id and "client_secret" not in changed
        wanted = missed | await rotated.patch_titles(users[2:3], "After patch")
        took = await rotated.converge(wanted, timeout_s=30)
        await other.converge(await other.patch_titles(others_users[2:3], "After patch"), timeout_s=15)
    assert pipeline.worker is not None and not pipeline.worker.done()  # the same worker, never restarted
    assert [e for e in logs if e["event"] == "graph.credential_changed" and e["tenant_id"] == rotated.tenant_id]
    print(f"rotation: the tenant's changes synced {took:.2f} s after the PATCH's next change")


async def test_patch_with_a_refused_secret_keeps_the_stored_credential(pipeline: Pipeline, api: Api) -> None:
    tenant = await onboard(api, pipeline)
    before = await pipeline.pool.fetchrow(
        "SELECT client_id, client_secret, display_name FROM microsoft_tenants WHERE tenant_id = $1",
        tenant.tenant_id)
    path = f"/microsoft-tenants/{tenant.tenant_id}"
    resp = await api.call("PATCH", path, {"client_secret": "not-the-secret", "display_name": "Renamed"})
    assert resp.status == 400, resp.body
    assert resp.body["error"]["code"] == "invalid_client" and resp.body["error"]["field"] == "client_secret"
    assert resp.body["error"]["entra_error_codes"] == [7000215] and "not-the-secret" not in str(resp.body)
    resp = await api.call("PATCH", path, {"client_id": "00000000-0000-4000-8000-000000000000"})
    assert resp.status == 400 and resp.body["error"]["code"] == "unauthorized_client", resp.body
    assert resp.body["error"]["field"] == "client_id"
    for body, field in [({}, "body"), ({"client_secret": None}, "client_secret"), ({"client_secret": " "},
                        "client_secret"), ({"client_secret": 3}, "client_secret"), ({"tenant_id": "x"}, "tenant_id")]:
        resp = await api.call("PATCH", path, body)
        assert resp.status == 400 and resp.body["error"]["field"] == field, (body, resp.body)
    after = await pipeline.pool.fetchrow(
        "SELECT client_id, client_secret, display_name FROM microsoft_tenants WHERE tenant_id = $1",
        tenant.tenant_id)
    assert after == before  # nothing stored, not even the name sent with the refused secret
    assert (await api.call("PATCH", "/microsoft-tenants/7d1f1c9e-0000-4000-8000-000000000001",
                           {"display_name": "x"})).status == 404
    # The kept credential still works: the tenant syncs.
    users = await object_ids(pipeline.pool, tenant.org_id)
    await tenant.converge(await tenant.patch_titles(users[:1], "Still syncing"), timeout_s=30)
    renamed = await api.ok("PATCH", path.upper().replace("/MICROSOFT-TENANTS/", "/microsoft-tenants/"),
                           {"display_name": "Renamed"})
    assert renamed["display_name"] == "Renamed" and renamed["tenant_id"] == tenant.tenant_id


async def test_remove_a_tenant_deletes_its_subscriptions_in_graph_and_its_mirror(
    pipeline: Pipeline, api: Api
) -> None:
    other = await onboard(api, pipeline)
    tenant = await onboard(api, pipeline)
    assert len(await sim_subscriptions(pipeline, tenant.tenant_id)) == 2  # users and groups
    path = f"/microsoft-tenants/{tenant.tenant_id}"

    resp = await api.call("DELETE", path)
    assert resp.status == 409 and "unmap it first" in resp.body["error"]["message"], resp.body
    assert (await api.call("DELETE", "/microsoft-tenants/7d1f1c9e-0000-4000-8000-000000000002")).status == 404
    # Unmapping queues a renewal that would drop the subscriptions itself: with the worker stopped, only the
    # removal can delete them.
    await pipeline.stop_worker()
    await api.ok("DELETE", f"/psa-tenants/{tenant.psa_id}/microsoft-tenant")
    removed = await api.ok("DELETE", path)
    assert removed["removed"] is True and len(removed["subscriptions_deleted"]) == 2
    assert removed["rows_deleted"]["entra_users"] == 8 and removed["rows_deleted"]["graph_subscriptions"] == 2
    assert await sim_subscriptions(pipeline, tenant.tenant_id) == []  # gone in Graph
    for table in ("microsoft_tenants", "entra_users", "graph_subscriptions", "delta_links"):
        assert not await pipeline.pool.fetchval(f"SELECT count(*) FROM {table} WHERE tenant_id = $1",
                                                tenant.tenant_id), table
    assert len(await object_ids(pipeline.pool, tenant.org_id)) == 8  # End Users are product data: kept
    assert (await api.call("DELETE", path)).status == 404

    pipeline.start_worker()  # the other tenant goes on syncing
    users = await object_ids(pipeline.pool, other.org_id)
    await other.converge(await other.patch_titles(users[:1], "After removal"), timeout_s=30)
    assert len(await sim_subscriptions(pipeline, other.tenant_id)) == 2


async def test_upper_case_tenant_id_is_stored_lower_case_and_its_notifications_arrive(
    pipeline: Pipeline, api: Api
) -> None:
    """Graph sends tenant ids lower-case and the clientState HMAC lower-cases: a tenant stored as typed had
    every notification dropped and synced only hourly."""
    tenant = await onboard(api, pipeline)  # registered as Graph writes it, for comparison
    shouting = await sim_control(pipeline.sim, "POST", "/_sim/tenants", {"users": 6})
    typed = shouting["tenant_id"].upper()
    created = await api.ok("POST", "/microsoft-tenants", {
        "tenant_id": typed, "display_name": unique("Shouting"), "client_id": shouting["client_id"],
        "client_secret": shouting["client_secret"]}, status=201)
    assert created["tenant_id"] == shouting["tenant_id"] == typed.lower()
    resp = await api.call("POST", "/microsoft-tenants", {
        "tenant_id": typed.lower(), "display_name": "again", "client_id": shouting["client_id"],
        "client_secret": shouting["client_secret"]})
    assert resp.status == 409
    assert (await api.ok("GET", f"/microsoft-tenants/{typed}/sync-status"))["tenant_id"] == typed.lower()
    psa = await api.ok("POST", "/psa-tenants", {"name": unique("PSA")}, status=201)
    await api.ok("PUT", f"/psa-tenants/{psa['id']}/microsoft-tenant", {"microsoft_tenant_id": typed})
    org = await api.organization(psa["id"])
    run_id = await api.enable(org["id"])
    deadline = time.monotonic() + 60
    while (await api.ok("GET", f"/sync-runs/{run_id}"))["status"] != "succeeded":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    shouted = Tenant(creds=shouting, admin=await graph_admin(pipeline.sim, shouting), pool=pipeline.pool,
                     org_id=org["id"], psa_id=psa["id"])
    users = await object_ids(pipeline.pool, org["id"])
    assert len(users) == 6
    took = await shouted.converge(await shouted.patch_titles(users[:3], "Notified"), timeout_s=20)
    # Through change notifications, not a resync: the worker stamps them just after the End User writes.
    deadline = time.monotonic() + 10
    while await pipeline.pool.fetchval(
            "SELECT last_notification_at FROM tenant_sync_status WHERE tenant_id = $1", typed.lower()) is None:
        assert time.monotonic() < deadline, "the tenant's notifications were never recorded"
        await asyncio.sleep(0.05)
    normal = await object_ids(pipeline.pool, tenant.org_id)
    await tenant.converge(await tenant.patch_titles(normal[:1], "Notified"), timeout_s=20)
    print(f"upper-case tenant: changes arrived in {took:.2f} s")
