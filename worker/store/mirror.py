"""SQL of the tenant mirror's users: delta links, the users' rows, their projection flags, and the reads that
give the projection its `MirrorUser`s.

Writes are idempotent and guarded by content hashes, so replaying a page changes nothing and writes nothing.
Every write flags the users whose projection it changes (`entra_user_dirty`), always in id order: the users
listing, the groups listing and the enrichment run side by side, and a common order keeps their inserts from
deadlocking. Every function takes the connection it runs on, so the caller decides the transaction, except
where a function says it opens one (the storage decisions of a listing: staging, COPY with its fallback,
statistics).
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import msgspec

from worker.core.directory import GraphUser
from worker.core.model import USER_PROPERTIES, MirrorUser
from worker.core.pulls import Listing
from worker.store import Conn

_hash_encoder = msgspec.json.Encoder()

# The columns `_mirror_record` fills: the declared user properties (`UserProperties`) between the key and
# what the mirror derives.
MIRROR_COLUMNS = ("tenant_id", "id", *USER_PROPERTIES, "assigned_licenses", "removed", "content_hash")
_UPDATABLE = [c for c in MIRROR_COLUMNS if c not in ("tenant_id", "id")]

# ---- Delta links -----------------------------------------------------------------------------------------

async def get_delta_link(conn: Conn, tenant_id: str, resource: str) -> str | None:
    return await conn.fetchval(
        "SELECT link FROM delta_links WHERE tenant_id = $1 AND resource = $2", tenant_id, resource
    )


async def save_delta_link(conn: Conn, tenant_id: str, resource: str, link: str) -> None:
    await conn.execute(
        """INSERT INTO delta_links (tenant_id, resource, link) VALUES ($1, $2, $3)
           ON CONFLICT (tenant_id, resource) DO UPDATE SET link = EXCLUDED.link, updated_at = now()""",
        tenant_id, resource, link,
    )


async def drop_delta_link(conn: Conn, tenant_id: str, resource: str) -> None:
    await conn.execute("DELETE FROM delta_links WHERE tenant_id = $1 AND resource = $2", tenant_id, resource)


# ---- Mirror --------------------------------------------------------------------------------------------

_user_properties = operator.attrgetter(*USER_PROPERTIES)


def _mirror_record(tenant_id: str, u: GraphUser) -> tuple[Any, ...]:
    """A row of `MIRROR_COLUMNS`; its content hash covers every value but the key."""
    licenses = sorted(lic.sku_id for lic in u.assigned_licenses)
    removed = u.removed.reason if u.removed else None
    if removed not in (None, "changed", "deleted"):
        removed = "deleted"
    values = (*_user_properties(u), licenses, removed)
    digest = hashlib.blake2b(_hash_encoder.encode(values), digest_size=16).digest()
    return (tenant_id, u.id, *values, digest)


async def _ensure_stage(conn: Conn) -> None:
    await conn.execute(
        """CREATE TEMP TABLE IF NOT EXISTS stage_entra_users
           (LIKE entra_users INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"""
    )


async def _begin_listing(conn: Conn) -> None:
    """Start a complete listing on this connection: the ids it returns are kept aside, so absence can be
    computed at the end without touching the rows of users that did not change."""
    await conn.execute("CREATE TEMP TABLE IF NOT EXISTS listing_seen (id text PRIMARY KEY)")
    await conn.execute("TRUNCATE listing_seen")


async def _end_listing(conn: Conn) -> None:
    await conn.execute("DROP TABLE IF EXISTS listing_seen")


_MIRROR_CHANGES = """(s.removed IS NULL AND (e.content_hash <> s.content_hash OR e.removed IS NOT NULL))
                     OR (s.removed IS NOT NULL AND e.removed IS DISTINCT FROM s.removed)"""


async def upsert_mirror_users(
    conn: Conn, tenant_id: str, users: Sequence[GraphUser], *, listing: Listing
) -> int:
    """Write a page of Graph users into the mirror; returns how many rows changed (flagged for projection).

    Must run inside a transaction (the staging table empties on commit). A removed entry keeps the user's
    last known properties, so filters still evaluate on it. In a complete `listing`, the page's ids are also
    remembered in `listing_seen` (see `users_walk`).
    """
    latest = {u.id: u for u in users}  # delta may repeat an object; the last one wins
    records = [_mirror_record(tenant_id, u) for u in latest.values()]
    await _ensure_stage(conn)
    await conn.copy_records_to_table("stage_entra_users", records=records, columns=MIRROR_COLUMNS)
    keep_props = ", ".join(
        f"{c} = CASE WHEN s.removed IS NOT NULL THEN e.{c} ELSE s.{c} END" for c in _UPDATABLE if c != "removed"
    )
    changed = await conn.fetchval(
        f"""WITH s AS (SELECT * FROM stage_entra_users),
            upd AS (
              UPDATE entra_users e SET {keep_props}, removed = s.removed, updated_at = now(), seen_at = now()
              FROM s WHERE e.tenant_id = s.tenant_id AND e.id = s.id AND ({_MIRROR_CHANGES})
              RETURNING e.id),
            ins AS (
              INSERT INTO entra_users ({", ".join(MIRROR_COLUMNS)})
              SELECT {", ".join(MIRROR_COLUMNS)} FROM s
              WHERE NOT EXISTS (SELECT 1 FROM entra_users e WHERE e.tenant_id = s.tenant_id AND e.id = s.id)
                AND s.removed IS NULL
              RETURNING id),
            flagged AS (
              INSERT INTO entra_user_dirty (tenant_id, id)
              SELECT $1, id FROM (SELECT id FROM upd UNION ALL SELECT id FROM ins) c ORDER BY id
              ON CONFLICT DO NOTHING)
            SELECT (SELECT count(*) FROM upd) + (SELECT count(*) FROM ins)""",
        tenant_id,
    )
    if listing.complete:
        await conn.execute("INSERT INTO listing_seen SELECT id FROM stage_entra_users ON CONFLICT DO NOTHING")
    await conn.execute("TRUNCATE stage_entra_users")
    return int(changed)


async def insert_new_mirror_users(
    conn: Conn, tenant_id: str, users: Sequence[GraphUser], *, flag: bool = True
) -> int:
    """A tenant's first listing: COPY straight into the mirror and flag every user unless told not to (no
    staging, no compare). Raises UniqueViolationError when a user is already there (Graph may repeat one
    across pages)."""
    latest = [u for u in {u.id: u for u in users}.values() if u.removed is None]  # the last entry wins
    latest.sort(key=lambda u: u.id)  # in key order: the primary key's inserts walk its pages in order
    records = [_mirror_record(tenant_id, u) for u in latest]
    await conn.copy_records_to_table("entra_users", records=records, columns=MIRROR_COLUMNS)
    if flag:
        await conn.copy_records_to_table(
            "entra_user_dirty", records=[(tenant_id, u.id) for u in latest], columns=("tenant_id", "id"))
    return len(records)


async def mark_absent(conn: Conn, tenant_id: str) -> int:
    """After a complete, successful listing (`users_walk`): users it did not return are removed ('absent')."""
    return int(await conn.fetchval(
        """WITH gone AS (
             UPDATE entra_users e SET removed = 'absent', updated_at = now()
             WHERE e.tenant_id = $1 AND e.removed IS NULL
               AND NOT EXISTS (SELECT 1 FROM listing_seen s WHERE s.id = e.id)
             RETURNING e.id),
           flagged AS (INSERT INTO entra_user_dirty SELECT $1, id FROM gone ORDER BY id ON CONFLICT DO NOTHING)
           SELECT count(*) FROM gone""",
        tenant_id,
    ))


@asynccontextmanager
async def users_walk(conn: Conn, listing: Listing) -> AsyncIterator[None]:
    """Around one walk of the users delta on `conn`: a complete listing keeps the ids it returns aside
    (`listing_seen`) until it ends, so absence is computed without touching the rows of users that did not
    change; a first listing, once in, refreshes the planner's statistics of the mirror (`analyze_keys`)."""
    if listing.complete:
        await _begin_listing(conn)
    try:
        yield
    finally:
        if listing.complete:
            await _end_listing(conn)
    if listing.first:
        await analyze_keys(conn, "entra_users")


