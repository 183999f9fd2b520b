"""SQL of the tenant mirror's groups, memberships and enrichment (licence names, sign-in, MFA, devices).

Every write compares before it writes and flags the users whose projection it changes (`entra_user_dirty`),
so the next projection step updates exactly their End Users. Flags are always inserted in id order: the
users listing, the groups listing and the enrichment run side by side, and a common order keeps their
inserts from deadlocking.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from worker.core.directory import GraphGroup
from worker.store import Conn

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


async def flag_users(conn: Conn, tenant_id: str, user_ids: Iterable[str]) -> None:
    """Flag users for projection (ids not in the mirror are harmless: projection skips them)."""
    ids = list(user_ids)
    if ids:
        await conn.execute(
            "INSERT INTO entra_user_dirty (tenant_id, id) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
            tenant_id, sorted(set(ids)),
        )


async def flag_users_under(conn: Conn, tenant_id: str, group_ids: Iterable[str]) -> None:
    """Flag every user who is a transitive member of these groups (their group set may have changed)."""
    ids = list(group_ids)
    if ids:
        await conn.execute(_FLAG_UNDER_GROUPS, tenant_id, ids)


async def apply_group_page(
    conn: Conn, tenant_id: str, groups: Sequence[GraphGroup], *, listing: bool = False
) -> list[tuple[str, str, str]]:
    """Apply one groups-delta page: names, removals, and members@delta additions and removals.

    With `listing` (a complete listing, see `begin_full_group_listing`) memberships are not applied but
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
    if listing:
        return added
    gone = [(g.id, m.id, _member_type(m.odata_type)) for g in live for m in g.members if m.removed is not None]
    await _change_members(conn, tenant_id, added=added, gone=gone)
    return []


async def write_listed_members(
    conn: Conn, tenant_id: str, rows: Sequence[tuple[str, str, str]], *, direct: bool
) -> bool:
    """Write memberships of a complete listing: staged for `finish_full_group_listing`, or with `direct` (a
    tenant with no memberships yet) COPied straight into the mirror. Returns whether `direct` still holds: when
    Graph repeats a membership, what was written so far moves to the staging table and the listing carries on
    staged."""
    if direct:
        try:
            async with conn.transaction():  # a savepoint: a refused COPY leaves nothing behind
                # In key order, the primary key's inserts walk its pages in order (half the cost, measured).
                await conn.copy_records_to_table(
                    "entra_group_members", records=[(tenant_id, *r) for r in sorted(rows)],
                    columns=("tenant_id", "group_id", "member_id", "member_type"))
            return True
        except asyncpg.UniqueViolationError:
            await conn.execute(
                "INSERT INTO stage_group_members SELECT group_id, member_id, member_type FROM entra_group_members"
                " WHERE tenant_id = $1", tenant_id)
    await conn.copy_records_to_table("stage_group_members", records=rows,
                                     columns=("group_id", "member_id", "member_type"))
    return False


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
    conn: Conn, tenant_id: str, seen_groups: set[str], *, flag: bool = True, direct: bool = False
) -> None:
    """Groups the listing did not return are gone; memberships are brought to the listing's, and the users
    whose memberships changed are flagged (unless `flag` is off: a first listing flags every user anyway).
    After a `direct` listing the memberships already are the listing's: every member is new."""
    await conn.execute(
        "DELETE FROM entra_groups WHERE tenant_id = $1 AND NOT (id = ANY($2::text[]))", tenant_id, list(seen_groups)
    )
    if direct:
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


# ---- Enrichment ---------------------------------------------------------------------------------------

async def replace_skus(conn: Conn, tenant_id: str, skus: Mapping[str, str], *, flag: bool = True) -> bool:
    """Replace the tenant's licence names; True when they changed, and then every licensed user is flagged
    (unless `flag` is off: a first listing flags every user anyway)."""
    rows = await conn.fetch("SELECT sku_id, sku_part_number FROM subscribed_skus WHERE tenant_id = $1", tenant_id)
    old: dict[str, str] = {r[0]: r[1] for r in rows}
    if old == dict(skus):
        return False
    await conn.execute("DELETE FROM subscribed_skus WHERE tenant_id = $1", tenant_id)
    await conn.executemany(
        "INSERT INTO subscribed_skus (tenant_id, sku_id, sku_part_number) VALUES ($1, $2, $3)",
        [(tenant_id, k, v) for k, v in skus.items()],
    )
    if not flag:
        return True
    await conn.execute(
        "INSERT INTO entra_user_dirty (tenant_id, id) SELECT tenant_id, id FROM entra_users"
        " WHERE tenant_id = $1 AND cardinality(assigned_licenses) > 0 ORDER BY id ON CONFLICT DO NOTHING",
        tenant_id,
    )
    return True


