"""Who keeps an End User's input hash (`end_users.input_hash`, migration 0012): the sync stores it with what it
writes, and any other write clears it, so an End User an operator touched is projected again (its
`reconcile` skip and the preview's settled users both trust the hash)."""

from __future__ import annotations

from typing import Any

from worker.engine.sync import SyncEngine

from .conftest import ALL_FILTERS, Api, make_settings, seed_mirror

USERS: list[dict[str, Any]] = [
    {"id": "u1", "display_name": "Ann Lee", "given_name": "Ann", "surname": "Lee", "mail": "ann@contoso.com",
     "user_principal_name": "ann@contoso.com", "department": "Sales"},
    {"id": "u2", "display_name": "Bob Ray", "given_name": "Bob", "surname": "Ray", "mail": "bob@contoso.com",
     "user_principal_name": "bob@contoso.com", "department": "Sales"},
]


async def _synced(api: Api, database_url: str) -> tuple[Any, SyncEngine, dict[str, bytes | None]]:
    """A world whose Organization the sync has projected USERS into: the world, the engine, the input hashes."""
    world = await api.world()
    await seed_mirror(api.pool, world.tenant_id, USERS)
    engine = SyncEngine(pool=api.pool, graph=None, settings=make_settings(database_url))  # type: ignore[arg-type]
    await engine.project_organization(world.tenant_id, world.org_id, await api.enable(world.org_id, ALL_FILTERS))
    return world, engine, await _hashes(api, world.org_id)


async def _hashes(api: Api, org_id: str) -> dict[str, bytes | None]:
    return {r[0]: r[1] for r in await api.pool.fetch(
        "SELECT entra_object_id, input_hash FROM end_users WHERE organization_id = $1", org_id)}


async def test_an_operator_write_clears_the_hash_and_the_end_user_is_projected_again(
    api: Api, database_url: str,
) -> None:
    world, engine, synced = await _synced(api, database_url)
    assert None not in synced.values() and len(synced) == 2

    ann = await api.pool.fetchval(
        "SELECT id::text FROM end_users WHERE organization_id = $1 AND entra_object_id = 'u1'", world.org_id)
    await api.ok("PATCH", f"/end-users/{ann}", {"first_name": "Annie"})  # locks the field
    assert await _hashes(api, world.org_id) == {"u1": None, "u2": synced["u2"]}
    await api.ok("DELETE", f"/end-users/{ann}/locks/first_name")  # hands it back to Entra

    # Ann's End User holds what the operator typed: the preview reads her whole and says the sync updates
    # her, as the sync then does; Bob is settled and stays unchanged.
    preview = await api.ok("POST", f"/organizations/{world.org_id}/user-sync/preview", {"filters": ALL_FILTERS})
    assert (preview["would_update"], [s["end_user_id"] for s in preview["samples"]["would_update"]]) == (1, [ann])
    counts = await engine.project_organization(world.tenant_id, world.org_id,
                                               await api.enable(world.org_id, ALL_FILTERS))
    assert (counts["updated"], counts["unchanged"]) == (1, 1)
    assert await api.pool.fetchval("SELECT first_name FROM end_users WHERE id = $1::uuid", ann) == "Ann"
    assert await _hashes(api, world.org_id) == synced  # the same inputs as at the first sync


async def test_end_users_written_before_the_hash_get_it_from_the_next_sync_silently(
    api: Api, database_url: str,
) -> None:
    world, engine, synced = await _synced(api, database_url)
    await api.pool.execute("UPDATE end_users SET input_hash = NULL WHERE organization_id = $1", world.org_id)
    journal = await api.pool.fetchval("SELECT count(*) FROM end_user_changes")

    counts = await engine.project_organization(world.tenant_id, world.org_id,
                                               await api.enable(world.org_id, ALL_FILTERS))
    assert (counts["updated"], counts["unchanged"]) == (0, 2)
    assert await _hashes(api, world.org_id) == synced
    assert await api.pool.fetchval("SELECT count(*) FROM end_user_changes") == journal  # nothing an operator sees
