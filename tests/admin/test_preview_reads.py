"""The preview's reads of End Users (`worker.store.preview`) return what the sync's `load_end_users` does.

`chunk_end_users` reads the linked End Users of some users of a chunk in a key range and probes the email index
only for addresses no linked End User holds; here every chunk of a small tenant, and parts of it, are read both
ways and compared (all but the
`microsoft` object, which the preview leaves out because `reconcile` never reads it). Chunks of 2 put holders on
both sides of every range: linked to a user of an earlier or later chunk, of another tenant, manual.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from worker.bench.common import ALL_FILTERS
from worker.core.filters import parse_filters
from worker.core.model import StoredEndUser
from worker.core.projection import email_keys
from worker.engine.preview import preview
from worker.engine.spares import SPARE_CONNECTION_WAIT_S
from worker.store import mirror, sync_writes
from worker.store import preview as preview_store
from worker.store.pool import create_pool

from .conftest import Api, insert_end_user, seed_mirror

USERS = [  # ids in key order; several addresses each (mail and a different UPN)
    {"id": "a1", "mail": "ann@contoso.com", "user_principal_name": "ann.upn@contoso.com"},
    {"id": "a2", "mail": "Bob@Contoso.com", "user_principal_name": "bob@contoso.com"},
    {"id": "b1", "mail": None, "user_principal_name": "cat@contoso.com"},
    {"id": "b2", "mail": "dan@contoso.com", "user_principal_name": "dan_x.com#EXT#@contoso.com"},
    {"id": "c1", "mail": "eve@contoso.com", "user_principal_name": "eve@contoso.com"},
    {"id": "c2", "mail": "fay@contoso.com", "user_principal_name": "ann.upn2@contoso.com"},
]


def _plain(e: StoredEndUser) -> dict[str, Any]:
    return msgspec.structs.asdict(e) | {"microsoft": None}


async def test_chunk_end_users_are_the_sync_reads_of_every_chunk(api: Api) -> None:
    world = await api.world()
    org, tid = world.org_id, world.tenant_id
    await seed_mirror(api.pool, tid, [{**u, "display_name": u["id"]} for u in USERS])
    await insert_end_user(api.pool, org, tenant_id=tid, object_id="a1", email="ANN@contoso.com")
    await insert_end_user(api.pool, org, tenant_id=tid, object_id="c2", email="ann.upn@contoso.com")  # a1's UPN
    await insert_end_user(api.pool, org, tenant_id=tid, object_id="b1", email="eve@contoso.com", state="out_of_scope")
    await insert_end_user(api.pool, org, state="manual", email="cat@contoso.com")
    await insert_end_user(api.pool, org, tenant_id="other-tenant", object_id="a2", email="bob@contoso.com")
    await insert_end_user(api.pool, org, tenant_id=tid, object_id="gone", email="dan@contoso.com")  # not mirrored
    await insert_end_user(api.pool, org, tenant_id=tid, object_id="b2", state="deactivated")
    await api.pool.execute("UPDATE end_users SET content_hash = '\\x00ff', locked_fields = '{phone}',"
                           " entra_fields = '{email}' WHERE entra_object_id = 'a1'")
    compared = 0
    async with api.pool.acquire() as conn:
        for size in (2, 3, 6):
            after = ""
            while chunk := await mirror.mirror_users_after(conn, tid, after, limit=size):
                # The whole chunk, and parts of it (the preview asks for the users that are not settled).
                for users in (chunk, chunk[::2], chunk[1::2]):
                    if not users:
                        continue
                    linked, by_email = await sync_writes.load_end_users(conn, organization_id=org, tenant_id=tid,
                                                                        users=users)
                    got_linked, got_by_email = await preview_store.chunk_end_users(
                        conn, organization_id=org, tenant_id=tid, ids=[u.id for u in users],
                        keys={k for u in users for k in email_keys(u)})
                    assert ({k: _plain(e) for k, e in got_linked.items()}
                            == {k: _plain(e) for k, e in linked.items()})
                    assert ({k: sorted(map(str, map(_plain, es))) for k, es in got_by_email.items()}
                            == {k: sorted(map(str, map(_plain, es))) for k, es in by_email.items()})
                    compared += len(linked) + sum(map(len, by_email.values()))
                after = chunk[-1].id
    assert compared >= 20  # the chunks did hold End Users both ways


async def test_chunk_starts_read_the_keyset_chunks(api: Api) -> None:
    """Chunks read from `chunk_starts` (as the preview's readers do, in any order) are the chunks read one after
    another, for sizes that divide the tenant's users exactly and sizes that do not."""
    world = await api.world()
    tid = world.tenant_id
    await seed_mirror(api.pool, tid, [{**u, "display_name": u["id"]} for u in USERS])
    async with api.pool.acquire() as conn:
        for size in (1, 2, 4, 6, 7):
            one_after_another, after = [], ""
            while users := await mirror.mirror_users_after(conn, tid, after, limit=size):
                one_after_another.append([u.id for u in users])
                after = users[-1].id
            starts = await preview_store.chunk_starts(conn, tid, size)
            from_starts = [[u.id for u in await mirror.mirror_users_after(conn, tid, a, limit=size)]
                           for a in reversed(starts)][::-1]
            assert [c for c in from_starts if c] == one_after_another, size
            assert len(starts) == len(USERS) // size + 1


async def test_snapshot_readers_see_one_snapshot(api: Api, database_url: str) -> None:
    """A user mirrored after the first reader took its snapshot is seen by no reader, though the second reader
    runs its first query after that commit."""
    world = await api.world()
    tid = world.tenant_id
    await seed_mirror(api.pool, tid, [{**u, "display_name": u["id"]} for u in USERS])
    count = "SELECT count(*) FROM entra_users WHERE tenant_id = $1"
    async with api.pool.acquire() as first, api.pool.acquire() as second, \
            preview_store.one_snapshot(first, [second]):
        assert await first.fetchval(count, tid) == len(USERS)
        await seed_mirror(api.pool, tid, [{"id": "z9", "display_name": "late", "mail": "late@contoso.com"}])
        assert [await r.fetchval(count, tid) for r in (first, second)] == [len(USERS)] * 2
    assert await api.pool.fetchval(count, tid) == len(USERS) + 1


async def test_snapshot_readers_never_queue_for_a_second_connection(api: Api, database_url: str) -> None:
    """With the pool's every other connection taken, a preview reads on one connection at once instead of
    waiting for another."""
    world = await api.world()
    await seed_mirror(api.pool, world.tenant_id, [{**u, "display_name": u["id"]} for u in USERS])
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        async with pool.acquire():
            started = time.monotonic()
            answer = await preview(pool, tenant_id=world.tenant_id, organization_id=world.org_id,
                                   filters=parse_filters(ALL_FILTERS))
            assert time.monotonic() - started < SPARE_CONNECTION_WAIT_S + 1
        assert answer["matching"] == len(USERS)
    finally:
        await pool.close()
