"""Rules of the sync that need the whole write path: enrichment and Assets, missing capabilities, groups,
leavers under the accidental-deletion guard, failed reads, and expired delta tokens.

Each test gets a fresh simulated tenant (`/_sim/tenants`) so tests never see each other's changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import string
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from simulator.server import Simulator
from tests.integration.conftest import ALL, Env, graph_admin, make_org
from worker.config import GraphSettings, Settings
from worker.core.macs import normalize_mac
from worker.engine.subscriptions import SubscriptionManager
from worker.engine.sync import SyncEngine
from worker.graph import GraphClients, GraphTransient
from worker.store.pool import create_pool


async def sim_control(sim: Simulator, method: str, path: str, body: Any = None) -> Any:
    ctx = ssl.create_default_context(cafile=sim.info.ca_file)
    base = sim.info.graph_url.rsplit("/v1.0", 1)[0]
    async with aiohttp.ClientSession() as http, http.request(method, base + path, json=body, ssl=ctx) as resp:
        assert resp.status < 400, await resp.text()
        return await resp.json() if resp.status not in (202, 204) else None


@pytest.fixture
async def fresh(sim: Simulator, pool: asyncpg.Pool, request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    """A brand-new simulated tenant (default 40 users) with one Organization, filters from the param."""
    filters = getattr(request, "param", ALL)
    tenant = await sim_control(sim, "POST", "/_sim/tenants", {"users": 40})
    settings = Settings(graph=GraphSettings(url=sim.info.graph_url, authority_url=sim.info.authority_url,
                                            ca_file=sim.info.ca_file, max_retries=2))
    graph = GraphClients(settings.graph)
    async with pool.acquire() as conn:
        org = await make_org(conn, tenant, filters)
    yield Env(SyncEngine(pool=pool, graph=graph, settings=settings),
              SubscriptionManager(pool=pool, graph=graph, settings=settings),
              settings, tenant, await graph_admin(sim, tenant), org)
    await graph.close()


async def end_users(pool: asyncpg.Pool, org: str) -> dict[str, asyncpg.Record]:
    rows = await pool.fetch("SELECT * FROM end_users WHERE organization_id = $1::uuid", org)
    return {r["entra_object_id"]: r for r in rows}


async def last_run(pool: asyncpg.Pool, org: str) -> asyncpg.Record:
    return await pool.fetchrow(
        "SELECT * FROM sync_runs WHERE organization_id = $1::uuid ORDER BY requested_at DESC LIMIT 1", org)


def assert_enrichment_of_each_user(users: dict[str, Any], sim: Simulator, tenant_id: str) -> None:
    """Each End User carries its own Entra user's MFA registration and last sign-in, as the simulator holds
    them (not merely: someone has some), and the tenant has users with and without each."""
    records = sim.state.tenants[tenant_id].users
    assert users
    for oid, u in users.items():
        rec = records[oid]
        mfa = u["microsoft"]["mfa"]
        assert (mfa["registered"], sorted(mfa["methods"])) == (
            rec.mfa["isMfaRegistered"], sorted(rec.mfa["methodsRegistered"])) if rec.mfa else mfa is None, oid
        # The latest of interactive, non-interactive and successful sign-ins (worker.engine.enrich.last_sign_in).
        expected = max(rec.sign_in[k] for k in ("lastSignInDateTime", "lastNonInteractiveSignInDateTime",
                                                 "lastSuccessfulSignInDateTime")) if rec.sign_in else None
        assert u["microsoft"]["last_sign_in_at"] == expected, (oid, u["microsoft"]["last_sign_in_at"], expected)
    assert {u["microsoft"]["last_sign_in_at"] is None for u in users.values()} == {True, False}
    assert {bool(u["microsoft"]["mfa"] and u["microsoft"]["mfa"]["registered"]) for u in users.values()} == {
        True, False}


async def test_enrichment_fills_microsoft_data_and_links_assets_by_mac(
    fresh: Env, pool: asyncpg.Pool, sim: Simulator
) -> None:
    tid = fresh.tenant["tenant_id"]
    device = next(d for d in sim.state.tenants[tid].devices if d.get("wiFiMacAddress"))
    mac = normalize_mac(device["wiFiMacAddress"])
    assert mac
    written_differently = "-".join(mac[i:i + 2] for i in range(0, 12, 2)).upper()
    asset = await pool.fetchval(
        "INSERT INTO assets (organization_id, name, mac_addresses) VALUES ($1::uuid, 'Laptop', $2) RETURNING id",
        fresh.org_id, [normalize_mac(written_differently)],
    )

    await fresh.engine.org_sync(tid, fresh.org_id, None)

    users = await end_users(pool, fresh.org_id)
    owner = users[device["userId"]]
    assert await pool.fetchval(
        "SELECT count(*) FROM end_user_assets WHERE end_user_id = $1 AND asset_id = $2", owner["id"], asset) == 1
    licensed = [u["microsoft"] for u in users.values() if u["microsoft"]["licenses"]]
    assert licensed and all(lic["sku_part_number"] for m in licensed for lic in m["licenses"])
    assert_enrichment_of_each_user(users, sim, tid)


async def test_sign_in_times_that_moved_reach_their_end_users_at_the_resync_and_nothing_else_is_rewritten(
    fresh: Env, pool: asyncpg.Pool, sim: Simulator
) -> None:
    """A first listing COPies sign-in times straight in; the hourly resync compares: a time that moved is
    written, a user now shown without one loses it, every other row stays as it was."""
    tid = fresh.tenant["tenant_id"]
    await fresh.engine.org_sync(tid, fresh.org_id, None)
    signed_in = sorted(u.id for u in sim.state.tenants[tid].users.values()
                       if u.sign_in and u.data["accountEnabled"])
    moved, gone, kept = signed_in[0], signed_in[1], signed_in[2:]
    rows_before = dict(await pool.fetch("SELECT id, xmin::text FROM entra_user_sign_ins WHERE tenant_id = $1", tid))
    assert set(signed_in) <= set(rows_before)

    user = sim.state.tenants[tid].users[moved]
    assert user.sign_in is not None
    user.sign_in = {**user.sign_in, "lastSignInDateTime": "2026-11-27T23:59:00Z",
                    "lastNonInteractiveSignInDateTime": "2026-11-27T23:59:00Z",
                    "lastSuccessfulSignInDateTime": "2026-11-27T23:59:00Z"}
    sim.state.tenants[tid].users[gone].sign_in = None
    await fresh.engine.resync(tid)

    users = await end_users(pool, fresh.org_id)
    assert users[moved]["microsoft"]["last_sign_in_at"] == "2026-11-27T23:59:00Z"
    assert users[gone]["microsoft"]["last_sign_in_at"] is None
    rows_after = dict(await pool.fetch("SELECT id, xmin::text FROM entra_user_sign_ins WHERE tenant_id = $1", tid))
    assert gone not in rows_after and rows_after[moved] != rows_before[moved]
    assert {k: rows_after[k] for k in kept} == {k: rows_before[k] for k in kept}
    run = await last_run(pool, fresh.org_id)
    assert run["counts"]["updated"] == 2


async def test_a_first_listing_leaves_the_planner_statistics_of_the_tables_it_filled(
    fresh: Env, pool: asyncpg.Pool
) -> None:
    """Without them a table just filled looks empty to the planner, and the projection's keyset pages were
    read with a sort of every remaining row."""
    tables = ["entra_user_enrichment", "entra_user_sign_ins", "entra_users"]
    since = await pool.fetchval("SELECT now()")
    await fresh.engine.org_sync(fresh.tenant["tenant_id"], fresh.org_id, None)
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        analyzed = await conn.fetch("SELECT relname, last_analyze FROM pg_stat_user_tables"
                                    " WHERE relname = ANY($1::text[]) ORDER BY relname", tables)
    assert [r["relname"] for r in analyzed] == tables
    assert all(r["last_analyze"] is not None and r["last_analyze"] >= since for r in analyzed), analyzed


async def test_a_graph_page_that_outlasts_the_timeout_fails_as_transient_instead_of_hanging(
    fresh: Env, sim: Simulator
) -> None:
    """Pages are read on the transport beneath httpx's client: the per-request timeout must still hold there."""
    from worker.graph import TenantCredentials

    settings = GraphSettings(url=sim.info.graph_url, authority_url=sim.info.authority_url,
                             ca_file=sim.info.ca_file, timeout_s=0.3, max_retries=1)
    graph = GraphClients(settings)
    tenant = fresh.tenant
    client = graph.for_tenant(TenantCredentials(tenant["tenant_id"], tenant["client_id"], tenant["client_secret"]))
    try:
        assert await client.subscribed_skus()  # a token in hand, before Graph slows down
        await sim_control(sim, "POST", "/_sim/faults", {"tenant_id": tenant["tenant_id"], "latency_ms": 3000})
        started = asyncio.get_running_loop().time()
        with pytest.raises(GraphTransient):
            async for _ in client.users_delta(None):
                pass
        assert asyncio.get_running_loop().time() - started < 2.5  # two attempts of 0.3 s and a backoff, not 3 s
    finally:
        await sim_control(sim, "POST", "/_sim/faults", {"tenant_id": tenant["tenant_id"], "latency_ms": 0})
        await graph.close()