async def write_users_page(
    conn: Conn, tenant_id: str, users: Sequence[GraphUser], *, listing: Listing, flag_new: bool
) -> int:
    """Write a batch of a users walk's pages in a transaction of its own; returns how many mirror rows changed.

    A first listing COPies straight in (`insert_new_mirror_users`, flagging with `flag_new`) in a savepoint: a
    user Graph repeated from an earlier page leaves nothing of the COPY behind, and the batch is compared and
    updated as usual (`upsert_mirror_users`)."""
    async with conn.transaction():
        if listing.first:
            try:
                async with conn.transaction():  # a savepoint: a refused COPY leaves nothing behind
                    return await insert_new_mirror_users(conn, tenant_id, users, flag=flag_new)
            except asyncpg.UniqueViolationError:
                pass  # Graph repeated a user of an earlier page: compare and update as usual
        return await upsert_mirror_users(conn, tenant_id, users, listing=listing)


async def end_users_walk(conn: Conn, tenant_id: str, link: str, *, listing: Listing) -> int:
    """A users walk reached its delta link: in one transaction, a complete listing (not a first: nothing to be
    absent from) marks the users it did not return absent (`mark_absent`), and the link is saved. Returns how
    many users were marked absent."""
    async with conn.transaction():
        gone = await mark_absent(conn, tenant_id) if listing is Listing.COMPLETE else 0
        await save_delta_link(conn, tenant_id, "users", link)
    return gone


