"""SQL of the sync path: tenant mirror, projection inputs, set-based plan application, runs, subscriptions.

Writes are idempotent and guarded by content hashes, so replaying a batch changes nothing and writes nothing.
Every function takes the connection it runs on, so the caller decides the transaction.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from worker.core.directory import GraphUser
from worker.core.model import (
    USER_PROPERTIES,
    Asset,
    Filters,
    MirrorUser,
    OrgContext,
    Plan,
    StateChange,
    StoredEndUser,
)
from worker.core.projection import email_keys
from worker.credentials import TenantCredentials
from worker.store import Conn, end_users
from worker.store.end_users import END_USER_SELECT, stored_end_user, time_ordered_uuids

__all__ = ["time_ordered_uuids"]  # moved to end_users with the End User writes; importable here as before

_hash_encoder = msgspec.json.Encoder()

# The columns `_mirror_record` fills: the declared user properties (`UserProperties`) between the key and
# what the mirror derives.
MIRROR_COLUMNS = ("tenant_id", "id", *USER_PROPERTIES, "assigned_licenses", "removed", "content_hash")
_UPDATABLE = [c for c in MIRROR_COLUMNS if c not in ("tenant_id", "id")]


# ---- Configuration reads ----------------------------------------------------------------------------------

async def tenant_credentials(conn: Conn, tenant_id: str) -> TenantCredentials | None:
    row = await conn.fetchrow(
        "SELECT tenant_id, client_id, client_secret FROM microsoft_tenants WHERE tenant_id = $1", tenant_id
    )
    return TenantCredentials(row["tenant_id"], row["client_id"], row["client_secret"]) if row else None


async def tenants_with_enabled_sync(conn: Conn) -> list[str]:
    rows = await conn.fetch(
        """SELECT DISTINCT p.microsoft_tenant_id FROM org_user_syncs s
           JOIN organizations o ON o.id = s.organization_id
           JOIN psa_tenants p ON p.id = o.psa_tenant_id
           WHERE s.status = 'enabled' AND p.microsoft_tenant_id IS NOT NULL"""
    )
    return [r[0] for r in rows]


async def has_enabled_sync(conn: Conn, tenant_id: str) -> bool:
    """Whether an Organization syncs from this tenant: `tenants_with_enabled_sync` for one tenant."""
    return bool(await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM psa_tenants p JOIN organizations o ON o.psa_tenant_id = p.id
           JOIN org_user_syncs s ON s.organization_id = o.id
           WHERE p.microsoft_tenant_id = $1 AND s.status = 'enabled')""", tenant_id))


def filters_from_json(data: dict[str, Any]) -> Filters:
    return Filters(**{k: v if v == "all" else tuple(v) for k, v in data.items()})


async def org_contexts(
    conn: Conn, tenant_id: str, organization_id: str | None = None
) -> list[OrgContext]:
    """Organizations mapped to `tenant_id` with user sync enabled (optionally just one)."""
    rows = await conn.fetch(
        """SELECT o.id::text AS id, s.filters FROM org_user_syncs s
           JOIN organizations o ON o.id = s.organization_id
           JOIN psa_tenants p ON p.id = o.psa_tenant_id
           WHERE s.status = 'enabled' AND p.microsoft_tenant_id = $1
             AND ($2::uuid IS NULL OR o.id = $2::uuid)
           ORDER BY o.id""",
        tenant_id, organization_id,
    )
    skus = await _sku_names(conn, tenant_id)
    return [await _org_context(conn, tenant_id, row["id"], filters_from_json(row["filters"]), skus) for row in rows]


async def org_context_with(conn: Conn, tenant_id: str, organization_id: str, filters: Filters) -> OrgContext:
    """One Organization's context as `org_contexts` builds it, but with `filters` and whatever its sync status
    (what a preview of those filters decides with)."""
    return await _org_context(conn, tenant_id, organization_id, filters, await _sku_names(conn, tenant_id))


async def _sku_names(conn: Conn, tenant_id: str) -> dict[str, str]:
    return {r[0]: r[1] for r in await conn.fetch(
        "SELECT sku_id, sku_part_number FROM subscribed_skus WHERE tenant_id = $1", tenant_id
    )}