async def test_missing_capabilities_are_reported_not_failed(fresh: Env, pool: asyncpg.Pool, sim: Simulator) -> None:
    tid = fresh.tenant["tenant_id"]
    await sim_control(sim, "POST", "/_sim/capabilities", {"tenant_id": tid, "p1p2": False, "intune": False})

    await fresh.engine.org_sync(tid, fresh.org_id, None)

    users = await end_users(pool, fresh.org_id)
    assert users, "everything else still syncs"
    assert all(u["microsoft"]["mfa"] is None and u["microsoft"]["last_sign_in_at"] is None for u in users.values())
    run = await last_run(pool, fresh.org_id)
    assert run["status"] == "succeeded"
    text = " ".join(run["warnings"])
    assert "sign-in" in text and "MFA" in text and "devices" in text
    caps = await pool.fetchval("SELECT capabilities FROM microsoft_tenants WHERE tenant_id = $1", tid)
    assert caps["entra_p1"] is False and caps["intune"] is False


async def test_failed_full_listing_deactivates_nobody(fresh: Env, pool: asyncpg.Pool, sim: Simulator) -> None:
    tid = fresh.tenant["tenant_id"]
    await fresh.engine.org_sync(tid, fresh.org_id, None)
    # Every users-delta call now fails: the resync cannot complete its listing.
    await sim_control(sim, "POST", "/_sim/faults", {"tenant_id": tid, "throttle": {
        "status": 500, "retry_after": None, "count": 1000, "path_prefix": "/v1.0/users/delta"}})
    try:
        with pytest.raises(GraphTransient):
            await fresh.engine.resync(tid)
    finally:
        await sim_control(sim, "DELETE", f"/_sim/faults?tenant_id={tid}")
    assert {u["sync_state"] for u in (await end_users(pool, fresh.org_id)).values()} == {"synced"}


