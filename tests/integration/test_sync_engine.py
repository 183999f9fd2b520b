"""The sync engine against the simulator over HTTPS and real PostgreSQL: the write path end to end."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tests.integration.conftest import Env
from worker.store import sync_writes


async def _graph_users(env: Env) -> list[dict[str, Any]]:
    users: list[dict[str, Any]] = []
    page = await env.admin.call("GET", "/users?$select=id,accountEnabled,jobTitle,mail")
    while True:
        users += page["value"]
        if not page.get("@odata.nextLink"):
            return users
        page = await env.admin.call("GET", page["@odata.nextLink"].removeprefix(env.admin.graph_url))


async def _end_users(pool: asyncpg.Pool, org_id: str) -> dict[str, asyncpg.Record]:
    rows = await pool.fetch("SELECT * FROM end_users WHERE organization_id = $1::uuid", org_id)
    return {r["entra_object_id"]: r for r in rows}


@pytest.mark.parametrize("tenant_env", [0], indirect=True)
async def test_initial_sync_creates_every_enabled_user_and_a_replay_writes_nothing(
    tenant_env: Env, pool: asyncpg.Pool
) -> None:
    env = tenant_env
    counts = await env.engine.org_sync(env.tenant["tenant_id"], env.org_id, None)
    graph_users = await _graph_users(env)
    enabled = {u["id"] for u in graph_users if u["accountEnabled"]}
    end_users = await _end_users(pool, env.org_id)
    assert set(end_users) == enabled
    assert counts["created"] == len(enabled)
    assert all(r["sync_state"] == "synced" for r in end_users.values())

    before = {r["id"]: r["updated_at"] for r in end_users.values()}
    journal = await pool.fetchval("SELECT count(*) FROM end_user_changes")
    again = await env.engine.org_sync(env.tenant["tenant_id"], env.org_id, None)
    assert again["created"] == again["updated"] == 0
    after = await _end_users(pool, env.org_id)
    assert {r["id"]: r["updated_at"] for r in after.values()} == before
    assert await pool.fetchval("SELECT count(*) FROM end_user_changes") == journal


@pytest.mark.parametrize("tenant_env", [1], indirect=True)
async def test_changed_user_is_updated_and_journalled_after_a_delta(tenant_env: Env, pool: asyncpg.Pool) -> None:
    env = tenant_env
    tid = env.tenant["tenant_id"]
    await env.engine.org_sync(tid, env.org_id, None)
    target = next(iter((await _end_users(pool, env.org_id)).values()))
    await env.admin.call("PATCH", f"/users/{target['entra_object_id']}", {"jobTitle": "Chief Cartographer"})

    counts = await env.engine.sync_changes(tid)

    assert counts["updated"] >= 1
    row = (await _end_users(pool, env.org_id))[target["entra_object_id"]]
    assert row["job_title"] == "Chief Cartographer"
    change = await pool.fetchrow(
        "SELECT old_value, new_value FROM end_user_changes WHERE end_user_id = $1 AND field = 'job_title'",
        target["id"],
    )
    assert change is not None and change["new_value"] == "Chief Cartographer"
    assert change["old_value"] == target["job_title"]


@pytest.mark.parametrize("tenant_env", [2], indirect=True)
async def test_soft_deleted_user_is_deactivated_and_reactivated_on_restore(
    tenant_env: Env, pool: asyncpg.Pool
) -> None:
    env = tenant_env
    tid = env.tenant["tenant_id"]
    await env.engine.org_sync(tid, env.org_id, None)
    target = next(iter((await _end_users(pool, env.org_id)).values()))
    oid = target["entra_object_id"]

    await env.admin.call("DELETE", f"/users/{oid}")
    await env.engine.sync_changes(tid)
    row = (await _end_users(pool, env.org_id))[oid]
    assert row["sync_state"] == "deactivated"
    assert "deleted" in row["sync_state_reason"]

    await env.admin.call("POST", f"/directory/deletedItems/{oid}/restore")
    await env.engine.sync_changes(tid)
    assert (await _end_users(pool, env.org_id))[oid]["sync_state"] == "synced"


@pytest.mark.parametrize("tenant_env", [4], indirect=True)
async def test_a_run_an_ended_unit_of_work_left_running_is_ended_by_the_next(
    tenant_env: Env, pool: asyncpg.Pool
) -> None:
    """A unit of work whose failure path could not reach PostgreSQL leaves its run `running`; the tenant's next
    unit of work ends it `failed` (an org-sync's run, which the retry of its command takes over, stays)."""
    env = tenant_env
    tid = env.tenant["tenant_id"]
    await env.engine.org_sync(tid, env.org_id, None)
    async with pool.acquire() as conn:  # what the abandoned units left: their runs started, never ended
        delta = await sync_writes.start_run(conn, kind="delta", tenant_id=tid, organization_id=env.org_id)
        resync = await sync_writes.start_run(conn, kind="resync", tenant_id=tid, organization_id=env.org_id)
        org_sync = await sync_writes.start_run(conn, kind="org-sync", tenant_id=tid, organization_id=env.org_id)

    await env.engine.sync_changes(tid)

    rows = {str(r["id"]): r for r in await pool.fetch(
        "SELECT id, status, error, finished_at FROM sync_runs WHERE id = ANY($1::uuid[])", [delta, resync, org_sync])}
    for run in (delta, resync):
        assert rows[run]["status"] == "failed" and rows[run]["finished_at"] is not None
        assert rows[run]["error"] == sync_writes.ABANDONED
    assert rows[org_sync]["status"] == "running"
    assert await pool.fetchval("SELECT count(*) FROM sync_runs WHERE tenant_id = $1 AND status = 'running'"
                               " AND kind <> 'org-sync'", tid) == 0
