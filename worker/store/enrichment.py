"""SQL of the tenant mirror's enrichment: licence names, last sign-in, MFA registration, managed devices.

Every write compares before it writes and flags the users whose projection it changes (`entra_user_dirty`,
in id order, see `worker.store.mirror`), so the next projection step updates exactly their End Users.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from worker.core.pulls import Listing
from worker.store import Conn
from worker.store.mirror import analyze_keys, flag_users


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


async def write_sign_ins(
    conn: Conn, tenant_id: str, rows: Sequence[tuple[str, datetime | None]], *, listing: Listing, flag: bool
) -> Listing:
    """Write a batch of a sign-in listing: a `FIRST` listing's straight into `entra_user_sign_ins`
    (`insert_sign_ins`), a `COMPLETE` one's staged for `apply_sign_ins`. Returns how the listing goes on: when
    Graph repeats a user of an earlier batch, what the first listing wrote so far moves to the stage and it
    carries on staged, as a `COMPLETE` one. A first listing that fails part-way keeps the times it wrote."""
    if listing.first:
        if await insert_sign_ins(conn, tenant_id, rows, flag=flag):
            return listing
        await stage_written_sign_ins(conn, tenant_id)
    await copy_sign_ins(conn, rows)
    return Listing.COMPLETE


async def analyze_first_sign_ins(conn: Conn, tenant_id: str) -> None:
    """After a tenant's first sign-in listing went straight in: refresh the planner's statistics of the table
    (`analyze_keys`), unless nobody of the tenant signed in."""
    if await has_sign_ins(conn, tenant_id):
        await analyze_keys(conn, "entra_user_sign_ins")


async def analyze_first_enrichment(conn: Conn) -> None:
    """After a tenant's first MFA and device rows went in: refresh the planner's statistics (`analyze_keys`)."""
    await analyze_keys(conn, "entra_user_enrichment")


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