async def test_mass_deletion_is_held_by_the_guard(fresh: Env, pool: asyncpg.Pool) -> None:
    tid = fresh.tenant["tenant_id"]
    await fresh.engine.org_sync(tid, fresh.org_id, None)
    users = await end_users(pool, fresh.org_id)
    victims = list(users)[: len(users) // 2]
    for oid in victims:
        await fresh.admin.call("DELETE", f"/users/{oid}")

    counts = await fresh.engine.sync_changes(tid)

    assert counts.get("held") == len(victims)
    assert {u["sync_state"] for u in (await end_users(pool, fresh.org_id)).values()} == {"synced"}
    run = await last_run(pool, fresh.org_id)
    assert run["status"] == "held" and "held" in run["warnings"][-1]


async def test_a_few_leavers_are_deactivated_with_the_reason(fresh: Env, pool: asyncpg.Pool) -> None:
    tid = fresh.tenant["tenant_id"]
    await fresh.engine.org_sync(tid, fresh.org_id, None)
    disabled, deleted = list(await end_users(pool, fresh.org_id))[:2]
    await fresh.admin.call("PATCH", f"/users/{disabled}", {"accountEnabled": False})
    await fresh.admin.call("DELETE", f"/users/{deleted}")

    await fresh.engine.sync_changes(tid)

    users = await end_users(pool, fresh.org_id)
    assert users[disabled]["sync_state"] == "deactivated" and "disabled" in users[disabled]["sync_state_reason"]
    assert users[deleted]["sync_state"] == "deactivated" and "deleted" in users[deleted]["sync_state_reason"]




async def test_group_filter_follows_transitive_membership(fresh: Env, pool: asyncpg.Pool) -> None:
    tid = fresh.tenant["tenant_id"]
    outer = await fresh.admin.call("POST", "/groups", {"displayName": "Outer", "mailEnabled": False,
                                                       "mailNickname": "outer", "securityEnabled": True})
    inner = await fresh.admin.call("POST", "/groups", {"displayName": "Inner", "mailEnabled": False,
                                                       "mailNickname": "inner", "securityEnabled": True})
    ref = f"{fresh.admin.graph_url}/directoryObjects/"
    await fresh.admin.call("POST", f"/groups/{outer['id']}/members/$ref", {"@odata.id": ref + inner["id"]})
    await pool.execute("UPDATE org_user_syncs SET filters = $2 WHERE organization_id = $1::uuid",
                       fresh.org_id, {**ALL, "groups": [outer["id"]]})
    await fresh.engine.org_sync(tid, fresh.org_id, None)
    before = await end_users(pool, fresh.org_id)
    member = (await fresh.admin.call("GET", "/users?$select=id,accountEnabled"))["value"]
    target = next(u["id"] for u in member if u["accountEnabled"] and u["id"] not in before)

    await fresh.admin.call("POST", f"/groups/{inner['id']}/members/$ref", {"@odata.id": ref + target})
    await fresh.engine.sync_changes(tid, groups=True)
    assert (await end_users(pool, fresh.org_id))[target]["sync_state"] == "synced"

    await fresh.admin.call("DELETE", f"/groups/{inner['id']}/members/{target}/$ref")
    await fresh.engine.sync_changes(tid, groups=True)
    assert (await end_users(pool, fresh.org_id))[target]["sync_state"] == "out_of_scope"


async def test_expired_delta_token_falls_back_to_a_full_listing(
    fresh: Env, pool: asyncpg.Pool, sim: Simulator
) -> None:
    tid = fresh.tenant["tenant_id"]
    await fresh.engine.org_sync(tid, fresh.org_id, None)
    oid = next(iter(await end_users(pool, fresh.org_id)))
    await fresh.admin.call("PATCH", f"/users/{oid}", {"city": "Reykjavik"})
    await sim_control(sim, "POST", "/_sim/clock", {"days": 8})  # delta tokens last 7 days

    await fresh.engine.sync_changes(tid)

    assert (await end_users(pool, fresh.org_id))[oid]["city"] == "Reykjavik"


async def test_confirming_a_held_run_applies_the_deactivations(fresh: Env, pool: asyncpg.Pool) -> None:
    tid = fresh.tenant["tenant_id"]
    await fresh.engine.org_sync(tid, fresh.org_id, None)
    victims = list(await end_users(pool, fresh.org_id))[:15]
    for oid in victims:
        await fresh.admin.call("DELETE", f"/users/{oid}")
    await fresh.engine.sync_changes(tid)
    assert (await last_run(pool, fresh.org_id))["status"] == "held"

    counts = await fresh.engine.org_sync(tid, fresh.org_id, None, confirm_deactivations=True)

    assert counts["deactivated"] == len(victims)
    states = {oid: u["sync_state"] for oid, u in (await end_users(pool, fresh.org_id)).items()}
    assert {states[v] for v in victims} == {"deactivated"}


async def test_each_enabled_organization_run_counts_what_it_created(fresh: Env, pool: asyncpg.Pool) -> None:
    """Two Organizations enabled at once: the first org-sync must not create the second's End Users behind
    its back, or the second's run would report nothing created."""
    tid = fresh.tenant["tenant_id"]
    async with pool.acquire() as conn:
        second = await make_org(conn, fresh.tenant, ALL)
    runs = {}
    for org in (fresh.org_id, second):
        runs[org] = await pool.fetchval(
            "INSERT INTO sync_runs (kind, organization_id, tenant_id, status) VALUES ('org-sync', $1::uuid, $2,"
            " 'queued') RETURNING id::text", org, tid)

    first_counts = await fresh.engine.org_sync(tid, fresh.org_id, runs[fresh.org_id])
    assert await pool.fetchval("SELECT count(*) FROM end_users WHERE organization_id = $1::uuid", second) == 0
    second_counts = await fresh.engine.org_sync(tid, second, runs[second])

    assert first_counts["created"] == second_counts["created"] > 0
    for org, run in runs.items():
        row = await pool.fetchrow("SELECT status, counts FROM sync_runs WHERE id = $1::uuid", run)
        assert row["status"] == "succeeded" and row["counts"]["created"] > 0, org


async def test_full_resync_applies_membership_changes_and_rewrites_nothing_unchanged(
    fresh: Env, pool: asyncpg.Pool
) -> None:
    tid = fresh.tenant["tenant_id"]
    group = await fresh.admin.call("POST", "/groups", {"displayName": "Field", "mailEnabled": False,
                                                       "mailNickname": "field", "securityEnabled": True})
    users = [u["id"] for u in (await fresh.admin.call("GET", "/users?$select=id,accountEnabled"))["value"]
             if u["accountEnabled"]][:2]
    ref = f"{fresh.admin.graph_url}/directoryObjects/"
    for uid in users:
        await fresh.admin.call("POST", f"/groups/{group['id']}/members/$ref", {"@odata.id": ref + uid})
    await pool.execute("UPDATE org_user_syncs SET filters = $2 WHERE organization_id = $1::uuid",
                       fresh.org_id, {**ALL, "groups": [group["id"]]})
    await fresh.engine.org_sync(tid, fresh.org_id, None)
    assert set(await end_users(pool, fresh.org_id)) == set(users)
    rows_before = await pool.fetch(
        "SELECT xmin::text, group_id, member_id FROM entra_group_members WHERE tenant_id = $1 ORDER BY 2, 3", tid)

    await fresh.engine.resync(tid)  # nothing changed: memberships are not rewritten
    rows_after = await pool.fetch(
        "SELECT xmin::text, group_id, member_id FROM entra_group_members WHERE tenant_id = $1 ORDER BY 2, 3", tid)
    assert rows_after == rows_before

    await fresh.admin.call("DELETE", f"/groups/{group['id']}/members/{users[0]}/$ref")
    await fresh.engine.resync(tid)  # the full listing, not a delta, sees the removal
    states = {oid: u["sync_state"] for oid, u in (await end_users(pool, fresh.org_id)).items()}
    assert states == {users[0]: "out_of_scope", users[1]: "synced"}


@pytest.mark.parametrize(
    "column,value,code,aadsts",
    [
        pytest.param("client_secret", "wrong", "invalid_client", "AADSTS7000215", id="wrong-secret"),
        pytest.param("client_id", "00000000-0000-4000-8000-000000000099", "unauthorized_client", "AADSTS700016",
                     id="unknown-application"),
        pytest.param("consent", None, "unauthorized_client", "AADSTS700016", id="consent-revoked"),
        pytest.param("tenant_id", None, "invalid_request", "AADSTS90002", id="tenant-not-found"),
    ],
)
async def test_refused_credentials_fail_the_run_naming_entra_error_not_retried(
    fresh: Env, pool: asyncpg.Pool, sim: Simulator, column: str, value: str | None, code: str, aadsts: str
) -> None:
    from schemas import messages
    from worker.core.delivery import Kind
    from worker.processes.work import TenantWorkPerformer
    from worker.store.admin import AdminStore

    tid, org_id = fresh.tenant["tenant_id"], fresh.org_id
    if column == "consent":
        await sim_control(sim, "POST", "/_sim/faults", {"tenant_id": tid, "consent_revoked": True})
    elif column == "tenant_id":  # registered under a tenant id Entra does not know
        tid = str(uuid.uuid4())
        async with pool.acquire() as conn:
            org_id = await make_org(conn, fresh.tenant | {"tenant_id": tid}, ALL)
    else:
        await pool.execute(f"UPDATE microsoft_tenants SET {column} = $2 WHERE tenant_id = $1", tid, value)
    try:
        queued = await AdminStore(pool).queue_org_sync(org_id)
        handler = TenantWorkPerformer(engine=fresh.engine, subscriptions=fresh.subs, max_parallel=1)
        command = messages.Command(command="org-sync", tenant_id=tid, organization_id=org_id,
                                   run_id=queued.run_id, requested_at="now")

        outcomes = await handler([("entra.commands", command)])  # neither raises nor asks for a retry
    finally:
        await sim_control(sim, "DELETE", f"/_sim/faults?tenant_id={fresh.tenant['tenant_id']}")

    assert outcomes[tid].kind is Kind.REFUSED
    status = await AdminStore(pool).get_user_sync(org_id)
    assert status["in_progress"] is False
    assert status["last_run"]["status"] == "failed"
    assert status["last_run"]["error"].startswith(f"{code}: {aadsts}")
    error = await pool.fetchval("SELECT last_error FROM tenant_sync_status WHERE tenant_id = $1", tid)
    assert error == status["last_run"]["error"]
    assert fresh.tenant["client_secret"] not in error and "wrong" not in error


async def test_tenant_status_records_the_first_full_sync_and_later_deltas(fresh: Env, pool: asyncpg.Pool) -> None:
    tid = fresh.tenant["tenant_id"]
    await fresh.engine.org_sync(tid, fresh.org_id, None)
    first = await pool.fetchrow("SELECT * FROM tenant_sync_status WHERE tenant_id = $1", tid)
    assert first["last_delta_at"] and first["last_full_resync_at"]

    await fresh.engine.sync_changes(tid)
    later = await pool.fetchrow("SELECT * FROM tenant_sync_status WHERE tenant_id = $1", tid)
    assert later["last_delta_at"] > first["last_delta_at"]
    assert later["last_full_resync_at"] == first["last_full_resync_at"]


async def test_operator_delete_of_an_out_of_scope_end_user_is_never_undone(fresh: Env, pool: asyncpg.Pool) -> None:
    tid = fresh.tenant["tenant_id"]
    await fresh.engine.org_sync(tid, fresh.org_id, None)
    oid, row = next(iter((await end_users(pool, fresh.org_id)).items()))
    await fresh.admin.call("PATCH", f"/users/{oid}", {"department": "Moved Elsewhere"})
    await pool.execute("UPDATE org_user_syncs SET filters = $2 WHERE organization_id = $1::uuid", fresh.org_id,
                       {**ALL, "departments": sorted({"Sales", "Support", "Engineering", "Finance", "HR",
                                                      "Marketing", "Operations", "IT", "Legal"})})
    await fresh.engine.org_sync(tid, fresh.org_id, None)
    assert (await end_users(pool, fresh.org_id))[oid]["sync_state"] == "out_of_scope"

    await pool.execute("DELETE FROM end_users WHERE id = $1", row["id"])  # the operator deletes it
    await fresh.engine.resync(tid)
    await fresh.engine.org_sync(tid, fresh.org_id, None)

    assert oid not in await end_users(pool, fresh.org_id)


async def test_re_enabling_resumes_and_relinks_the_same_records(fresh: Env, pool: asyncpg.Pool) -> None:
    tid = fresh.tenant["tenant_id"]
    await fresh.engine.org_sync(tid, fresh.org_id, None)
    before = {oid: r["id"] for oid, r in (await end_users(pool, fresh.org_id)).items()}
    await pool.execute("UPDATE org_user_syncs SET status = 'disabled' WHERE organization_id = $1::uuid", fresh.org_id)
    await pool.execute("UPDATE end_users SET sync_state = 'sync_disabled' WHERE organization_id = $1::uuid",
                       fresh.org_id)
    oid = next(iter(before))
    await fresh.admin.call("PATCH", f"/users/{oid}", {"jobTitle": "Changed While Disabled"})
    await fresh.engine.sync_changes(tid)  # disabled: nothing is updated
    assert (await end_users(pool, fresh.org_id))[oid]["job_title"] != "Changed While Disabled"

    await pool.execute("UPDATE org_user_syncs SET status = 'enabled' WHERE organization_id = $1::uuid", fresh.org_id)
    await fresh.engine.org_sync(tid, fresh.org_id, None)

    after = await end_users(pool, fresh.org_id)
    assert {o: r["id"] for o, r in after.items()} == before  # the same records, no duplicates
    assert {r["sync_state"] for r in after.values()} == {"synced"}
    assert after[oid]["job_title"] == "Changed While Disabled"


async def test_first_listing_with_users_repeated_across_pages_still_lands_every_user(
    sim: Simulator, pool: asyncpg.Pool
) -> None:
    """A tenant's first listing is COPied straight into the mirror; a user Graph repeats on a later page makes
    that COPY fail, and the batch falls back to the comparing write without losing or doubling anyone."""
    tenant = await sim_control(sim, "POST", "/_sim/tenants", {"users": 2300})
    tid = tenant["tenant_id"]
    await sim_control(sim, "POST", "/_sim/faults", {"tenant_id": tid, "delta_repeat": True})
    settings = Settings(graph=GraphSettings(url=sim.info.graph_url, authority_url=sim.info.authority_url,
                                            ca_file=sim.info.ca_file))
    graph = GraphClients(settings.graph)
    try:
        async with pool.acquire() as conn:
            org = await make_org(conn, tenant, ALL)
        await SyncEngine(pool=pool, graph=graph, settings=settings).org_sync(tid, org, None)
    finally:
        await graph.close()
    admin = await graph_admin(sim, tenant)
    listed, page = [], await admin.call("GET", "/users?$select=id,accountEnabled&$top=999")
    while True:
        listed += page["value"]
        if not page.get("@odata.nextLink"):
            break
        page = await admin.call("GET", page["@odata.nextLink"].removeprefix(admin.graph_url))
    assert await pool.fetchval("SELECT count(*) FROM entra_users WHERE tenant_id = $1", tid) == len(listed) == 2300
    enabled = {u["id"] for u in listed if u["accountEnabled"]}
    assert set(await end_users(pool, org)) == enabled


async def test_pipelined_chunks_give_a_shared_email_to_one_end_user_and_review_the_other(
    fresh: Env, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The projection reads the next chunk before the previous one is written. Two users with one email in
    different chunks: the second chunk was decided without the End User the first just created, the email index
    refuses its create, and the chunk is decided again: one End User, one review, as if read one after the other."""
    import worker.engine.projection

    monkeypatch.setattr(worker.engine.projection, "CHUNK", 1)  # every user a chunk of its own
    tid = fresh.tenant["tenant_id"]
    listed = await fresh.admin.call("GET", "/users?$select=id,mail,accountEnabled&$top=999")
    first, second = sorted(u["id"] for u in listed["value"] if u["accountEnabled"] and u["mail"])[:2]
    shared = next(u["mail"] for u in listed["value"] if u["id"] == first)
    await fresh.admin.call("PATCH", f"/users/{second}", {"mail": shared.upper()})

    counts = await fresh.engine.org_sync(tid, fresh.org_id, None)

    users = await end_users(pool, fresh.org_id)
    assert users[first]["email"] == shared and second not in users
    reviews = await pool.fetch("SELECT entra_object_id FROM review_items WHERE organization_id = $1::uuid",
                               fresh.org_id)
    assert [r[0] for r in reviews] == [second]
    assert counts["review"] == 1 and counts["created"] == len(users)
    assert counts["errors"] == 0  # decided again, not left out as a user PostgreSQL refuses
    assert await pool.fetchval("SELECT count(*) FROM sync_runs WHERE organization_id = $1::uuid",
                               fresh.org_id) == 1


async def test_two_writers_creating_crossing_emails_end_with_one_end_user_per_email(
    fresh: Env, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An org-sync writes two chunks at once, but not two that give End Users the same email: chunks (a, b)
    and (c, d) with c sharing b's email and d sharing a's would create them in crossing order (a deadlock of
    the two transactions, or a race for each email). The later chunk waits for the earlier one, its creates
    are refused by the email index and it is decided again: a and b keep their emails as they would one chunk
    after the other, c and d go to review; nothing fails."""
    import worker.engine.projection

    monkeypatch.setattr(worker.engine.projection, "CHUNK", 2)
    tid = fresh.tenant["tenant_id"]
    listed = await fresh.admin.call("GET", "/users?$select=id,mail,accountEnabled&$top=999")
    mail = {u["id"]: u["mail"] for u in listed["value"]}
    ids = sorted(mail)  # the projection's chunks: consecutive pairs of ids
    pairs = []
    for k in range(0, 40, 4):
        a, b, c, d = ids[k:k + 4]
        enabled = all(u["accountEnabled"] for u in listed["value"] if u["id"] in (a, b, c, d))
        if enabled and mail[a] and mail[b]:
            await fresh.admin.call("PATCH", f"/users/{c}", {"mail": mail[b]})
            await fresh.admin.call("PATCH", f"/users/{d}", {"mail": mail[a]})
            pairs += [(a, d, mail[a]), (b, c, mail[b])]
    assert len(pairs) >= 10

    counts = await fresh.engine.org_sync(tid, fresh.org_id, None)

    users = await end_users(pool, fresh.org_id)
    reviewed = {r[0] for r in await pool.fetch(
        "SELECT entra_object_id FROM review_items WHERE organization_id = $1::uuid", fresh.org_id)}
    for earlier, later, email in pairs:
        assert users[earlier]["email"].lower() == email.lower() and later not in users
        assert later in reviewed
    assert counts["created"] == len(users) and counts["review"] == len(reviewed)
    assert (await last_run(pool, fresh.org_id))["status"] == "succeeded"  # nothing failed
    assert counts["errors"] == 0  # nor was anyone left out as a user PostgreSQL refuses


async def test_projection_without_a_spare_connection_reads_and_writes_on_one(
    fresh: Env, pool: asyncpg.Pool, database_url: str
) -> None:
    """When the pool has no connection to spare, the projection runs chunk after chunk on the one it holds."""
    tid = fresh.tenant["tenant_id"]
    await fresh.engine.org_sync(tid, fresh.org_id, None)  # fills the mirror (the full pull wants spare ones)
    async with pool.acquire() as conn:
        second_org = await make_org(conn, fresh.tenant, ALL)
    single = await create_pool(database_url, max_size=1)
    graph = GraphClients(fresh.settings.graph)
    try:
        counts = await SyncEngine(pool=single, graph=graph, settings=fresh.settings).org_sync(tid, second_org, None)
    finally:
        await graph.close()
        await single.close()
    assert counts["created"] == len(await end_users(pool, fresh.org_id)) > 0
    first = {oid: r["email"] for oid, r in (await end_users(pool, fresh.org_id)).items()}
    assert {oid: r["email"] for oid, r in (await end_users(pool, second_org)).items()} == first


async def test_first_sync_of_a_tenant_also_serves_an_organization_that_awaits_no_org_sync(
    fresh: Env, pool: asyncpg.Pool
) -> None:
    """A tenant's first listing flags its users only when another enabled Organization will not project every
    user itself; one with no org-sync queued gets them through the flags."""
    tid = fresh.tenant["tenant_id"]
    async with pool.acquire() as conn:
        other = await make_org(conn, fresh.tenant, ALL)  # enabled, no org-sync queued

    await fresh.engine.org_sync(tid, fresh.org_id, None)

    mine, theirs = await end_users(pool, fresh.org_id), await end_users(pool, other)
    assert mine and set(theirs) == set(mine)
    assert await pool.fetchval("SELECT count(*) FROM entra_user_dirty WHERE tenant_id = $1", tid) == 0


async def test_first_full_sync_on_a_pool_with_no_spare_connection_runs_its_listings_one_after_another(
    fresh: Env, pool: asyncpg.Pool, database_url: str, sim: Simulator
) -> None:
    """Groups and enrichment want connections of their own; a pool that cannot spare one (here: a pool of one,
    held by the sync itself) makes them run after the users listing on the same connection, not wait for ever."""
    tid = fresh.tenant["tenant_id"]
    single = await create_pool(database_url, max_size=1)
    graph = GraphClients(fresh.settings.graph)
    try:
        async with asyncio.timeout(120):
            counts = await SyncEngine(pool=single, graph=graph, settings=fresh.settings).org_sync(
                tid, fresh.org_id, None)
    finally:
        await graph.close()
        await single.close()
    users = await end_users(pool, fresh.org_id)
    assert counts["created"] == len(users) > 0
    assert_enrichment_of_each_user(users, sim, tid)  # the enrichment ran, for each user
    assert await pool.fetchval("SELECT count(*) FROM entra_group_members WHERE tenant_id = $1", tid) > 0


@contextlib.asynccontextmanager
async def end_user_row_locked(pool: asyncpg.Pool, org: str, entra_object_id: str) -> AsyncIterator[None]:
    """Holds a lock on an End User's row: the projection's write of it waits inside its transaction."""
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            assert await conn.fetchval(
                "SELECT count(*) FROM (SELECT 1 FROM end_users WHERE organization_id = $1::uuid"
                " AND entra_object_id = $2 FOR UPDATE) AS locked", org, entra_object_id) == 1
            yield
        finally:
            await tx.rollback()


@pytest.mark.parametrize("unit", ["resync", "delta"])
async def test_a_chunk_read_before_an_earlier_chunk_freed_its_email_is_decided_again(
    fresh: Env, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, unit: str
) -> None:
    """User A (an End User) moves to a new address; B, a new Entra user in a later chunk, takes A's old one.
    One chunk after the other, A's End User gives the address up before B is decided, so B is created. The
    projection reads B's chunk while A's is written (here: A's End User row is locked until B's chunk has been
    read): B's chunk must be decided again once A's is in, not sent to review on the stale read. Both the
    two-writer pipeline (resync) and the one-writer one (a change batch) read ahead."""
    import worker.engine.projection

    tid = fresh.tenant["tenant_id"]
    await fresh.engine.org_sync(tid, fresh.org_id, None)
    users = await end_users(pool, fresh.org_id)
    domain = next(iter(users.values()))["microsoft"]["user_principal_name"].rsplit("@", 1)[1]
    b = (await fresh.admin.call("POST", "/users", {
        "accountEnabled": True, "displayName": "Newcomer B", "mailNickname": "newcomer-b",
        "userPrincipalName": f"newcomer-b@{domain}", "passwordProfile": {"password": "x-Secret-1"}}))["id"]
    a = max(oid for oid, u in users.items() if oid < b and u["email"] and u["sync_state"] == "synced")
    freed = users[a]["email"]
    await fresh.admin.call("PATCH", f"/users/{a}", {"mail": f"moved-a@{domain}"})
    await fresh.admin.call("PATCH", f"/users/{b}", {"mail": freed})

    monkeypatch.setattr(worker.engine.projection, "CHUNK", 1)  # A and B in chunks of their own, A's first (by id)
    b_read = asyncio.Event()
    real_end_users_of = worker.engine.projection._end_users_of

    async def end_users_of(conn: Any, run: Any, tenant_id: str, chunk_users: Any) -> Any:
        found = await real_end_users_of(conn, run, tenant_id, chunk_users)
        if any(u.id == b for u in chunk_users):
            b_read.set()
        return found

    monkeypatch.setattr(worker.engine.projection, "_end_users_of", end_users_of)  # a spy: the real read, then a signal
    async with end_user_row_locked(pool, fresh.org_id, a):
        work = asyncio.create_task(fresh.engine.resync(tid) if unit == "resync" else fresh.engine.sync_changes(tid))
        try:
            await asyncio.wait_for(b_read.wait(), 60)  # B's chunk read while A's write waits on the lock
        except TimeoutError:
            work.cancel()
            raise AssertionError("the projection did not read B's chunk ahead of A's write") from None
        assert not work.done()
    counts = await work

    after = await end_users(pool, fresh.org_id)
    assert after[a]["email"] == f"moved-a@{domain}"
    assert b in after and after[b]["email"] == freed and after[b]["sync_state"] == "synced"
    assert await pool.fetchval("SELECT count(*) FROM review_items WHERE organization_id = $1::uuid",
                               fresh.org_id) == 0
    assert (counts["created"], counts["review"], counts["errors"]) == (1, 0, 0)


def unindexable_address(domain: str) -> str:
    """An address no B-tree index takes: 4,000 random characters (incompressible) exceed PostgreSQL's index
    row limit (SQLSTATE 54000), so the End User email index refuses it. The mirror, which does not index mail,
    stores it; Graph (here the simulator) serves it as any other value."""
    rng = random.Random(1234)
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(4000)) + "@" + domain


async def test_a_user_whose_values_postgresql_refuses_is_left_out_counted_and_tried_again(
    fresh: Env, pool: asyncpg.Pool
) -> None:
    """One user of a chunk carries a value PostgreSQL refuses when the End User is written. The chunk is
    written by halves: every other user is written, the refused one is left out of the run, counted in its
    `errors`, named with PostgreSQL's message in its warnings, and the run succeeds. It stays flagged, so the
    next unit of work tries it again; once its value is fixed in Entra it is written."""
    tid = fresh.tenant["tenant_id"]
    listed = (await fresh.admin.call("GET", "/users?$select=id,userPrincipalName,accountEnabled&$top=999"))["value"]
    enabled = sorted(u["id"] for u in listed if u["accountEnabled"])
    bad = enabled[len(enabled) // 2]  # mid-chunk: users before and after it share its chunk
    domain = next(u for u in listed if u["id"] == bad)["userPrincipalName"].rsplit("@", 1)[1]
    await fresh.admin.call("PATCH", f"/users/{bad}", {"mail": unindexable_address(domain)})

    counts = await fresh.engine.org_sync(tid, fresh.org_id, None)

    users = await end_users(pool, fresh.org_id)
    assert set(users) == set(enabled) - {bad}
    assert (counts["created"], counts["errors"]) == (len(enabled) - 1, 1)
    run = await last_run(pool, fresh.org_id)
    assert run["status"] == "succeeded" and run["counts"]["errors"] == 1
    named = [w for w in run["warnings"] if bad in w]
    assert len(named) == 1 and "54000" in named[0] and "index row" in named[0], run["warnings"]
    assert await pool.fetchval("SELECT count(*) FROM entra_user_dirty WHERE tenant_id = $1 AND id = $2", tid, bad)

    again = await fresh.engine.sync_changes(tid)  # nothing changed in Entra: the flag brings it back
    assert (again["created"], again["errors"]) == (0, 1)
    run = await last_run(pool, fresh.org_id)
    assert run["kind"] == "delta" and run["status"] == "succeeded" and any(bad in w for w in run["warnings"])
    assert await pool.fetchval("SELECT count(*) FROM entra_user_dirty WHERE tenant_id = $1 AND id = $2", tid, bad)

    await fresh.admin.call("PATCH", f"/users/{bad}", {"mail": f"fixed-address@{domain}"})
    fixed = await fresh.engine.sync_changes(tid)
    assert (fixed["created"], fixed["errors"]) == (1, 0)
    assert (await end_users(pool, fresh.org_id))[bad]["email"] == f"fixed-address@{domain}"
    assert not await pool.fetchval("SELECT count(*) FROM entra_user_dirty WHERE tenant_id = $1", tid)
