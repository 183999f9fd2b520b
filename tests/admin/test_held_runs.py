"""Held runs end: one per Organization, later batches add to it, confirm / dismiss / returning users end it; and
the user-sync status shows it with the open review items and the last error.

The worker's side runs for real (`SyncEngine.project_organization` on the session database), the operator's
through the admin API.
"""

from __future__ import annotations

import uuid
from typing import Any

from worker.engine.sync import SyncEngine

from .conftest import Api, World, make_settings, seed_mirror

USERS = [{"id": f"held-{i:02d}", "display_name": f"User {i}", "mail": f"user{i}@contoso.com",
          "user_principal_name": f"user{i}@contoso.com", "user_type": "Member"} for i in range(10)]
LEAVERS = [u["id"] for u in USERS[:5]]


async def _held(api: Api, database_url: str) -> tuple[World, SyncEngine, str]:
    """Ten synced End Users, then half of them deleted in Entra: the guard holds their deactivations."""
    world = await api.world()
    await api.enable(world.org_id)
    await seed_mirror(api.pool, world.tenant_id, USERS)
    engine = SyncEngine(pool=api.pool, graph=None, settings=make_settings(database_url))  # type: ignore[arg-type]
    assert (await engine.project_organization(world.tenant_id, world.org_id))["created"] == 10
    await api.pool.execute("UPDATE entra_users SET removed = 'deleted' WHERE tenant_id = $1 AND id = ANY($2)",
                           world.tenant_id, LEAVERS)
    # A change batch leaves the held users flagged, so the next batch decides them again.
    await api.pool.executemany("INSERT INTO entra_user_dirty (tenant_id, id) VALUES ($1, $2)",
                               [(world.tenant_id, oid) for oid in LEAVERS])
    counts = await engine.project_organization(world.tenant_id, world.org_id)
    assert counts["held"] == 5 and counts["deactivated"] == 0, counts
    status = await api.ok("GET", f"/organizations/{world.org_id}/user-sync")
    assert status["held_run_id"] is not None
    return world, engine, status["held_run_id"]


async def _runs(api: Api, world: World) -> list[dict[str, Any]]:
    return list((await api.ok("GET", f"/sync-runs?organization_id={world.org_id}"))["items"])


async def _states(api: Api, world: World) -> dict[str, str]:
    rows = await api.pool.fetch("SELECT entra_object_id, sync_state FROM end_users WHERE organization_id = $1",
                                world.org_id)
    return {r[0]: r[1] for r in rows}


async def test_later_batches_add_to_the_one_held_run(api: Api, database_url: str) -> None:
    world, engine, held = await _held(api, database_url)
    counts = await engine.project_organization(world.tenant_id, world.org_id)
    assert counts.get("held", 0) == 0 and counts["deactivated"] == 0
    runs = await _runs(api, world)
    assert [r["id"] for r in runs if r["status"] == "held"] == [held]
    later = runs[0]
    assert later["status"] == "succeeded" and any(held in w for w in later["warnings"]), later
    assert (await api.ok("GET", f"/sync-runs/{held}"))["counts"]["held"] == 5
    assert set((await _states(api, world)).values()) == {"synced"}


async def test_dismiss_keeps_everyone_and_the_next_batch_holds_nothing(api: Api, database_url: str) -> None:
    world, _, held = await _held(api, database_url)
    dismissed = await api.ok("POST", f"/sync-runs/{held}/dismiss")
    assert dismissed["status"] == "succeeded" and "dismissed" in dismissed["warnings"][-1]
    assert set((await _states(api, world)).values()) == {"synced"}
    flagged = await api.pool.fetchval("SELECT count(*) FROM entra_user_dirty WHERE tenant_id = $1", world.tenant_id)
    assert flagged == 0  # the next change batch does not decide them again
    status = await api.ok("GET", f"/organizations/{world.org_id}/user-sync")
    assert status["held_run_id"] is None
    assert (await api.call("POST", f"/sync-runs/{held}/dismiss")).status == 409
    assert (await api.call("POST", f"/sync-runs/{uuid.uuid4()}/dismiss")).status == 404
    assert (await api.call("POST", "/sync-runs/zzz/dismiss")).status == 404


async def test_a_confirmed_run_applies_the_deactivations_and_ends_the_hold(api: Api, database_url: str) -> None:
    world, engine, held = await _held(api, database_url)
    counts = await engine.project_organization(world.tenant_id, world.org_id, confirm_deactivations=True)
    assert counts["deactivated"] == 5
    states = await _states(api, world)
    assert {states[oid] for oid in LEAVERS} == {"deactivated"}
    run = await api.ok("GET", f"/sync-runs/{held}")
    assert run["status"] == "succeeded" and "5 deactivations applied" in run["warnings"][-1]
    assert (await api.ok("GET", f"/organizations/{world.org_id}/user-sync"))["held_run_id"] is None


async def test_the_hold_ends_when_the_users_come_back(api: Api, database_url: str) -> None:
    world, engine, held = await _held(api, database_url)
    await api.pool.execute("UPDATE entra_users SET removed = NULL WHERE tenant_id = $1", world.tenant_id)
    await engine.project_organization(world.tenant_id, world.org_id)
    run = await api.ok("GET", f"/sync-runs/{held}")
    assert run["status"] == "succeeded" and "no" in run["warnings"][-1] and "leaving" in run["warnings"][-1]
    assert set((await _states(api, world)).values()) == {"synced"}


async def test_status_shows_open_review_items_and_the_last_error(api: Api) -> None:
    world = await api.world()
    await api.enable(world.org_id)
    status = await api.ok("GET", f"/organizations/{world.org_id}/user-sync")
    assert (status["open_review_items"], status["held_run_id"], status["last_error"]) == (0, None, None)
    for oid, state in (("a", "open"), ("b", "open"), ("c", "resolved")):
        await api.pool.execute(
            "INSERT INTO review_items (organization_id, entra_tenant_id, entra_object_id, reason, status)"
            " VALUES ($1, $2, $3, 'r', $4)", world.org_id, world.tenant_id, oid, state)
    await api.pool.execute(
        "INSERT INTO sync_runs (kind, organization_id, tenant_id, status, error, finished_at)"
        " VALUES ('org-sync', $1, $2, 'failed', 'Graph said no', now())", world.org_id, world.tenant_id)
    status = await api.ok("GET", f"/organizations/{world.org_id}/user-sync")
    assert (status["open_review_items"], status["last_error"]) == (2, "Graph said no")
    await api.pool.execute(
        "INSERT INTO sync_runs (kind, organization_id, tenant_id, status, finished_at)"
        " VALUES ('org-sync', $1, $2, 'succeeded', now() + interval '1 second')", world.org_id, world.tenant_id)
    assert (await api.ok("GET", f"/organizations/{world.org_id}/user-sync"))["last_error"] is None
    await api.pool.execute(
        "INSERT INTO tenant_sync_status (tenant_id, last_error) VALUES ($1, 'consent revoked')", world.tenant_id)
    assert (await api.ok("GET", f"/organizations/{world.org_id}/user-sync"))["last_error"] == "consent revoked"