async def stage_enrichment(conn: Conn) -> None:
    """Per-connection staging tables the enrichment listings stream into (COPY), applied in one pass."""
    await conn.execute(
        """CREATE TEMP TABLE IF NOT EXISTS stage_sign_ins (id text, at timestamptz);
           CREATE TEMP TABLE IF NOT EXISTS stage_mfa (id text, mfa jsonb);
           CREATE TEMP TABLE IF NOT EXISTS stage_devices (id text, mac text);
           TRUNCATE stage_sign_ins, stage_mfa, stage_devices"""
    )


async def copy_sign_ins(conn: Conn, rows: Sequence[tuple[str, datetime | None]]) -> None:
    await conn.copy_records_to_table("stage_sign_ins", records=rows, columns=("id", "at"))


async def has_sign_ins(conn: Conn, tenant_id: str) -> bool:
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM entra_user_sign_ins WHERE tenant_id = $1)", tenant_id))


async def insert_sign_ins(
    conn: Conn, tenant_id: str, rows: Sequence[tuple[str, datetime | None]], *, flag: bool = True
) -> bool:
    """A batch of a tenant's first sign-in listing (see `has_sign_ins`), COPied straight into
    `entra_user_sign_ins` and its users flagged (unless `flag` is off). Returns False, writing nothing, when a
    user of the batch was written by an earlier batch (Graph repeated it): the caller stages the rest
    (`stage_written_sign_ins`) and compares at the end, as for a tenant with sign-ins already."""
    signed_in: dict[str, datetime] = {}
    for user, at in rows:  # a user repeated within the batch: the latest time, as the comparing pass takes
        if at is not None and (user not in signed_in or at > signed_in[user]):
            signed_in[user] = at
    records = sorted((tenant_id, user, at) for user, at in signed_in.items())
    try:
        async with conn.transaction():
            await conn.copy_records_to_table("entra_user_sign_ins", records=records,
                                             columns=("tenant_id", "id", "last_sign_in_at"))
            if flag:
                await flag_users(conn, tenant_id, signed_in)
    except asyncpg.UniqueViolationError:
        return False
    return True


async def stage_written_sign_ins(conn: Conn, tenant_id: str) -> None:
    """Move what a first listing wrote so far into the stage, so that `apply_sign_ins` compares the whole
    listing (the table held nothing of the tenant before it)."""
    await conn.execute("INSERT INTO stage_sign_ins SELECT id, last_sign_in_at FROM entra_user_sign_ins"
                       " WHERE tenant_id = $1", tenant_id)


async def apply_sign_ins(conn: Conn, tenant_id: str, *, flag: bool = True) -> int:
    """Bring `entra_user_sign_ins` to a complete staged listing: new and changed times written, users the
    listing shows without one (never signed in) or not at all removed, every user written flagged; a user
    listed twice keeps the latest time. Returns the rows written."""
    return int(await conn.fetchval(
        """WITH si AS (SELECT DISTINCT ON (id) id, at FROM stage_sign_ins WHERE at IS NOT NULL ORDER BY id, at DESC),
           gone AS (DELETE FROM entra_user_sign_ins o WHERE o.tenant_id = $1
                    AND NOT EXISTS (SELECT 1 FROM si WHERE si.id = o.id) RETURNING o.id),
           put AS (INSERT INTO entra_user_sign_ins AS o (tenant_id, id, last_sign_in_at)
                   SELECT $1, id, at FROM si ORDER BY id
                   ON CONFLICT (tenant_id, id) DO UPDATE SET last_sign_in_at = EXCLUDED.last_sign_in_at
                   WHERE o.last_sign_in_at IS DISTINCT FROM EXCLUDED.last_sign_in_at
                   RETURNING o.id),
           flagged AS (INSERT INTO entra_user_dirty
                       SELECT $1, id FROM (SELECT id FROM gone UNION ALL SELECT id FROM put) c WHERE $2 ORDER BY id
                       ON CONFLICT DO NOTHING)
           SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM put)""",
        tenant_id, flag,
    ))