async def holds_users(conn: Conn, tenant_id: str) -> bool:
    """Whether the mirror holds any user of the tenant (none: its next listing is its first)."""
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM entra_users WHERE tenant_id = $1)", tenant_id))


# Tables a tenant's first listing fills in bulk, keyed (tenant_id, id).
_KEYED_TABLES = frozenset({"entra_users", "entra_user_enrichment", "entra_user_sign_ins"})


async def analyze_keys(conn: Conn, table: str) -> None:
    """Refresh the planner's row count and key statistics of `table` after a tenant's first listing filled it
    (outside a transaction: what it samples is committed). Without them, a table just filled looks nearly
    empty: the projection's keyset page was read with a sort of every remaining row (100 ms a page of 2,000 at
    100,000 users, against 5 with the primary key in order). Two columns take 0.05 s at 100,000 rows; autovacuum
    gets there too, but only up to a minute later."""
    if table not in _KEYED_TABLES:
        raise ValueError(f"not a keyed mirror table: {table}")
    await conn.execute(f"ANALYZE {table} (tenant_id, id)")


async def dirty_user_ids(conn: Conn, tenant_id: str, *, after: str, limit: int) -> list[str]:
    """Mirror users flagged for projection, in id order after `after` (keyset pagination)."""
    rows = await conn.fetch(
        "SELECT id FROM entra_user_dirty WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        tenant_id, after, limit,
    )
    return [r[0] for r in rows]


async def clear_all_dirty(conn: Conn, tenant_id: str) -> None:
    await conn.execute("DELETE FROM entra_user_dirty WHERE tenant_id = $1", tenant_id)


async def clear_dirty(conn: Conn, tenant_id: str, ids: Sequence[str]) -> None:
    await conn.execute(
        "DELETE FROM entra_user_dirty d USING unnest($2::text[]) AS k(id) WHERE d.tenant_id = $1 AND d.id = k.id",
        tenant_id, list(ids),
    )


async def flag_users(conn: Conn, tenant_id: str, user_ids: Iterable[str]) -> None:
    """Flag mirror users for the next projection step (again); ids not in the mirror are harmless: projection
    skips them."""
    ids = sorted(set(user_ids))
    if ids:
        await conn.execute(
            "INSERT INTO entra_user_dirty (tenant_id, id) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
            tenant_id, ids,
        )


async def clear_dirty_range(conn: Conn, tenant_id: str, *, first: str, last: str, keep: Sequence[str]) -> None:
    """Clear the flags of a keyset page [first, last] (see `dirty_user_ids`) but those in `keep`: one
    index range scan instead of a probe per id."""
    await conn.execute(
        "DELETE FROM entra_user_dirty WHERE tenant_id = $1 AND id >= $2 AND id <= $3 AND id <> ALL($4::text[])",
        tenant_id, first, last, list(keep),
    )


# Mirror users are read a batch at a time as one JSON array of arrays in MirrorUser's field order
# (`array_like`): msgspec decodes it in one pass, far cheaper than building users from rows field by field,
# and arrays cost PostgreSQL and the decoder about half what objects with their 25 keys do.
def inputs_hash(r: str) -> str:
    """SQL of the mirror's fingerprint of everything the projection reads of a user (`MirrorUser.input_hash`),
    over a row `r` of `entra_users` joined with its enrichment (`mfa`, `device_macs`) and sign-in
    (`last_sign_in_at`), as the reads below join them: the row's content hash (its Graph properties and
    licences, `_mirror_record`) and what that does not cover. `tests/integration/test_input_hash.py` changes
    each projection input in turn and sees the fingerprint change."""
    return (f"sha256({r}.content_hash || convert_to(json_build_array({r}.removed, {r}.mfa,"
            f" COALESCE({r}.device_macs, '{{}}'), extract(epoch FROM {r}.last_sign_in_at))::text, 'UTF8'))")


_MIRROR_JSON: dict[str, str] = {  # a MirrorUser field not named here is the mirror column of the same name
    "license_sku_ids": "u.assigned_licenses",
    "last_sign_in_at": """to_char(u.last_sign_in_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')""",
    "device_macs": "COALESCE(u.device_macs, '{}')",
    "input_hash": f"encode({inputs_hash('u')}, 'base64')",
}


