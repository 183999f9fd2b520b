"""SQL of the tenant mirror's groups and memberships, from groups-delta pages and complete listings.

Every write compares before it writes and flags the users whose projection it changes (`entra_user_dirty`,
in id order, see `worker.store.mirror`): a user's transitive group set is what a filter on groups reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import asyncpg

from worker.core.directory import GraphGroup
from worker.core.pulls import Listing
from worker.store import Conn
from worker.store.mirror import flag_users, save_delta_link

MEMBER_BATCH = 5000  # memberships of a complete groups listing written per COPY

_FLAG_UNDER_GROUPS = """
    WITH RECURSIVE sub(group_id) AS (
        SELECT unnest($2::text[])
      UNION
        SELECT m.member_id FROM entra_group_members m JOIN sub ON m.group_id = sub.group_id
        WHERE m.tenant_id = $1 AND m.member_type = 'group'
    )
    INSERT INTO entra_user_dirty (tenant_id, id)
    SELECT DISTINCT $1, m.member_id FROM entra_group_members m JOIN sub ON m.group_id = sub.group_id
    WHERE m.tenant_id = $1 AND m.member_type = 'user'
    ORDER BY 2
    ON CONFLICT DO NOTHING
"""


def _member_type(odata_type: str) -> str:
    kind = odata_type.rsplit(".", 1)[-1].lower()
    return kind if kind in ("user", "group") else "other"


async def flag_users_under(conn: Conn, tenant_id: str, group_ids: Iterable[str]) -> None:
    """Flag every user who is a transitive member of these groups (their group set may have changed)."""
    ids = list(group_ids)
    if ids:
        await conn.execute(_FLAG_UNDER_GROUPS, tenant_id, ids)


async def apply_group_page(
    conn: Conn, tenant_id: str, groups: Sequence[GraphGroup], *, listing: Listing = Listing.DELTA
) -> list[tuple[str, str, str]]:
    """Apply one groups-delta page: names, removals, and members@delta additions and removals.

    In a complete `listing` (see `begin_full_group_listing`) memberships are not applied but
    returned, (group id, member id, member type), for `write_listed_members`; the listing's end applies the
    difference.
    """
    removed = [g.id for g in groups if g.removed is not None]
    if removed:  # members lose the group: flag them before the memberships go
        await flag_users_under(conn, tenant_id, removed)
        await conn.execute(
            "DELETE FROM entra_group_members WHERE tenant_id = $1 AND (group_id = ANY($2::text[])"
            " OR member_id = ANY($2::text[]))", tenant_id, removed,
        )
        await conn.execute("DELETE FROM entra_groups WHERE tenant_id = $1 AND id = ANY($2::text[])", tenant_id, removed)
    live = [g for g in groups if g.removed is None]
    if live:
        await conn.execute(
            """INSERT INTO entra_groups (tenant_id, id, display_name)
               SELECT $1, * FROM unnest($2::text[], $3::text[])
               ON CONFLICT (tenant_id, id) DO UPDATE SET display_name = EXCLUDED.display_name, updated_at = now()
               WHERE entra_groups.display_name IS DISTINCT FROM EXCLUDED.display_name""",
            tenant_id, [g.id for g in live], [g.display_name for g in live],
        )
    added = [(g.id, m.id, _member_type(m.odata_type)) for g in live for m in g.members if m.removed is None]
    if listing.complete:
        return added
    gone = [(g.id, m.id, _member_type(m.odata_type)) for g in live for m in g.members if m.removed is not None]
    await _change_members(conn, tenant_id, added=added, gone=gone)
    return []


async def write_listed_members(
    conn: Conn, tenant_id: str, rows: Sequence[tuple[str, str, str]], *, listing: Listing
) -> Listing:
    """Write memberships of a complete listing: staged for `finish_full_group_listing`, or in a `FIRST` listing
    (a tenant with no memberships yet) COPied straight into the mirror. Returns how the listing goes on: when
    Graph repeats a membership, what was written so far moves to the staging table and the listing carries on
    staged, as a `COMPLETE` one."""
    if listing.first:
        try:
            async with conn.transaction():  # a savepoint: a refused COPY leaves nothing behind
                # In key order, the primary key's inserts walk its pages in order (half the cost, measured).
                await conn.copy_records_to_table(
                    "entra_group_members", records=[(tenant_id, *r) for r in sorted(rows)],
                    columns=("tenant_id", "group_id", "member_id", "member_type"))
            return listing
        except asyncpg.UniqueViolationError:
            await conn.execute(
                "INSERT INTO stage_group_members SELECT group_id, member_id, member_type FROM entra_group_members"
                " WHERE tenant_id = $1", tenant_id)
    await conn.copy_records_to_table("stage_group_members", records=rows,
                                     columns=("group_id", "member_id", "member_type"))
    return Listing.COMPLETE


async def _change_members(
    conn: Conn, tenant_id: str, *, added: Sequence[tuple[str, str, str]], gone: Sequence[tuple[str, str, str]]
) -> None:
    if gone:
        await _flag_members(conn, tenant_id, gone)
        await conn.execute(
            """DELETE FROM entra_group_members m USING unnest($2::text[], $3::text[]) AS g(gid, mid)
               WHERE m.tenant_id = $1 AND m.group_id = g.gid AND m.member_id = g.mid""",
            tenant_id, [g for g, _, _ in gone], [m for _, m, _ in gone],
        )
    if added:
        inserted = await conn.fetch(
            """INSERT INTO entra_group_members (tenant_id, group_id, member_id, member_type)
               SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[]) ON CONFLICT DO NOTHING
               RETURNING group_id, member_id, member_type""",
            tenant_id, [g for g, _, _ in added], [m for _, m, _ in added], [t for _, _, t in added],
        )
        await _flag_members(conn, tenant_id, [(r[0], r[1], r[2]) for r in inserted])


async def _flag_members(conn: Conn, tenant_id: str, pairs: Sequence[tuple[str, str, str]]) -> None:
    await flag_users(conn, tenant_id, {m for _, m, t in pairs if t == "user"})
    await flag_users_under(conn, tenant_id, {m for _, m, t in pairs if t == "group"})


async def begin_full_group_listing(conn: Conn) -> None:
    """Start a complete groups listing (inside the caller's transaction): its memberships are staged, and
    `finish_full_group_listing` writes only the difference, so an hourly resync of an unchanged tenant
    rewrites nothing."""
    await conn.execute(
        """CREATE TEMP TABLE IF NOT EXISTS stage_group_members
           (group_id text, member_id text, member_type text) ON COMMIT DROP"""
    )


async def analyze_memberships(conn: Conn) -> None:
    """Refresh the planner's statistics of the memberships table (outside a transaction: what it samples is
    committed)."""
    await conn.execute("ANALYZE entra_group_members")


async def has_memberships(conn: Conn, tenant_id: str) -> bool:
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM entra_group_members WHERE tenant_id = $1)", tenant_id))


async def finish_full_group_listing(
    conn: Conn, tenant_id: str, seen_groups: set[str], *, flag: bool = True, listing: Listing = Listing.COMPLETE
) -> None:
    """Groups the listing did not return are gone; memberships are brought to the listing's, and the users
    whose memberships changed are flagged (unless `flag` is off: a first listing flags every user anyway).
    After a listing written as a `FIRST` the memberships already are the listing's: every member is new."""
    await conn.execute(
        "DELETE FROM entra_groups WHERE tenant_id = $1 AND NOT (id = ANY($2::text[]))", tenant_id, list(seen_groups)
    )
    if listing.first:
        if flag:
            await conn.execute(
                "INSERT INTO entra_user_dirty (tenant_id, id) SELECT DISTINCT tenant_id, member_id"
                " FROM entra_group_members WHERE tenant_id = $1 AND member_type = 'user' ORDER BY 2"
                " ON CONFLICT DO NOTHING", tenant_id)
        return
    gone = await conn.fetch(
        """DELETE FROM entra_group_members m WHERE m.tenant_id = $1 AND NOT EXISTS (
               SELECT 1 FROM stage_group_members s WHERE s.group_id = m.group_id AND s.member_id = m.member_id)
           RETURNING group_id, member_id, member_type""",
        tenant_id,
    )
    added = await conn.fetch(
        """INSERT INTO entra_group_members (tenant_id, group_id, member_id, member_type)
           SELECT DISTINCT $1, group_id, member_id, member_type FROM stage_group_members
           ON CONFLICT DO NOTHING RETURNING group_id, member_id, member_type""",
        tenant_id,
    )
    if not flag:
        return
    diff = [(r[0], r[1], r[2]) for r in [*gone, *added]]
    await _flag_members(conn, tenant_id, diff)
    # A nested group that moved changes the transitive set of everyone under its old parents too.
    await flag_users_under(conn, tenant_id, {g for g, _, t in diff if t == "group"})


