"""Group listings against PostgreSQL: a tenant's first memberships are COPied straight into the mirror, and a
membership Graph repeats moves the listing to the staged, comparing path without losing or doubling anyone."""

from __future__ import annotations

import uuid

import asyncpg

from worker.core.directory import GraphGroup, MemberDelta
from worker.core.pulls import Listing
from worker.store import groups

USER = "#microsoft.graph.user"


def group(gid: str, *members: str) -> GraphGroup:
    return GraphGroup(id=gid, display_name=gid, members=[MemberDelta(id=m, odata_type=USER) for m in members])


async def memberships(conn: asyncpg.Connection, tenant_id: str) -> set[tuple[str, str]]:
    rows = await conn.fetch("SELECT group_id, member_id FROM entra_group_members WHERE tenant_id = $1", tenant_id)
    return {(r[0], r[1]) for r in rows}


async def listing(conn: asyncpg.Connection, tenant_id: str, pages: list[list[GraphGroup]],
                  direct: bool) -> list[bool]:  # fmt: skip
    """One complete listing, as `GroupsWalk` runs it (a batch a page); whether it still writes straight in
    (a `FIRST` listing) after each."""
    written = Listing.FIRST if direct else Listing.COMPLETE
    states = []
    async with conn.transaction():
        await groups.begin_full_group_listing(conn)
        for page in pages:
            rows = await groups.apply_group_page(conn, tenant_id, page, listing=written)
            written = await groups.write_listed_members(conn, tenant_id, rows, listing=written)
            states.append(written.first)
        seen = {g.id for page in pages for g in page}
        await groups.finish_full_group_listing(conn, tenant_id, seen, flag=True, listing=written)
    return states


async def test_first_listing_writes_memberships_directly_and_flags_members(pool: asyncpg.Pool) -> None:
    tid = f"t-{uuid.uuid4()}"
    async with pool.acquire() as conn:
        assert not await groups.has_memberships(conn, tid)
        states = await listing(conn, tid, [[group("g1", "u1", "u2")], [group("g2", "u2", "u3")]], direct=True)
        assert states == [True, True]
        assert await memberships(conn, tid) == {("g1", "u1"), ("g1", "u2"), ("g2", "u2"), ("g2", "u3")}
        flagged = {r[0] for r in await conn.fetch("SELECT id FROM entra_user_dirty WHERE tenant_id = $1", tid)}
        assert flagged == {"u1", "u2", "u3"}
        assert await groups.has_memberships(conn, tid)


async def test_repeated_membership_falls_back_to_the_staged_listing(pool: asyncpg.Pool) -> None:
    tid = f"t-{uuid.uuid4()}"
    pages = [[group("g1", "u1", "u2")], [group("g1", "u2", "u3"), group("g2", "u1")], [group("g3", "u4")]]
    async with pool.acquire() as conn:
        states = await listing(conn, tid, pages, direct=True)
        assert states == [True, False, False]  # page two repeats (g1, u2): the COPY is refused, nothing lost
        assert await memberships(conn, tid) == {("g1", "u1"), ("g1", "u2"), ("g1", "u3"), ("g2", "u1"), ("g3", "u4")}


async def test_a_later_listing_compares_and_removes_what_is_gone(pool: asyncpg.Pool) -> None:
    tid = f"t-{uuid.uuid4()}"
    async with pool.acquire() as conn:
        await listing(conn, tid, [[group("g1", "u1", "u2")]], direct=True)
        await conn.execute("DELETE FROM entra_user_dirty WHERE tenant_id = $1", tid)
        states = await listing(conn, tid, [[group("g1", "u2", "u3")]], direct=False)
        assert states == [False]
        assert await memberships(conn, tid) == {("g1", "u2"), ("g1", "u3")}
        flagged = {r[0] for r in await conn.fetch("SELECT id FROM entra_user_dirty WHERE tenant_id = $1", tid)}
        assert flagged == {"u1", "u3"}  # the member who left and the one who joined


async def test_after_a_first_listing_members_are_looked_up_through_the_member_index(
    fresh_database_url: str,
) -> None:
    """Until statistics are refreshed the planner walks the tenant's key range per member; `analyze_memberships`
    (run by the engine after a tenant's first listing) makes it use the member index."""
    from worker.store.migrations import migrate
    from worker.store.mirror import _MIRROR_QUERIES
    from worker.store.pool import create_pool

    await migrate(fresh_database_url)
    pool = await create_pool(fresh_database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            async with conn.transaction():
                await groups.begin_full_group_listing(conn)
                rows = [(f"g{i % 300}", f"u{i}", "user") for i in range(60_000)]
                assert (await groups.write_listed_members(conn, "t", rows, listing=Listing.FIRST)).first
            await groups.analyze_memberships(conn)
            by_ids = await conn.fetch("EXPLAIN " + _MIRROR_QUERIES["ids", True], "t", ["u1", "u2"])
            by_range = await conn.fetch("EXPLAIN " + _MIRROR_QUERIES["range", True], "t", "", 2000)
        for rows_of_plan in (by_ids, by_range):
            plan = "\n".join(r[0] for r in rows_of_plan)
            assert "entra_group_members_member" in plan and "entra_group_members_pkey" not in plan
    finally:
        await pool.close()