async def _org_context(
    conn: Conn, tenant_id: str, organization_id: str, filters: Filters, skus: dict[str, str]
) -> OrgContext:
    assets = await conn.fetch(
        "SELECT id::text, mac_addresses FROM assets WHERE organization_id = $1::uuid "
        "AND cardinality(mac_addresses) > 0", organization_id,
    )
    return OrgContext(
        organization_id=organization_id, tenant_id=tenant_id, filters=filters,
        sku_names=skus, assets=tuple(Asset(id=a[0], macs=tuple(a[1])) for a in assets),
        excluded=await end_users.excluded_object_ids(conn, organization_id, tenant_id),
    )


async def still_syncing(conn: Conn, tenant_id: str, organization_ids: Sequence[str]) -> set[str]:
    """Of these Organizations, those that still sync from `tenant_id` (assigned to a PSA tenant mapped to it,
    user sync enabled). Called first in the worker's End User write transactions: it takes the tenant's
    mapping lock shared, until the transaction ends. An operator's re-assign, map, unmap, remap or disable
    takes it exclusive (`hold_tenant_mapping`), so it waits only for the chunk being written, later chunks
    queue behind it (PostgreSQL grants advisory locks in order: no starvation), and the mapping read here,
    after the lock, is the operator's: nothing of the old mapping is written once the operator was answered."""
    if not organization_ids:
        return set()
    await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", tenant_lock_key(mapping_lock(tenant_id)))
    rows = await conn.fetch(
        """SELECT o.id::text FROM organizations o
           JOIN psa_tenants p ON p.id = o.psa_tenant_id
           JOIN org_user_syncs s ON s.organization_id = o.id
           WHERE o.id = ANY ($1::uuid[]) AND p.microsoft_tenant_id = $2 AND s.status = 'enabled'""",
        list(organization_ids), tenant_id,
    )
    return {r[0] for r in rows}


async def hold_tenant_mapping(conn: Conn, tenant_id: str) -> None:
    """In an operator's transaction that changes which Organizations sync from `tenant_id`: wait for the
    End User writes in flight for it, and hold further ones until the change commits (see `still_syncing`)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", tenant_lock_key(mapping_lock(tenant_id)))


# ---- Tenant lock ------------------------------------------------------------------------------------------

def tenant_lock_key(tenant_id: str) -> int:
    """A stable 63-bit advisory-lock key for a tenant (serialises its work across replicas)."""
    return int.from_bytes(hashlib.blake2b(tenant_id.encode(), digest_size=8).digest(), "big") >> 1


def mapping_lock(tenant_id: str) -> str:
    """The lock name of the Organizations that sync from a tenant (operators exclusive, End User writes shared)."""
    return f"{tenant_id}/mapping"


def subscriptions_lock(tenant_id: str) -> str:
    """The lock name (for `lock_tenant`) that serialises a tenant's subscription reconciliations and their
    removal with the tenant; its own key, so a reconciliation never waits for a running resync."""
    return f"{tenant_id}/subscriptions"


async def lock_tenant(conn: Conn, tenant_id: str) -> None:
    await conn.execute("SELECT pg_advisory_lock($1)", tenant_lock_key(tenant_id))


async def unlock_tenant(conn: Conn, tenant_id: str) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1)", tenant_lock_key(tenant_id))


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


async def begin_listing(conn: Conn) -> None:
    """Start a complete listing on this connection: the ids it returns are kept aside, so absence can be
    computed at the end without touching the rows of users that did not change."""
    await conn.execute("CREATE TEMP TABLE IF NOT EXISTS listing_seen (id text PRIMARY KEY)")
    await conn.execute("TRUNCATE listing_seen")


async def end_listing(conn: Conn) -> None:
    await conn.execute("DROP TABLE IF EXISTS listing_seen")


_MIRROR_CHANGES = """(s.removed IS NULL AND (e.content_hash <> s.content_hash OR e.removed IS NOT NULL))
                     OR (s.removed IS NOT NULL AND e.removed IS DISTINCT FROM s.removed)"""


async def upsert_mirror_users(conn: Conn, tenant_id: str, users: Sequence[GraphUser], *, listing: bool) -> int:
    """Write a page of Graph users into the mirror; returns how many rows changed (flagged for projection).

    Must run inside a transaction (the staging table empties on commit). A removed entry keeps the user's
    last known properties, so filters still evaluate on it. With `listing`, the page's ids are also
    remembered in `listing_seen` (see `begin_listing`).
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
    if listing:
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
    """After a complete, successful listing (`begin_listing`): users it did not return are removed ('absent')."""
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


async def mirror_has_users(conn: Conn, tenant_id: str) -> bool:
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