class GroupsWalk:
    """One walk of the groups delta into the mirror, inside the caller's transaction: a complete listing
    replaces every membership, so it is all or nothing. Its memberships are staged and only the difference is
    written at its end, so an hourly resync of an unchanged tenant rewrites nothing; a tenant's first
    memberships go straight in (COPY, `MEMBER_BATCH` at a time). `flag`: whether the users whose memberships
    change are flagged (a first sync's are all flagged, or projected, anyway)."""

    def __init__(self, conn: Conn, tenant_id: str, listing: Listing, *, flag: bool) -> None:
        self._conn, self._tenant, self.listing, self._flag = conn, tenant_id, listing, flag
        self._written = listing  # FIRST while the memberships still go straight in
        self._listed: list[tuple[str, str, str]] = []  # memberships of a listing, written a batch at a time
        self._seen: set[str] = set()

    @classmethod
    async def start(cls, conn: Conn, tenant_id: str, link: str | None, *, flag: bool) -> GroupsWalk:
        """The walk from `link` (None: a complete listing), in the caller's transaction."""
        listing = Listing.of(link=link, held=link is not None or await has_memberships(conn, tenant_id))
        if listing.complete:
            await begin_full_group_listing(conn)
        return cls(conn, tenant_id, listing, flag=flag)

    async def page(self, groups: Sequence[GraphGroup]) -> None:
        self._listed += await apply_group_page(self._conn, self._tenant, groups, listing=self.listing)
        if len(self._listed) >= MEMBER_BATCH:
            await self._write_listed()
        self._seen.update(g.id for g in groups if g.removed is None)

    async def end(self, link: str) -> None:
        """The walk reached its delta link: a listing's memberships are brought to what it returned, and the link
        is saved."""
        if self._listed:
            await self._write_listed()
        if self.listing.complete:
            await finish_full_group_listing(self._conn, self._tenant, self._seen, flag=self._flag,
                                            listing=self._written)
        await save_delta_link(self._conn, self._tenant, "groups", link)

    async def settle(self) -> None:
        """After the walk's transaction committed: a first listing filled the memberships from nothing; until
        autovacuum's next ANALYZE, the planner would look members up by walking the tenant's whole key range
        instead of the member index."""
        if self.listing.first:
            await analyze_memberships(self._conn)

    async def _write_listed(self) -> None:
        self._written = await write_listed_members(self._conn, self._tenant, self._listed, listing=self._written)
        self._listed = []