def full_row(group_ids: str) -> str:
    """A `MirrorUser` JSON array's elements, in its field order, over a row `u` of the mirror joined with its
    enrichment."""
    exprs = _MIRROR_JSON | {"group_ids": group_ids}
    return ", ".join(exprs.get(f, f"u.{f}") for f in MirrorUser.__struct_fields__)


# The users of a batch with their enrichment, `n` ordering them. By id: one primary-key probe per key and
# table (LATERAL … OFFSET 0 is not flattened: with `id = ANY(...)` the planner chose a scan of the whole tenant
# per batch, which made a full projection quadratic in the tenant's size).
_ENRICHMENT_PROBES = """
    LEFT JOIN LATERAL (SELECT mfa, device_macs FROM entra_user_enrichment
                       WHERE tenant_id = $1 AND id = u.id OFFSET 0) x ON true
    LEFT JOIN LATERAL (SELECT last_sign_in_at FROM entra_user_sign_ins
                       WHERE tenant_id = $1 AND id = u.id OFFSET 0) s ON true"""
_BY_IDS = """
    SELECT k.n, u.*, x.mfa, x.device_macs, s.last_sign_in_at
    FROM unnest($2::text[]) WITH ORDINALITY AS k(id, n)
    CROSS JOIN LATERAL (SELECT * FROM entra_users WHERE tenant_id = $1 AND id = k.id OFFSET 0) u""" + _ENRICHMENT_PROBES
# Keyset over every user of the tenant: one range scan of each table's primary key over the page's keys,
# hash-joined, instead of a query for the ids and a probe for each.
_BY_RANGE = """
    WITH page AS MATERIALIZED (SELECT * FROM entra_users WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3),
    x AS (SELECT id, mfa, device_macs FROM entra_user_enrichment
          WHERE tenant_id = $1 AND id > $2 AND id <= (SELECT max(id) FROM page)),
    s AS (SELECT id, last_sign_in_at FROM entra_user_sign_ins
          WHERE tenant_id = $1 AND id > $2 AND id <= (SELECT max(id) FROM page))
    SELECT u.id AS n, u.*, x.mfa, x.device_macs, s.last_sign_in_at
    FROM page u LEFT JOIN x ON x.id = u.id LEFT JOIN s ON s.id = u.id"""

# Transitive memberships of the batch's users: one index probe per key, as above.
_MEMBERSHIPS = """,
    m(member_id, group_id) AS (
        SELECT k.id, g.group_id FROM us k, LATERAL (
            SELECT group_id FROM entra_group_members WHERE tenant_id = $1 AND member_id = k.id OFFSET 0) g
      UNION
        SELECT m.member_id, g.group_id FROM m, LATERAL (
            SELECT group_id FROM entra_group_members WHERE tenant_id = $1 AND member_id = m.group_id OFFSET 0) g
    ),
    groups AS MATERIALIZED (SELECT member_id, array_agg(group_id) AS group_ids FROM m GROUP BY member_id)"""


def _mirror_query(source: str, *, with_groups: bool) -> str:
    groups, join = (_MEMBERSHIPS, "LEFT JOIN groups g ON g.member_id = u.id") if with_groups else ("", "")
    row = full_row("COALESCE(g.group_ids, '{}')" if with_groups else "'{}'::text[]")
    return (f"WITH RECURSIVE us AS MATERIALIZED ({source}){groups}\n"
            f"SELECT COALESCE(json_agg(json_build_array({row}) ORDER BY u.n), '[]')::text FROM us u {join}")


_MIRROR_QUERIES = {(source, groups): _mirror_query(sql, with_groups=groups)
                   for source, sql in (("ids", _BY_IDS), ("range", _BY_RANGE)) for groups in (False, True)}
_mirror_users_decoder = msgspec.json.Decoder(list[MirrorUser])


async def load_mirror_users(
    conn: Conn, tenant_id: str, ids: Sequence[str], *, with_groups: bool = True
) -> list[MirrorUser]:
    """Mirror users by id, in that order; `with_groups=False` skips transitive membership (no filter of the
    caller needs it), which is the most expensive part of the query."""
    batch = await conn.fetchval(_MIRROR_QUERIES["ids", with_groups], tenant_id, list(ids))
    return _mirror_users_decoder.decode(batch)


async def mirror_users_after(
    conn: Conn, tenant_id: str, after: str, *, limit: int, with_groups: bool = True
) -> list[MirrorUser]:
    """Keyset pagination over every mirror user of a tenant, in id order (a whole-Organization projection)."""
    batch = await conn.fetchval(_MIRROR_QUERIES["range", with_groups], tenant_id, after, limit)
    return _mirror_users_decoder.decode(batch)
