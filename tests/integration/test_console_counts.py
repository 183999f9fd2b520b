"""What the console's tenant and set-up pages read, kept as the worker writes, against the real write path (the
simulator over HTTPS, PostgreSQL): the set-up dialog's value and group counts (migration 0009's triggers) equal
a from-scratch count after syncs with changes, deletions and membership changes; the notifications per hour
are counted where the worker accepts them, with their retention; the last resync's drift is what the resync
changed that no notification had brought."""

from __future__ import annotations

from typing import Any

import asyncpg

from tests.integration.conftest import Env
from tests.integration.test_sync_rules import end_users, fresh  # noqa: F401  (the fixture)
from worker.store.admin import AdminStore
from worker.store.console import ConsoleStore
from worker.store.subscriptions import NOTIFICATION_HOURS_KEPT


def _by_value(options: dict[str, Any]) -> dict[str, Any]:
    """Sections as {lower value: count} and groups as {id: (name, count)}: the kept label is one spelling."""
    out: dict[str, Any] = {"total_users": options["total_users"]}
    for section in ("user_types", "domains", "office_locations", "departments"):
        out[section] = {o["value"].lower(): o["count"] for o in options[section]}
    out["groups"] = {g["id"]: (g["name"], g["count"]) for g in options["groups"]}
    return out


async def _assert_kept_equals_scratch(store: AdminStore, org_id: str) -> dict[str, Any]:
    kept, scratch = await store.options(org_id), await store.options_from_scratch(org_id)
    assert _by_value(kept) == _by_value(scratch)
    return _by_value(kept)


async def test_kept_option_counts_equal_a_count_from_scratch_after_changes(
    fresh: Env, pool: asyncpg.Pool  # noqa: F811
) -> None:
    tid, admin = fresh.tenant["tenant_id"], fresh.admin
    store = AdminStore(pool)
    ref = f"{admin.graph_url}/directoryObjects/"
    outer = await admin.call("POST", "/groups", {"displayName": "Outer", "mailEnabled": False,
                                                 "mailNickname": "outer", "securityEnabled": True})
    inner = await admin.call("POST", "/groups", {"displayName": "Inner", "mailEnabled": False,
                                                 "mailNickname": "inner", "securityEnabled": True})
    await admin.call("POST", f"/groups/{outer['id']}/members/$ref", {"@odata.id": ref + inner["id"]})
    users = [u["id"] for u in (await admin.call("GET", "/users?$select=id"))["value"]]
    for uid in users[:3]:
        await admin.call("POST", f"/groups/{inner['id']}/members/$ref", {"@odata.id": ref + uid})
    await fresh.engine.org_sync(tid, fresh.org_id, None)
    first = await _assert_kept_equals_scratch(store, fresh.org_id)
    assert first["total_users"] > 30 and first["groups"][outer["id"]] == ("Outer", 3)

    # Deltas: a new department, a moved office, a deleted user, a membership added and one removed.
    await admin.call("PATCH", f"/users/{users[3]}", {"department": "Zymurgy", "officeLocation": "Ulan Bator"})
    await admin.call("DELETE", f"/users/{users[0]}")  # a member of inner, so of outer too
    await admin.call("POST", f"/groups/{outer['id']}/members/$ref", {"@odata.id": ref + users[4]})
    await admin.call("DELETE", f"/groups/{inner['id']}/members/{users[1]}/$ref")
    await fresh.engine.sync_changes(tid, groups=True)
    after = await _assert_kept_equals_scratch(store, fresh.org_id)
    assert after["total_users"] == first["total_users"] - 1
    assert after["departments"]["zymurgy"] == 1 and after["office_locations"]["ulan bator"] == 1
    assert after["groups"][outer["id"]] == ("Outer", 2)  # users[2] through inner, users[4] directly
    assert after["groups"][inner["id"]] == ("Inner", 1)

    # The hourly resync's complete listing (absences marked there), then the tenant removed from the mirror.
    await admin.call("DELETE", f"/users/{users[5]}")
    await admin.call("PATCH", f"/users/{users[3]}", {"department": "Sales"})
    await fresh.engine.resync(tid)
    final = await _assert_kept_equals_scratch(store, fresh.org_id)
    assert "zymurgy" not in final["departments"] and final["total_users"] == first["total_users"] - 2

    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM entra_users WHERE tenant_id = $1", tid)
    assert await pool.fetchval("SELECT count(*) FROM mirror_facets WHERE tenant_id = $1", tid) == 0


_BULK_INSERT = """
INSERT INTO entra_users (tenant_id, id, display_name, mail, user_principal_name, department, office_location,
                         user_type, content_hash)
SELECT $1, 'bulk-' || i, 'Bulk ' || i, 'bulk' || i || '@Bulk.Example', 'bulk' || i || '@bulk.example',
       'Bulk dept ' || (i % 3), 'Bulk office', 'Member', '\\x00'::bytea
FROM generate_series(1, $2) i"""


async def _stale(pool: asyncpg.Pool, tid: str) -> bool:
    return bool(await pool.fetchval("SELECT EXISTS (SELECT 1 FROM mirror_facets_stale WHERE tenant_id = $1)", tid))