async def flag_dirty(conn: Conn, tenant_id: str, ids: Sequence[str]) -> None:
    """Flag mirror users for the next unit of work to project (again)."""
    await conn.execute(
        "INSERT INTO entra_user_dirty (tenant_id, id) SELECT $1, k FROM unnest($2::text[]) AS k ORDER BY k"
        " ON CONFLICT DO NOTHING", tenant_id, list(ids))


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
_MIRROR_JSON: dict[str, str] = {  # a MirrorUser field not named here is the mirror column of the same name
    "license_sku_ids": "u.assigned_licenses",
    "last_sign_in_at": """to_char(u.last_sign_in_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')""",
    "device_macs": "COALESCE(u.device_macs, '{}')",
}


def _mirror_row(group_ids: str) -> str:
    """The JSON array's elements, in MirrorUser's field order."""
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
    row = _mirror_row("COALESCE(g.group_ids, '{}')" if with_groups else "'{}'::text[]")
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


# ---- End Users: projection inputs -----------------------------------------------------------------------

async def load_end_users(
    conn: Conn, *, organization_id: str, tenant_id: str, users: Sequence[MirrorUser]
) -> tuple[dict[str, StoredEndUser], dict[str, list[StoredEndUser]]]:
    """The Organization's End Users linked to these Entra users, and those sharing their emails."""
    ids = [u.id for u in users]
    # One index probe per key (LATERAL … OFFSET 0 is not flattened): with `= ANY(array)` the planner, working
    # from statistics taken before an initial sync filled the table, scans the whole Organization per batch.
    linked_rows = await conn.fetch(
        "SELECT e.* FROM unnest($3::text[]) AS k(oid), LATERAL (" + END_USER_SELECT
        + " WHERE e.organization_id = $1::uuid AND e.entra_tenant_id = $2 AND e.entra_object_id = k.oid"
        " OFFSET 0) AS e", organization_id, tenant_id, ids,
    )
    email_rows = await conn.fetch(
        "SELECT e.* FROM unnest($2::text[]) AS k(email), LATERAL (" + END_USER_SELECT
        + " WHERE e.organization_id = $1::uuid AND lower(e.email) = k.email AND e.email IS NOT NULL"
        " OFFSET 0) AS e", organization_id, sorted({k for u in users for k in email_keys(u)}),
    )
    linked = {r["entra_object_id"]: stored_end_user(r) for r in linked_rows}
    by_email: dict[str, list[StoredEndUser]] = {}
    for r in email_rows:
        by_email.setdefault(r["email"].lower(), []).append(stored_end_user(r))
    return linked, by_email


async def has_end_users(conn: Conn, organization_id: str) -> bool:
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM end_users WHERE organization_id = $1::uuid)", organization_id))


async def synced_count(conn: Conn, organization_id: str) -> int:
    return int(await conn.fetchval(
        "SELECT count(*) FROM end_users WHERE organization_id = $1::uuid AND sync_state = 'synced'",
        organization_id,
    ))


# ---- End Users: applying a plan -----------------------------------------------------------------------

async def apply_plan(
    conn: Conn, *, org: OrgContext, run_id: str | None, plan: Plan,
    include_deactivations: bool = True,
) -> None:
    """Apply a reconcile plan set-based through the End User write path (`worker.store.end_users`), which
    journals every change. Call in a transaction."""
    await end_users.write_creates(conn, org=org, run_id=run_id, creates=plan.creates)
    await end_users.write_updates(conn, org=org, run_id=run_id, updates=plan.updates)
    changes = list(plan.state_changes) + (list(plan.deactivations) if include_deactivations else [])
    await apply_state_changes(conn, run_id=run_id, changes=changes)
    await _apply_reviews(conn, org=org, plan=plan)


async def apply_state_changes(conn: Conn, *, run_id: str | None, changes: Sequence[StateChange]) -> None:
    await end_users.write_state_changes(conn, run_id=run_id, changes=changes)


async def _apply_reviews(conn: Conn, *, org: OrgContext, plan: Plan) -> None:
    for r in plan.reviews:
        await conn.execute(
            """INSERT INTO review_items (organization_id, entra_tenant_id, entra_object_id, reason, candidate_ids)
               VALUES ($1::uuid, $2, $3, $4, $5::uuid[])
               ON CONFLICT (organization_id, entra_tenant_id, entra_object_id) WHERE status = 'open'
               DO UPDATE SET reason = EXCLUDED.reason, candidate_ids = EXCLUDED.candidate_ids""",
            org.organization_id, org.tenant_id, r.entra_object_id, r.reason, list(r.candidate_ids),
        )