async def copy_mfa(conn: Conn, rows: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    await conn.copy_records_to_table("stage_mfa", records=rows, columns=("id", "mfa"))


async def copy_devices(conn: Conn, rows: Sequence[tuple[str, str]]) -> None:
    await conn.copy_records_to_table("stage_devices", records=rows, columns=("id", "mac"))


# The staged MFA and device listings, one row per user with a value ($2, $3: whether each listing completed; a
# user Graph repeats is taken once).
_STAGED = """mf AS (SELECT DISTINCT ON (id) id, mfa FROM stage_mfa WHERE $2 AND mfa IS NOT NULL),
           dv AS (SELECT id, array_agg(DISTINCT mac ORDER BY mac) AS macs FROM stage_devices WHERE $3 GROUP BY id)"""


async def has_enrichment(conn: Conn, tenant_id: str) -> bool:
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM entra_user_enrichment WHERE tenant_id = $1)", tenant_id))


async def apply_enrichment(conn: Conn, tenant_id: str, *, mfa: bool, devices: bool, flag: bool = True) -> int:
    """Write the staged MFA and device listings into `entra_user_enrichment` in one pass, touching only rows
    whose values changed and flagging their users. A listing that did not complete (its flag False) leaves its
    column as it was; a user a complete listing did not return has no value for it. Returns the rows written."""
    if not (mfa or devices):
        return 0
    if not await has_enrichment(conn, tenant_id):
        return await _insert_first_enrichment(conn, tenant_id, mfa=mfa, devices=devices, flag=flag)
    return int(await conn.fetchval(
        "WITH " + _STAGED + """,
           keys AS (SELECT id FROM mf UNION SELECT id FROM dv
                    UNION SELECT id FROM entra_user_enrichment WHERE tenant_id = $1),
           e AS (
             SELECT k.id, o.id IS NOT NULL AS known,
                    CASE WHEN $2 THEN mf.mfa ELSE o.mfa END AS mfa,
                    CASE WHEN $3 THEN COALESCE(dv.macs, '{}') ELSE COALESCE(o.device_macs, '{}') END AS macs,
                    o.mfa AS was_mfa, o.device_macs AS was_macs
             FROM keys k
             LEFT JOIN entra_user_enrichment o ON o.tenant_id = $1 AND o.id = k.id
             LEFT JOIN mf ON mf.id = k.id LEFT JOIN dv ON dv.id = k.id),
           upd AS (
             UPDATE entra_user_enrichment o SET mfa = e.mfa, device_macs = e.macs, updated_at = now()
             FROM e WHERE o.tenant_id = $1 AND o.id = e.id AND e.known
               AND (e.was_mfa IS DISTINCT FROM e.mfa OR e.was_macs IS DISTINCT FROM e.macs)
             RETURNING o.id),
           ins AS (
             INSERT INTO entra_user_enrichment (tenant_id, id, mfa, device_macs)
             SELECT $1, id, mfa, macs FROM e
             WHERE NOT known AND (mfa IS NOT NULL OR cardinality(macs) > 0)
             ORDER BY id
             RETURNING id),
           flagged AS (INSERT INTO entra_user_dirty
                       SELECT $1, id FROM (SELECT id FROM upd UNION ALL SELECT id FROM ins) c WHERE $4 ORDER BY id
                       ON CONFLICT DO NOTHING)
           SELECT (SELECT count(*) FROM upd) + (SELECT count(*) FROM ins)""",
        tenant_id, mfa, devices, flag,
    ))


async def _insert_first_enrichment(conn: Conn, tenant_id: str, *, mfa: bool, devices: bool, flag: bool) -> int:
    """A tenant's first enrichment: nothing to compare against, so the staged listings are joined and inserted
    (about half the time of the comparing pass)."""
    return int(await conn.fetchval(
        "WITH " + _STAGED + """,
           ins AS (
             INSERT INTO entra_user_enrichment (tenant_id, id, mfa, device_macs)
             SELECT $1, COALESCE(mf.id, dv.id), mf.mfa, COALESCE(dv.macs, '{}')
             FROM mf FULL JOIN dv ON dv.id = mf.id
             ORDER BY 2
             RETURNING id),
           flagged AS (INSERT INTO entra_user_dirty SELECT $1, id FROM ins WHERE $4 ORDER BY id ON CONFLICT DO NOTHING)
           SELECT count(*) FROM ins""",
        tenant_id, mfa, devices, flag,
    ))


async def record_capabilities(conn: Conn, tenant_id: str, capabilities: Mapping[str, bool]) -> None:
    await conn.execute(
        "UPDATE microsoft_tenants SET capabilities = capabilities || $2::jsonb, updated_at = now()"
        " WHERE tenant_id = $1",
        tenant_id, dict(capabilities),
    )