async def test_a_bulk_mirror_write_marks_the_counts_stale_and_the_next_read_recounts_them(
    fresh: Env, pool: asyncpg.Pool  # noqa: F811
) -> None:
    """Migration 0011: a statement of more than 500 users (a full listing's batch) only marks the tenant's value
    counts stale, the next options read recounts them once; small statements keep incremental upkeep; while a
    writer holds the tenant's counts, a read counts from scratch without storing."""
    tid, store = fresh.tenant["tenant_id"], AdminStore(pool)
    await fresh.engine.org_sync(tid, fresh.org_id, None)  # 40 users: incremental
    base = await _assert_kept_equals_scratch(store, fresh.org_id)
    assert not await _stale(pool, tid)

    await pool.execute(_BULK_INSERT, tid, 600)
    assert await _stale(pool, tid)
    bulk = await _assert_kept_equals_scratch(store, fresh.org_id)  # the first read recounts
    assert not await _stale(pool, tid)
    assert bulk["total_users"] == base["total_users"] + 600
    assert bulk["departments"]["bulk dept 0"] == 200 and bulk["domains"]["bulk.example"] == 600

    # A small UPDATE (a delta's changes) stays incremental.
    await pool.execute("UPDATE entra_users SET department = 'Moved' WHERE tenant_id = $1 AND id IN"
                       " ('bulk-3', 'bulk-6', 'bulk-9')", tid)
    assert not await _stale(pool, tid)
    moved = await _assert_kept_equals_scratch(store, fresh.org_id)
    assert moved["departments"]["moved"] == 3 and moved["departments"]["bulk dept 0"] == 197

    # A bulk UPDATE (half the bulk users absent, the other half moved); read while a writer holds the counts.
    await pool.execute("UPDATE entra_users SET removed = CASE WHEN substr(id, 6)::int % 2 = 0 THEN 'absent' END,"
                       " office_location = 'Elsewhere' WHERE tenant_id = $1 AND id LIKE 'bulk-%'", tid)
    assert await _stale(pool, tid)
    async with pool.acquire() as writer, writer.transaction():
        await writer.execute("UPDATE entra_users SET department = 'Pending' WHERE tenant_id = $1 AND id = 'bulk-1'",
                             tid)
        during = await _assert_kept_equals_scratch(store, fresh.org_id)  # from scratch: the write is uncommitted
        assert await _stale(pool, tid) and "pending" not in during["departments"]
    after = await _assert_kept_equals_scratch(store, fresh.org_id)
    assert not await _stale(pool, tid)
    assert after["total_users"] == base["total_users"] + 300 and after["departments"]["pending"] == 1
    assert after["office_locations"]["elsewhere"] == 300

    # A bulk DELETE.
    await pool.execute("DELETE FROM entra_users WHERE tenant_id = $1 AND id LIKE 'bulk-%'", tid)
    assert await _stale(pool, tid)
    assert await _assert_kept_equals_scratch(store, fresh.org_id) == base


async def test_notifications_are_counted_per_hour_and_old_hours_deleted(
    fresh: Env, pool: asyncpg.Pool  # noqa: F811
) -> None:
    tid = fresh.tenant["tenant_id"]
    old = NOTIFICATION_HOURS_KEPT + 2
    await pool.execute(
        "INSERT INTO tenant_notifications_hourly (tenant_id, hour, count) VALUES"
        " ($1, date_trunc('hour', now(), 'UTC') - make_interval(hours => $2), 7),"
        " ($1, date_trunc('hour', now(), 'UTC') - interval '3 hours', 5)", tid, old)

    await fresh.subs.record_notifications(tid, ["sub-a"], 4)
    await fresh.subs.record_notifications(tid, ["sub-a", "sub-b"], 0)  # at least one per subscription

    rows = await pool.fetch("SELECT hour, count FROM tenant_notifications_hourly WHERE tenant_id = $1"
                            " ORDER BY hour", tid)
    assert [r["count"] for r in rows] == [5, 6]  # the hour past retention deleted, the current hour 4 + 2
    activity = await ConsoleStore(pool).tenant_activity(tid, since=rows[-1]["hour"])
    assert activity["notifications"] == [(rows[-1]["hour"], 6)]


async def test_the_last_resyncs_drift_is_what_it_changed_that_no_notification_brought(
    fresh: Env, pool: asyncpg.Pool  # noqa: F811
) -> None:
    tid = fresh.tenant["tenant_id"]
    store = AdminStore(pool)
    await fresh.engine.org_sync(tid, fresh.org_id, None)
    assert (await store.tenant_sync_status(tid))["last_resync_drift"] is None  # no resync yet

    await fresh.engine.resync(tid)  # nothing missed
    quiet = (await store.tenant_sync_status(tid))["last_resync_drift"]
    assert (quiet["total"], quiet["created"], quiet["updated"], quiet["deactivated"]) == (0, 0, 0, 0)

    linked = list(await end_users(pool, fresh.org_id))
    for oid in linked[:2]:  # changed in Entra, no notification processed: only the resync finds them
        await fresh.admin.call("PATCH", f"/users/{oid}", {"jobTitle": "Drifted"})
    await fresh.admin.call("PATCH", f"/users/{linked[2]}", {"accountEnabled": False})
    await fresh.engine.resync(tid)

    drift = (await store.tenant_sync_status(tid))["last_resync_drift"]
    assert (drift["updated"], drift["deactivated"], drift["created"], drift["total"]) == (2, 1, 0, 3)
    [health] = await ConsoleStore(pool).tenant_health(tid)
    assert health["last_resync_drift"] == drift