async def orgs_awaiting_org_sync(conn: Conn, tenant_id: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT organization_id::text FROM sync_runs WHERE tenant_id = $1 AND kind = 'org-sync'"
        " AND status = 'queued' AND organization_id IS NOT NULL", tenant_id,
    )
    return {r[0] for r in rows}


# ---- Runs ------------------------------------------------------------------------------------------------

# The filters a run applies, kept with it: undoing the run is refused while they still apply.
_RUN_FILTERS = "SELECT f.filters FROM org_user_syncs f WHERE f.organization_id = {}"


async def start_run(
    conn: Conn, *, kind: str, tenant_id: str, organization_id: str | None,
    run_id: str | None = None,
) -> str:
    """Mark a queued run (created by the admin API) running, or create a new running one."""
    if run_id:
        updated = await conn.fetchval(
            "UPDATE sync_runs SET status = 'running', started_at = now(),"
            f" filters = ({_RUN_FILTERS.format('sync_runs.organization_id')}) WHERE id = $1::uuid RETURNING id::text",
            run_id,
        )
        if updated:
            return str(updated)
    return str(await conn.fetchval(
        f"""INSERT INTO sync_runs (id, kind, tenant_id, organization_id, status, started_at, filters)
           VALUES (COALESCE($1::uuid, gen_random_uuid()), $2, $3, $4::uuid, 'running', now(),
                   ({_RUN_FILTERS.format('$4::uuid')}))
           RETURNING id::text""",
        run_id, kind, tenant_id, organization_id,
    ))


async def finish_run(
    conn: Conn, run_id: str, *, status: str, counts: dict[str, int],
    warnings: Sequence[str] = (), error: str | None = None,
) -> None:
    await conn.execute(
        """UPDATE sync_runs SET status = $2, counts = $3, warnings = $4, error = $5, finished_at = now()
           WHERE id = $1::uuid""",
        run_id, status, counts, list(warnings), error,
    )


ABANDONED = ("interrupted: its unit of work ended without closing it (PostgreSQL was unreachable when it failed,"
             " or the worker stopped); a later unit of work took over")


async def end_abandoned_runs(conn: Conn, tenant_id: str) -> list[str]:
    """With the tenant's lock held: end `failed` every delta or resync run of the tenant still `running`.

    Only a unit of work holding the lock records such runs and ends each before it lets go of the lock, so one
    still running now belongs to a unit that ended without closing it: one whose failure path could not reach
    PostgreSQL (`SyncEngine._closing_on_failure` is best effort) or a worker that died. An org-sync's run is left
    alone: its command is replayed and the retry takes the same run over (`start_run`), or the consumer fails it
    when it gives up."""
    rows = await conn.fetch(
        """UPDATE sync_runs SET status = 'failed', error = $2, finished_at = now()
           WHERE tenant_id = $1 AND status = 'running' AND kind <> 'org-sync' RETURNING id::text""",
        tenant_id, ABANDONED,
    )
    return [r[0] for r in rows]


async def fail_runs(conn: Conn, run_ids: Sequence[str], error: str) -> None:
    """End queued or running runs `failed` with `error` (finished ones keep their outcome)."""
    await conn.execute(
        """UPDATE sync_runs SET status = 'failed', error = $2, finished_at = now()
           WHERE id = ANY($1::uuid[]) AND status IN ('queued', 'running')""",
        list(run_ids), error,
    )


# ---- Subscriptions and status ---------------------------------------------------------------------------

