"""SQL of the tenant mirror's groups, memberships and enrichment (licence names, sign-in, MFA, devices).

Every write compares before it writes and flags the users whose projection it changes (`needs_projection`),
so the next projection step updates exactly their End Users.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from worker.graph import GraphGroup
from worker.store import Conn

_FLAG_UNDER_GROUPS = """
    WITH RECURSIVE sub(group_id) AS (
        SELECT unnest($2::text[])
      UNION
        SELECT m.member_id FROM entra_group_members m JOIN sub ON m.group_id = sub.group_id
        WHERE m.tenant_id = $1 AND m.member_type = 'group'
    )
    UPDATE entra_users u SET needs_projection = true
    FROM entra_group_members m JOIN sub ON m.group_id = sub.group_id
    WHERE m.tenant_id = $1 AND m.member_type = 'user' AND u.tenant_id = $1 AND u.id = m.member_id
      AND NOT u.needs_projection
"""


def _member_type(odata_type: str) -> str:
    kind = odata_type.rsplit(".", 1)[-1].lower()
    return kind if kind in ("user", "group") else "other"


async def flag_users(conn: Conn, tenant_id: str, user_ids: Iterable[str]) -> None:
    await conn.execute(
        "UPDATE entra_users SET needs_projection = true WHERE tenant_id = $1 AND id = ANY($2::text[])"
        " AND NOT needs_projection", tenant_id, list(user_ids),
    )


async def flag_users_under(conn: Conn, tenant_id: str, group_ids: Iterable[str]) -> None:
    """Flag every user who is a transitive member of these groups (their group set may have changed)."""
    ids = list(group_ids)
    if ids:
        await conn.execute(_FLAG_UNDER_GROUPS, tenant_id, ids)


async def apply_group_page(conn: Conn, tenant_id: str, groups: Sequence[GraphGroup]) -> None:
    """Apply one groups-delta page: names, removals, and members@delta additions and removals."""
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
    gone = [(g.id, m.id, _member_type(m.odata_type)) for g in live for m in g.members if m.removed is not None]
    await _change_members(conn, tenant_id, added=added, gone=gone)


async def _change_members(
    conn: Conn, tenant_id: str, *, added: Sequence[tuple[str, str, str]],
    gone: Sequence[tuple[str, str, str]],
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


async def begin_full_group_listing(conn: Conn, tenant_id: str) -> None:
    """Start a complete groups listing (inside the caller's transaction): keep the old memberships aside."""
    await conn.execute(
        """CREATE TEMP TABLE IF NOT EXISTS old_group_members
           (group_id text, member_id text, member_type text) ON COMMIT DROP"""
    )
    await conn.execute(
        "INSERT INTO old_group_members SELECT group_id, member_id, member_type FROM entra_group_members"
        " WHERE tenant_id = $1", tenant_id,
    )
    await conn.execute("DELETE FROM entra_group_members WHERE tenant_id = $1", tenant_id)


async def finish_full_group_listing(conn: Conn, tenant_id: str, seen_groups: set[str]) -> None:
    """Groups the listing did not return are gone; flag users whose memberships differ from before."""
    await conn.execute(
        "DELETE FROM entra_groups WHERE tenant_id = $1 AND NOT (id = ANY($2::text[]))", tenant_id, list(seen_groups)
    )
    diff = await conn.fetch(
        """(SELECT group_id, member_id, member_type FROM old_group_members
            EXCEPT SELECT group_id, member_id, member_type FROM entra_group_members WHERE tenant_id = $1)
           UNION
           (SELECT group_id, member_id, member_type FROM entra_group_members WHERE tenant_id = $1
            EXCEPT SELECT group_id, member_id, member_type FROM old_group_members)""",
        tenant_id,
    )
    await _flag_members(conn, tenant_id, [(r[0], r[1], r[2]) for r in diff])
    # A nested group that moved changes the transitive set of everyone under its old parents too.
    await flag_users_under(conn, tenant_id, {r[0] for r in diff if r[2] == "group"})


# ---- Enrichment ---------------------------------------------------------------------------------------

async def replace_skus(conn: Conn, tenant_id: str, skus: Mapping[str, str]) -> bool:
    """Replace the tenant's licence names; True (and every licensed user flagged) when they changed."""
    rows = await conn.fetch("SELECT sku_id, sku_part_number FROM subscribed_skus WHERE tenant_id = $1", tenant_id)
    old: dict[str, str] = {r[0]: r[1] for r in rows}
    if old == dict(skus):
        return False
    await conn.execute("DELETE FROM subscribed_skus WHERE tenant_id = $1", tenant_id)
    await conn.executemany(
        "INSERT INTO subscribed_skus (tenant_id, sku_id, sku_part_number) VALUES ($1, $2, $3)",
        [(tenant_id, k, v) for k, v in skus.items()],
    )
    await conn.execute(
        "UPDATE entra_users SET needs_projection = true WHERE tenant_id = $1 AND cardinality(assigned_licenses) > 0",
        tenant_id,
    )
    return True


async def set_sign_ins(conn: Conn, tenant_id: str, values: Mapping[str, datetime | None]) -> int:
    return await _set_column(conn, tenant_id, "last_sign_in_at", "timestamptz", values)


async def set_mfa(conn: Conn, tenant_id: str, values: Mapping[str, dict[str, Any] | None]) -> int:
    return await _set_column(conn, tenant_id, "mfa", "jsonb", values)


async def set_device_macs(conn: Conn, tenant_id: str, values: Mapping[str, list[str]]) -> int:
    # unnest() would flatten a 2-D array, so each user's list travels as JSON text.
    encoded = {k: json.dumps(v) for k, v in values.items()}
    return await _set_column(conn, tenant_id, "device_macs", "text", encoded,
                             value="ARRAY(SELECT jsonb_array_elements_text(v.val::jsonb))")


async def _set_column(
    conn: Conn, tenant_id: str, column: str, pg_type: str, values: Mapping[str, Any],
    *, value: str = "v.val",
) -> int:
    """Set one enrichment column for these users where it differs, flagging them; returns how many changed."""
    if not values:
        return 0
    result = await conn.execute(
        f"""UPDATE entra_users u SET {column} = {value}, needs_projection = true, updated_at = now()
            FROM unnest($2::text[], $3::{pg_type}[]) AS v(id, val)
            WHERE u.tenant_id = $1 AND u.id = v.id AND u.{column} IS DISTINCT FROM {value}""",
        tenant_id, list(values), list(values.values()),
    )
    return int(result.split()[-1])


async def clear_column_except(
    conn: Conn, tenant_id: str, column: str, empty: str, keep: Iterable[str]
) -> int:
    """After a complete listing: users it did not mention lose the value (a device unenrolled, say)."""
    result = await conn.execute(
        f"""UPDATE entra_users SET {column} = {empty}, needs_projection = true, updated_at = now()
            WHERE tenant_id = $1 AND {column} IS DISTINCT FROM {empty} AND NOT (id = ANY($2::text[]))""",
        tenant_id, list(keep),
    )
    return int(result.split()[-1])


async def record_capabilities(conn: Conn, tenant_id: str, capabilities: Mapping[str, bool]) -> None:
    await conn.execute(
        "UPDATE microsoft_tenants SET capabilities = capabilities || $2::jsonb, updated_at = now()"
        " WHERE tenant_id = $1",
        tenant_id, dict(capabilities),
    )