async def save_subscription(
    conn: Conn, *, tenant_id: str, subscription_id: str, resource: str, change_type: str,
    notification_url: str, expires_at: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO graph_subscriptions (id, tenant_id, resource, change_type, notification_url, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at, renewed_at = now()""",
        subscription_id, tenant_id, resource, change_type, notification_url, expires_at,
    )


async def subscriptions_of(conn: Conn, tenant_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, resource, notification_url, expires_at FROM graph_subscriptions WHERE tenant_id = $1",
        tenant_id,
    )


async def subscription_tenant(conn: Conn, subscription_id: str) -> str | None:
    """The tenant a recorded subscription belongs to; None when we never recorded it."""
    value = await conn.fetchval("SELECT tenant_id FROM graph_subscriptions WHERE id = $1", subscription_id)
    return str(value) if value is not None else None


async def forget_subscription(conn: Conn, subscription_id: str) -> None:
    await conn.execute("DELETE FROM graph_subscriptions WHERE id = $1", subscription_id)


async def touch_subscriptions(conn: Conn, tenant_id: str, subscription_ids: Sequence[str]) -> None:
    """A change notification of each of these subscriptions was just processed."""
    await conn.execute(
        "UPDATE graph_subscriptions SET last_notification_at = now() WHERE tenant_id = $1 AND id = ANY($2::text[])",
        tenant_id, list(subscription_ids),
    )


# How long a tenant's notifications per hour are kept (the console plots the last 24 hours).
NOTIFICATION_HOURS_KEPT = 24 * 7


async def count_notifications(conn: Conn, tenant_id: str, count: int) -> None:
    """Add `count` change notifications the worker accepted to the tenant's current UTC hour. The first count of
    a new hour also deletes the tenant's hours older than NOTIFICATION_HOURS_KEPT (the retention)."""
    await conn.execute(
        """WITH counted AS (
             INSERT INTO tenant_notifications_hourly AS h (tenant_id, hour, count)
             VALUES ($1, date_trunc('hour', now(), 'UTC'), $2)
             ON CONFLICT (tenant_id, hour) DO UPDATE SET count = h.count + excluded.count
             RETURNING xmax = 0 AS new_hour)
           DELETE FROM tenant_notifications_hourly
           WHERE tenant_id = $1 AND hour < date_trunc('hour', now(), 'UTC') - make_interval(hours => $3)
             AND (SELECT new_hour FROM counted)""",
        tenant_id, count, NOTIFICATION_HOURS_KEPT,
    )


# The last full resync's drift (tenant_sync_status.last_resync_drift): the End Users created, updated and
# deactivated by the resync runs recorded since the previous complete listing ended, i.e. by this resync:
# changes no notification had brought (the deltas would have applied them first). A resync that changed
# nothing records no run: its drift is zeros.
_RESYNC_DRIFT = """(SELECT jsonb_build_object(
    'at', now(), 'created', coalesce(sum((r.counts->>'created')::int), 0),
    'updated', coalesce(sum((r.counts->>'updated')::int), 0),
    'deactivated', coalesce(sum((r.counts->>'deactivated')::int), 0),
    'total', coalesce(sum(coalesce((r.counts->>'created')::int, 0) + coalesce((r.counts->>'updated')::int, 0)
                          + coalesce((r.counts->>'deactivated')::int, 0)), 0))
  FROM sync_runs r WHERE r.tenant_id = $1 AND r.kind = 'resync' AND r.status IN ('succeeded', 'held')
    AND r.requested_at > {since})"""


async def record_tenant_status(
    conn: Conn, tenant_id: str, *, delta: bool = False, full: bool = False,
    notification: bool = False, error: str | None = None, resync: bool = False,
) -> None:
    """Stamp what the worker just did for a tenant; `resync` (the hourly full resync, after its runs are
    recorded) also stores the resync's drift, `_RESYNC_DRIFT`."""
    first_drift = _RESYNC_DRIFT.format(since="'-infinity'::timestamptz")
    drift = _RESYNC_DRIFT.format(since="coalesce(tenant_sync_status.last_full_resync_at, '-infinity')")
    await conn.execute(
        f"""INSERT INTO tenant_sync_status (tenant_id, last_delta_at, last_full_resync_at, last_notification_at,
                                            last_error, last_resync_drift)
           VALUES ($1, CASE WHEN $2 THEN now() END, CASE WHEN $3 THEN now() END, CASE WHEN $4 THEN now() END, $5,
                   CASE WHEN $6 THEN {first_drift} END)
           ON CONFLICT (tenant_id) DO UPDATE SET
             last_delta_at = CASE WHEN $2 THEN now() ELSE tenant_sync_status.last_delta_at END,
             last_full_resync_at = CASE WHEN $3 THEN now() ELSE tenant_sync_status.last_full_resync_at END,
             last_notification_at = CASE WHEN $4 THEN now() ELSE tenant_sync_status.last_notification_at END,
             last_resync_drift = CASE WHEN $6 THEN {drift} ELSE tenant_sync_status.last_resync_drift END,
             last_error = $5, updated_at = now()""",
        tenant_id, delta, full, notification, error, resync,
    )
