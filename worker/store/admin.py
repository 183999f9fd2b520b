"""The SQL of the admin API: configuration, End Users, assets, runs, review items and filter options.

Only the store package runs SQL. This module returns JSON-ready dicts and raises `NotFound`, `Conflict` or
`InvalidReference`; the HTTP layer maps those to status codes once. It never talks to Kafka: the caller
commits here first and enqueues after, so the worker never sees a command before the row it refers to.
Every change that touches several rows runs in one transaction.

jsonb columns are read as `::text` and written as `$n::text::jsonb`, so these queries work on a pool with or
without a jsonb codec; `review_mirror_user` reuses the sync path's loader, which needs the codecs of
`worker.store.pool.create_pool`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import asyncpg

from worker.core.model import END_USER_FIELDS, MirrorUser
from worker.credentials import TenantCredentials
from worker.store import Conn, Pool, end_users, sync_status
from worker.store.mirror import load_mirror_users
from worker.store.tenants import hold_tenant_mapping, subscriptions_lock, tenant_lock_key

# Tables holding a Microsoft tenant's mirror and sync state (`tenant_id` column), removed with the tenant.
_TENANT_TABLES = (
    "entra_user_dirty", "entra_user_sign_ins", "entra_user_enrichment", "entra_group_members", "entra_groups",
    "entra_users", "subscribed_skus", "delta_links", "graph_subscriptions", "tenant_sync_status",
    "mirror_facets", "mirror_group_counts", "mirror_group_count_state", "tenant_notifications_hourly",
    "mirror_facets_stale",
)
REASON_SYNC_DISABLED = "user sync disabled"
_ALREADY_LINKED = "another End User of the Organization is already linked to this Entra user"

Row = asyncpg.Record | Mapping[str, Any]


class StoreError(Exception):
    """A request the data does not allow; `str(error)` is the operator-facing message."""


class NotFound(StoreError):
    """The resource named by the request path does not exist."""


class Conflict(StoreError):
    """The request contradicts the current state (duplicate, mapping conflict, not enabled …)."""


class InvalidReference(StoreError):
    """A body field refers to something that does not exist."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class Enqueued:
    """A queued `org-sync` run; the caller publishes its Command after the commit."""

    run_id: str
    tenant_id: str
    organization_id: str


@dataclass(frozen=True)
class Outcome:
    """What a committed change returns, and what the caller must publish about it."""

    body: dict[str, Any]
    runs: tuple[Enqueued, ...] = ()
    stale_tenants: tuple[str, ...] = ()          # tenants whose subscriptions may no longer be needed
    extra: dict[str, Any] = field(default_factory=dict)

    def with_body(self, body: dict[str, Any]) -> Outcome:
        return Outcome(body=body, runs=self.runs, stale_tenants=self.stale_tenants, extra=self.extra)


_NO_CHANGE = Outcome(body={}, extra={"end_users_stopped": 0})


# ---- conversions -----------------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _record(row: Row, *, json_fields: Sequence[str] = ()) -> dict[str, Any]:
    out = {key: _plain(value) for key, value in row.items()}
    for key in json_fields:
        out[key] = json.loads(out[key]) if out[key] is not None else None
    return out


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _is_unique_violation(exc: Exception, constraint: str) -> bool:
    return isinstance(exc, asyncpg.UniqueViolationError) and constraint in str(
        getattr(exc, "constraint_name", "") or exc
    )


# ---- SQL fragments ----------------------------------------------------------------------------------------

_PSA_SELECT = """
SELECT p.id, p.name, p.microsoft_tenant_id, p.created_at, p.updated_at,
       (SELECT count(*) FROM organizations o WHERE o.psa_tenant_id = p.id) AS organizations
FROM psa_tenants p
"""

_ORG_SELECT = """
SELECT o.id, o.name, o.psa_tenant_id, p.name AS psa_tenant_name, p.microsoft_tenant_id,
       coalesce(s.status, 'not_set_up') AS user_sync_status, o.created_at, o.updated_at
FROM organizations o
JOIN psa_tenants p ON p.id = o.psa_tenant_id
LEFT JOIN org_user_syncs s ON s.organization_id = o.id
"""

_END_USER_SELECT = """
SELECT e.id, e.organization_id, e.first_name, e.last_name, e.email, e.phone, e.mobile, e.street, e.city,
       e.state, e.postal_code, e.job_title, e.sync_state, e.sync_state_reason, e.entra_tenant_id,
       e.entra_object_id, e.last_synced_at, e.created_at, e.updated_at, e.microsoft::text AS microsoft,
       e.locked_fields, e.leaver::text AS leaver,
       coalesce((SELECT json_agg(json_build_object('id', a.id, 'name', a.name) ORDER BY a.name, a.id)
                 FROM end_user_assets ea JOIN assets a ON a.id = ea.asset_id
                 WHERE ea.end_user_id = e.id), '[]')::text AS assets
FROM end_users e
"""

_RUN_SELECT = """
SELECT id, kind, organization_id, tenant_id, status, counts::text AS counts, warnings::text AS warnings,
       error, requested_at, started_at, finished_at
FROM sync_runs
"""

_REVIEW_SELECT = """
SELECT r.id, r.organization_id, r.entra_tenant_id, r.entra_object_id, r.reason, r.candidate_ids, r.status,
       r.resolution::text AS resolution, r.created_at, r.resolved_at,
       (SELECT json_build_object('display_name', u.display_name, 'mail', u.mail,
                                 'user_principal_name', u.user_principal_name)
        FROM entra_users u WHERE u.tenant_id = r.entra_tenant_id AND u.id = r.entra_object_id
       )::text AS entra_user,
       coalesce((SELECT json_agg(json_build_object('id', e.id, 'first_name', e.first_name,
                                 'last_name', e.last_name, 'email', e.email, 'sync_state', e.sync_state)
                                 ORDER BY e.email)
                 FROM end_users e WHERE e.id = ANY (r.candidate_ids)), '[]')::text AS candidates
FROM review_items r
"""

# SQL forms of worker/core/filters.py's domains, so the options run as one statement over 100,000 users;
# tests/admin/test_preview.py checks their counts. (The preview runs the sync's own code: worker/preview.py.)
# No regular expressions: the text after the last "@" is the first part of the reversed text (split_part),
# and a guest's home domain the text after the last "_" of the part before "#ext#".
_UPN = "lower(btrim(u.user_principal_name))"
_IS_GUEST = f"position('#ext#' in {_UPN}) > 0"
_GUEST_LOCAL = f"split_part({_UPN}, '#ext#', 1)"
_MAIL_DOMAIN = ("CASE WHEN position('@' in u.mail) > 0"
                " THEN lower(btrim(reverse(split_part(reverse(u.mail), '@', 1)))) END")
_UPN_DOMAIN = (
    f"CASE WHEN {_IS_GUEST} THEN CASE WHEN position('_' in {_GUEST_LOCAL}) > 0"
    f" THEN reverse(split_part(reverse({_GUEST_LOCAL}), '_', 1)) ELSE '' END"
    f" WHEN position('@' in {_UPN}) > 0 THEN btrim(reverse(split_part(reverse({_UPN}), '@', 1))) END"
)

# One scan of the tenant's users, five (section, value) pairs each, counted by a hash aggregate: each user has
# one value per section (a domain shared by mail and UPN is given once), so count(*) counts users without the
# sorts count(DISTINCT …) needs.
_OPTION_VALUES_SQL = f"""
SELECT v.section, min(v.value) AS value, count(*) AS count
FROM (SELECT btrim(u.user_type) AS user_type, btrim(u.office_location) AS office_location,
             btrim(u.department) AS department, {_MAIL_DOMAIN} AS mail_domain, {_UPN_DOMAIN} AS upn_domain
      FROM entra_users u WHERE u.tenant_id = $1 AND u.removed IS NULL) u
CROSS JOIN LATERAL (VALUES
    ('user_types', u.user_type, lower(u.user_type)),
    ('office_locations', u.office_location, lower(u.office_location)),
    ('departments', u.department, lower(u.department)),
    ('domains', u.mail_domain, u.mail_domain),
    ('domains', u.upn_domain, CASE WHEN u.upn_domain IS DISTINCT FROM u.mail_domain THEN u.upn_domain END)
) AS v(section, value, k)
WHERE v.k IS NOT NULL AND v.k <> ''
GROUP BY v.section, v.k
ORDER BY v.section, count DESC, value
"""

# Each group's users, transitively: the closure of nested groups, then the distinct (group, user) pairs
# counted by hash aggregates.
_OPTION_GROUPS_SQL = """
WITH RECURSIVE closure(root, id) AS (
    SELECT g.id, g.id FROM entra_groups g WHERE g.tenant_id = $1 AND g.removed IS NULL
    UNION
    SELECT c.root, m.member_id FROM closure c
    JOIN entra_group_members m ON m.tenant_id = $1 AND m.group_id = c.id AND m.member_type = 'group'
),
members AS (
    SELECT DISTINCT c.root, m.member_id FROM closure c
    JOIN entra_group_members m ON m.tenant_id = $1 AND m.group_id = c.id AND m.member_type = 'user'
    JOIN entra_users u ON u.tenant_id = $1 AND u.id = m.member_id AND u.removed IS NULL
),
counts AS (SELECT root, count(*) AS count FROM members GROUP BY root)
SELECT g.id, g.display_name AS name, coalesce(n.count, 0) AS count
FROM entra_groups g LEFT JOIN counts n ON n.root = g.id
WHERE g.tenant_id = $1 AND g.removed IS NULL
ORDER BY count DESC, g.display_name, g.id
"""

# The kept value counts (migration 0009), in the order the from-scratch SQL gives.
_OPTION_FACETS_SQL = """
SELECT section, coalesce(value, key) AS value, count FROM mirror_facets
WHERE tenant_id = $1 AND count > 0 ORDER BY section, count DESC, value
"""


async def _value_counts(conn: Conn, tenant_id: str) -> list[Row]:
    """The kept value counts, with the `total` row. A bulk mirror write (migration 0011: a statement of more than
    500 users, as a full listing writes) only marked them stale; the first read after it recounts them once
    from scratch, holding the tenant's counts lock (so every write the recount replaces has committed). When a
    writer holds that lock now, the counts are computed from scratch for this read only."""
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM mirror_facets_stale WHERE tenant_id = $1)", tenant_id):
        return list(await conn.fetch(_OPTION_FACETS_SQL, tenant_id))
    async with conn.transaction():  # read committed: each statement after the lock sees what committed before it
        if await conn.fetchval("SELECT pg_try_advisory_xact_lock(mirror_facets_lock_key($1))", tenant_id):
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM mirror_facets_stale WHERE tenant_id = $1)",
                                   tenant_id):
                await conn.execute("SELECT mirror_facets_recount($1)", tenant_id)
            return list(await conn.fetch(_OPTION_FACETS_SQL, tenant_id))
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        total = await conn.fetchval(
            "SELECT count(*) FROM entra_users WHERE tenant_id = $1 AND removed IS NULL", tenant_id)
        values = await conn.fetch(_OPTION_VALUES_SQL, tenant_id)
    return [{"section": "total", "value": "", "count": total}, *values]


async def _group_counts(conn: Conn, tenant_id: str) -> list[dict[str, Any]]:
    """Each group's transitive user count: kept in mirror_group_counts, recounted when the memberships' version
    moved since. The recount reads one snapshot (repeatable read) with the version it belongs to; it is stored
    only if no newer count was stored meanwhile, so a slow recount never overwrites a fresher one."""
    state = await conn.fetchrow(
        "SELECT version, counted_version FROM mirror_group_count_state WHERE tenant_id = $1", tenant_id)
    if state is not None and state["counted_version"] >= state["version"]:
        rows = await conn.fetch(
            "SELECT g.id, g.display_name AS name, coalesce(c.count, 0) AS count FROM entra_groups g"
            " LEFT JOIN mirror_group_counts c ON c.tenant_id = g.tenant_id AND c.group_id = g.id"
            " WHERE g.tenant_id = $1 AND g.removed IS NULL ORDER BY count DESC, g.display_name, g.id", tenant_id)
        return [_record(r) for r in rows]
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        version = await conn.fetchval(
            "SELECT version FROM mirror_group_count_state WHERE tenant_id = $1", tenant_id)
        rows = await conn.fetch(_OPTION_GROUPS_SQL, tenant_id)
    if version is not None:
        async with conn.transaction():
            newer = await conn.fetchval(
                "UPDATE mirror_group_count_state SET counted_version = $2 WHERE tenant_id = $1"
                " AND counted_version < $2 RETURNING true", tenant_id, version)
            if newer:
                await conn.execute("DELETE FROM mirror_group_counts WHERE tenant_id = $1", tenant_id)
                await conn.copy_records_to_table(
                    "mirror_group_counts", records=[(tenant_id, r["id"], r["count"]) for r in rows if r["count"]],
                    columns=("tenant_id", "group_id", "count"))
    return [_record(r) for r in rows]


class AdminStore:
    """The admin API's view of PostgreSQL. Stateless apart from the pool it is given."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def ping(self) -> None:
        await self._pool.fetchval("SELECT 1")

    # ---- Microsoft tenants --------------------------------------------------------------------------------

    async def list_microsoft_tenants(self) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            "SELECT m.tenant_id, m.display_name, m.client_id, m.default_domain,"
            " m.capabilities::text AS capabilities, m.created_at, m.updated_at,"
            " (SELECT p.id FROM psa_tenants p WHERE p.microsoft_tenant_id = m.tenant_id LIMIT 1)"
            "   AS psa_tenant_id"
            " FROM microsoft_tenants m ORDER BY m.display_name, m.tenant_id"
        )
        return [_record(r, json_fields=("capabilities",)) for r in rows]

    async def tenant_sync_status(self, tenant_id: str) -> dict[str, Any]:
        """The real-time state of one tenant: subscriptions (expiry, last notification), last delta, last
        full resync, last error. Times are when the worker processed the work."""
        async with self._pool.acquire() as conn:
            if not await conn.fetchval("SELECT 1 FROM microsoft_tenants WHERE tenant_id = $1", tenant_id):
                raise NotFound(f"no Microsoft tenant {tenant_id}")
            status = await conn.fetchrow(
                "SELECT last_delta_at, last_full_resync_at, last_notification_at, last_error, updated_at,"
                " last_resync_drift::text AS last_resync_drift FROM tenant_sync_status WHERE tenant_id = $1",
                tenant_id,
            )
            subs = await conn.fetch(
                "SELECT id, resource, expires_at, last_notification_at, renewed_at, created_at"
                " FROM graph_subscriptions WHERE tenant_id = $1 ORDER BY resource, id", tenant_id,
            )
        empty = dict.fromkeys(("last_delta_at", "last_full_resync_at", "last_notification_at", "last_error",
                               "updated_at", "last_resync_drift"))
        return {"tenant_id": tenant_id, **(_record(status, json_fields=("last_resync_drift",)) if status else empty),
                "subscriptions": [_record(r) for r in subs]}

    async def get_microsoft_tenant(self, tenant_id: str) -> dict[str, Any]:
        tenant = next((t for t in await self.list_microsoft_tenants() if t["tenant_id"] == tenant_id), None)
        if tenant is None:
            raise NotFound(f"no Microsoft tenant {tenant_id}")
        return tenant

    async def require_unregistered(self, tenant_id: str) -> None:
        """Conflict when the tenant is registered already (checked before its credential is tested)."""
        if await self._pool.fetchval("SELECT 1 FROM microsoft_tenants WHERE tenant_id = $1", tenant_id):
            raise Conflict(f"Microsoft tenant {tenant_id} is already registered")

    async def microsoft_tenant_credential(self, tenant_id: str) -> TenantCredentials:
        creds = await _one(
            self._pool, f"Microsoft tenant {tenant_id}",
            "SELECT tenant_id, client_id, client_secret FROM microsoft_tenants WHERE tenant_id = $1", tenant_id,
        )
        return TenantCredentials(creds["tenant_id"], creds["client_id"], creds["client_secret"])

    async def update_microsoft_tenant(
        self, tenant_id: str, *, display_name: str | None, client_id: str, client_secret: str,
    ) -> dict[str, Any]:
        """Store a changed name or (tested) credential; the worker reads it at its next unit of work."""
        updated = await self._pool.fetchval(
            "UPDATE microsoft_tenants SET display_name = coalesce($2, display_name), client_id = $3,"
            " client_secret = $4, updated_at = now() WHERE tenant_id = $1 RETURNING 1",
            tenant_id, display_name, client_id, client_secret,
        )
        if not updated:
            raise NotFound(f"no Microsoft tenant {tenant_id}")
        return await self.get_microsoft_tenant(tenant_id)

    async def removable_microsoft_tenant(self, tenant_id: str) -> tuple[TenantCredentials, list[str]]:
        """The credential and recorded subscription ids of a tenant that may be removed (NotFound, or
        Conflict while a PSA tenant maps it)."""
        creds = await self.microsoft_tenant_credential(tenant_id)
        await _require_unmapped(self._pool, tenant_id)
        ids = await self._pool.fetch("SELECT id FROM graph_subscriptions WHERE tenant_id = $1", tenant_id)
        return creds, [r["id"] for r in ids]

    async def delete_microsoft_tenant(self, tenant_id: str) -> dict[str, int]:
        """Remove an unmapped tenant with its mirror, delta links, subscriptions and status; returns the rows
        removed per table. End Users, runs and the journal are product data and stay (they were stopped when
        the tenant was unmapped). Conflict while mapped, or while the worker is doing this tenant's work (its
        advisory locks are tried, never waited for: the operator retries in a moment)."""
        async with self._pool.acquire() as conn, conn.transaction():
            found = await conn.fetchval(
                "SELECT 1 FROM microsoft_tenants WHERE tenant_id = $1 FOR UPDATE", tenant_id
            )
            if not found:
                raise NotFound(f"no Microsoft tenant {tenant_id}")
            await _require_unmapped(conn, tenant_id)
            for lock in (tenant_id, subscriptions_lock(tenant_id)):
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", tenant_lock_key(lock)):
                    raise Conflict(f"the worker is doing work of Microsoft tenant {tenant_id}; retry in a moment")
            removed: dict[str, int] = {}
            for table in _TENANT_TABLES:
                status = await conn.execute(f"DELETE FROM {table} WHERE tenant_id = $1", tenant_id)
                removed[table] = int(status.split()[-1])
            await conn.execute("DELETE FROM microsoft_tenants WHERE tenant_id = $1", tenant_id)
        return removed

    async def create_microsoft_tenant(
        self, *, tenant_id: str, display_name: str, client_id: str, client_secret: str,
        default_domain: str | None,
    ) -> dict[str, Any]:
        try:
            await self._pool.execute(
                "INSERT INTO microsoft_tenants (tenant_id, display_name, client_id, client_secret,"
                " default_domain) VALUES ($1, $2, $3, $4, $5)",
                tenant_id, display_name, client_id, client_secret, default_domain,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"Microsoft tenant {tenant_id} is already registered") from None
        return await self.get_microsoft_tenant(tenant_id)

    # ---- PSA tenants ---------------------------------------------------------------------------------------

    async def list_psa_tenants(self) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(_PSA_SELECT + " ORDER BY p.name")
        return [_record(r) for r in rows]

    async def get_psa_tenant(self, psa_tenant_id: str) -> dict[str, Any]:
        return _record(await _one(self._pool, f"PSA tenant {psa_tenant_id}", _PSA_SELECT + " WHERE p.id = $1",
                                  psa_tenant_id))

    async def create_psa_tenant(self, name: str) -> dict[str, Any]:
        try:
            new_id = await self._pool.fetchval(
                "INSERT INTO psa_tenants (name) VALUES ($1) RETURNING id", name
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"a PSA tenant named {name!r} already exists") from None
        return await self.get_psa_tenant(str(new_id))

    async def map_psa_tenant(self, psa_tenant_id: str, microsoft_tenant_id: str) -> Outcome:
        """Map (or remap) a PSA tenant; End Users linked to a previous tenant stop being updated."""
        async with self._pool.acquire() as conn, conn.transaction():
            psa = await _lock_psa_tenant(conn, psa_tenant_id)
            await _require_microsoft_tenant(conn, microsoft_tenant_id)
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('psa-map:' || $1))", microsoft_tenant_id
            )
            other = await conn.fetchval(
                "SELECT name FROM psa_tenants WHERE microsoft_tenant_id = $1 AND id <> $2",
                microsoft_tenant_id, psa["id"],
            )
            if other is not None:
                raise Conflict(
                    f"Microsoft tenant {microsoft_tenant_id} is already mapped to PSA tenant {other!r}"
                )
            change = _NO_CHANGE
            if psa["microsoft_tenant_id"] != microsoft_tenant_id:
                change = await _remap(conn, psa=psa, new_tenant=microsoft_tenant_id)
        return change.with_body(await self.get_psa_tenant(psa_tenant_id))

    async def unmap_psa_tenant(self, psa_tenant_id: str) -> Outcome:
        """Unmap a PSA tenant; End Users linked to its Microsoft tenant stop being updated (kept)."""
        async with self._pool.acquire() as conn, conn.transaction():
            psa = await _lock_psa_tenant(conn, psa_tenant_id)
            change = _NO_CHANGE
            if psa["microsoft_tenant_id"] is not None:
                change = await _remap(conn, psa=psa, new_tenant=None)
        return change.with_body(await self.get_psa_tenant(psa_tenant_id))

    # ---- Organizations -------------------------------------------------------------------------------------

    async def list_organizations(self, *, psa_tenant_id: str | None = None) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            _ORG_SELECT + " WHERE $1::uuid IS NULL OR o.psa_tenant_id = $1 ORDER BY o.name, o.id",
            psa_tenant_id,
        )
        return [_record(r) for r in rows]

    async def get_organization(self, organization_id: str) -> dict[str, Any]:
        return _record(await _one(self._pool, f"Organization {organization_id}", _ORG_SELECT + " WHERE o.id = $1",
                                  organization_id))

    async def create_organization(self, *, name: str, psa_tenant_id: str) -> dict[str, Any]:
        async with self._pool.acquire() as conn, conn.transaction():
            await _require_psa_reference(conn, psa_tenant_id)
            new_id = await conn.fetchval(
                "INSERT INTO organizations (name, psa_tenant_id) VALUES ($1, $2) RETURNING id",
                name, psa_tenant_id,
            )
        return await self.get_organization(str(new_id))

    async def assign_organization(self, organization_id: str, psa_tenant_id: str) -> Outcome:
        """Re-assign an Organization to another PSA tenant; links to the old Microsoft tenant stop."""
        async with self._pool.acquire() as conn, conn.transaction():
            org = await _lock_organization(conn, organization_id)
            new_tenant = await _require_psa_reference(conn, psa_tenant_id)
            old_tenant = org["microsoft_tenant_id"]
            if old_tenant is not None and old_tenant != new_tenant:
                await hold_tenant_mapping(conn, old_tenant)
            await conn.execute(
                "UPDATE organizations SET psa_tenant_id = $2, updated_at = now() WHERE id = $1",
                org["id"], psa_tenant_id,
            )
            runs: list[Enqueued] = []
            marked = 0
            if old_tenant is not None and old_tenant != new_tenant:
                reason = f"Organization re-assigned; Microsoft tenant {old_tenant} no longer applies"
                marked = await _stop_old_tenant(
                    conn, org_ids=[org["id"]], tenant_id=old_tenant, reason=reason, action="reassign"
                )
            if new_tenant is not None and new_tenant != old_tenant:
                runs = await _queue_enabled(conn, org_ids=[org["id"]], tenant_id=new_tenant)
        stale = (old_tenant,) if old_tenant and old_tenant != new_tenant else ()
        return Outcome(
            body=await self.get_organization(organization_id), runs=tuple(runs), stale_tenants=stale,
            extra={"end_users_stopped": marked},
        )

    # ---- User sync -----------------------------------------------------------------------------------------

    async def get_user_sync(self, organization_id: str) -> dict[str, Any]:
        org = await self.get_organization(organization_id)
        row = await self._pool.fetchrow(
            "SELECT status, filters::text AS filters, enabled_at, disabled_at, updated_at"
            " FROM org_user_syncs WHERE organization_id = $1", organization_id,
        )
        in_progress = await self._pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM sync_runs WHERE organization_id = $1"
            " AND status IN ('queued', 'running'))", organization_id,
        )
        last = await self._pool.fetchrow(
            _RUN_SELECT + " WHERE organization_id = $1 ORDER BY requested_at DESC, id LIMIT 1",
            organization_id,
        )
        sync = _record(row, json_fields=("filters",)) if row else {}
        return {
            "organization_id": organization_id,
            "status": sync.get("status", "not_set_up"),
            "filters": sync.get("filters"),
            "in_progress": bool(in_progress),
            "last_run": _run(last) if last else None,
            "microsoft_tenant_id": org["microsoft_tenant_id"],
            "enabled_at": sync.get("enabled_at"),
            "disabled_at": sync.get("disabled_at"),
            **await sync_status.attention(self._pool, organization_id, org["microsoft_tenant_id"]),
        }

    async def enable_user_sync(self, organization_id: str, filters_json: dict[str, Any]) -> Enqueued:
        """Enable or edit an Organization's user sync and queue its initial sync run."""
        async with self._pool.acquire() as conn, conn.transaction():
            org = await _lock_organization(conn, organization_id)
            tenant_id = _require_mapped(org)
            await conn.execute(
                "INSERT INTO org_user_syncs (organization_id, status, filters, enabled_at)"
                " VALUES ($1, 'enabled', $2::text::jsonb, now())"
                " ON CONFLICT (organization_id) DO UPDATE SET status = 'enabled', filters = EXCLUDED.filters,"
                "  enabled_at = CASE WHEN org_user_syncs.status = 'enabled' THEN org_user_syncs.enabled_at"
                "               ELSE now() END,"
                "  updated_at = now()",
                org["id"], _dumps(filters_json),
            )
            return await _queue_run(conn, organization_id=org["id"], tenant_id=tenant_id)

    async def queue_org_sync(self, organization_id: str) -> Enqueued:
        """Run now: queue an org-sync with the current filters (the sync must be enabled)."""
        async with self._pool.acquire() as conn, conn.transaction():
            org = await _lock_organization(conn, organization_id)
            if org["user_sync_status"] != "enabled":
                raise Conflict("user sync is not enabled for this Organization")
            tenant_id = _require_mapped(org)
            return await _queue_run(conn, organization_id=org["id"], tenant_id=tenant_id)

    async def queue_confirmation(self, run_id: str) -> Enqueued:
        """Queue an org-sync that applies the deactivations a held run kept back (the operator confirmed)."""
        async with self._pool.acquire() as conn, conn.transaction():
            held = await _one(conn, f"sync run {run_id}",
                              "SELECT status, organization_id, tenant_id FROM sync_runs WHERE id = $1 FOR UPDATE",
                              run_id)
            if held["status"] != "held" or held["organization_id"] is None:
                raise Conflict(f"only a held Organization run can be confirmed; this one is {held['status']}")
            org = await _lock_organization(conn, held["organization_id"])
            if org["user_sync_status"] != "enabled":
                raise Conflict("user sync is not enabled for this Organization")
            if _require_mapped(org) != held["tenant_id"]:
                raise Conflict("the Organization no longer syncs from the Microsoft tenant of this run")
            return await _queue_run(conn, organization_id=org["id"], tenant_id=held["tenant_id"])

    async def disable_user_sync(self, organization_id: str) -> Outcome:
        """Disable: every linked End User of the Organization stops being updated; nobody is deleted."""
        async with self._pool.acquire() as conn, conn.transaction():
            org = await _lock_organization(conn, organization_id)
            if org["user_sync_status"] == "not_set_up":
                raise Conflict("user sync is not set up for this Organization")
            if org["microsoft_tenant_id"] is not None:
                await hold_tenant_mapping(conn, org["microsoft_tenant_id"])
            await conn.execute(
                "UPDATE org_user_syncs SET status = 'disabled', updated_at = now(),"
                " disabled_at = CASE WHEN status = 'enabled' THEN now() ELSE disabled_at END"
                " WHERE organization_id = $1", org["id"],
            )
            # The core decides (deactivated leavers and excluded End Users keep their state); the End User
            # write path journals it.
            marked = await end_users.stop_updating(
                conn, organization_ids=[org["id"]], tenant_id=None, reason=REASON_SYNC_DISABLED,
                action="disable_sync")
        tenant = org["microsoft_tenant_id"]
        return Outcome(
            body=await self.get_user_sync(organization_id), stale_tenants=(tenant,) if tenant else (),
            extra={"end_users_stopped": marked},
        )

    async def fail_run(self, run_id: str, error: str) -> None:
        """Mark a queued run failed (its command could not be enqueued)."""
        await self._pool.execute(
            "UPDATE sync_runs SET status = 'failed', error = $2, finished_at = now()"
            " WHERE id = $1 AND status = 'queued'", run_id, error,
        )

    async def mapped_tenant(self, organization_id: str) -> str:
        """The Microsoft tenant an Organization syncs from; Conflict when its PSA tenant is unmapped."""
        org = await self.get_organization(organization_id)
        return _require_mapped(org)

    async def options(self, organization_id: str) -> dict[str, Any]:
        """Each filter section's values seen in the Organization's tenant mirror, with user counts.

        Read from the counts kept as the mirror is written (migration 0009: `mirror_facets`, recounted once after
        a bulk write, migration 0011; and the group counts recomputed once per change of memberships), so opening
        the set-up dialog reads a few hundred rows.
        """
        tenant_id = await self.mapped_tenant(organization_id)
        async with self._pool.acquire() as conn:
            values = await _value_counts(conn, tenant_id)
            groups = await _group_counts(conn, tenant_id)
        out: dict[str, Any] = {
            "microsoft_tenant_id": tenant_id, "total_users": 0,
            "user_types": [], "domains": [], "office_locations": [], "departments": [],
        }
        for r in values:
            if r["section"] == "total":
                out["total_users"] = r["count"]
            else:
                out[r["section"]].append({"value": r["value"], "count": r["count"]})
        out["groups"] = groups
        return out

    async def options_from_scratch(self, organization_id: str) -> dict[str, Any]:
        """`options` counted over the mirror now (what the kept counts must equal; tests and checks)."""
        tenant_id = await self.mapped_tenant(organization_id)
        async with self._pool.acquire() as conn:
            values = await conn.fetch(_OPTION_VALUES_SQL, tenant_id)
            groups = await conn.fetch(_OPTION_GROUPS_SQL, tenant_id)
            total = await conn.fetchval(
                "SELECT count(*) FROM entra_users WHERE tenant_id = $1 AND removed IS NULL", tenant_id
            )
        out: dict[str, Any] = {
            "microsoft_tenant_id": tenant_id, "total_users": total,
            "user_types": [], "domains": [], "office_locations": [], "departments": [],
        }
        for r in values:
            out[r["section"]].append({"value": r["value"], "count": r["count"]})
        out["groups"] = [_record(r) for r in groups]
        return out

    @property
    def pool(self) -> Pool:
        """The pool this store runs on (the preview, an engine function, reads through it)."""
        return self._pool

    # ---- End Users -----------------------------------------------------------------------------------------

    async def list_end_users(
        self, organization_id: str, *, email: str | None = None, sync_state: str | None = None,
        q: str | None = None, limit: int = 100, offset: int = 0,
    ) -> dict[str, Any]:
        await self.get_organization(organization_id)
        pattern = None if not q else "%" + _escape_like(q) + "%"
        where = (
            " WHERE e.organization_id = $1 AND ($2::text IS NULL OR lower(e.email) = lower($2))"
            " AND ($3::text IS NULL OR e.sync_state = $3)"
            " AND ($4::text IS NULL OR e.first_name ILIKE $4 OR e.last_name ILIKE $4 OR e.email ILIKE $4"
            "      OR concat_ws(' ', e.first_name, e.last_name) ILIKE $4)"
        )
        args = (organization_id, email, sync_state, pattern)
        async with self._pool.acquire() as conn:
            total = await conn.fetchval("SELECT count(*) FROM end_users e" + where, *args)
            rows = await conn.fetch(
                _END_USER_SELECT + where + " ORDER BY lower(e.last_name), lower(e.first_name), e.id"
                " LIMIT $5 OFFSET $6", *args, limit, offset,
            )
        return {"items": [_end_user(r) for r in rows], "total": total, "limit": limit, "offset": offset}

    async def get_end_user(self, end_user_id: str) -> dict[str, Any]:
        return _end_user(await _one(self._pool, f"End User {end_user_id}", _END_USER_SELECT + " WHERE e.id = $1",
                                    end_user_id))

    async def create_manual_end_user(
        self, organization_id: str, fields: Mapping[str, str | None]
    ) -> dict[str, Any]:
        await self.get_organization(organization_id)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                new_id = await end_users.create_manual(conn, organization_id, fields)
        except asyncpg.UniqueViolationError:
            raise Conflict(
                f"an End User with email {fields.get('email')} already exists in this Organization"
            ) from None
        return await self.get_end_user(str(new_id))

    # ---- Assets --------------------------------------------------------------------------------------------

    async def list_assets(self, organization_id: str) -> list[dict[str, Any]]:
        await self.get_organization(organization_id)
        rows = await self._pool.fetch(
            "SELECT id, organization_id, name, mac_addresses, created_at FROM assets"
            " WHERE organization_id = $1 ORDER BY name, id", organization_id,
        )
        return [_record(r) for r in rows]

    async def create_asset(self, organization_id: str, *, name: str, macs: Sequence[str]) -> dict[str, Any]:
        """Create an Asset and link it at once to synced End Users whose devices carry one of its MACs."""
        async with self._pool.acquire() as conn, conn.transaction():
            org = await _lock_organization(conn, organization_id)
            row = await conn.fetchrow(
                "INSERT INTO assets (organization_id, name, mac_addresses) VALUES ($1, $2, $3)"
                " RETURNING id, organization_id, name, mac_addresses, created_at",
                org["id"], name, list(macs),
            )
            assert row is not None
            await conn.execute(
                "INSERT INTO end_user_assets (end_user_id, asset_id)"
                " SELECT e.id, $2 FROM end_users e"
                " JOIN entra_user_enrichment u ON u.tenant_id = e.entra_tenant_id AND u.id = e.entra_object_id"
                " WHERE e.organization_id = $1 AND e.entra_tenant_id = $3 AND e.sync_state = 'synced'"
                "   AND u.device_macs && $4::text[]"
                " ON CONFLICT DO NOTHING",
                org["id"], row["id"], org["microsoft_tenant_id"], list(macs),
            )
        return _record(row)

    # ---- Sync runs -----------------------------------------------------------------------------------------

    async def list_runs(
        self, *, organization_id: str | None = None, tenant_id: str | None = None, limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            _RUN_SELECT + " WHERE ($1::uuid IS NULL OR organization_id = $1)"
            " AND ($2::text IS NULL OR tenant_id = $2) ORDER BY requested_at DESC, id LIMIT $3 OFFSET $4",
            organization_id, tenant_id, limit, offset,
        )
        return [_run(r) for r in rows]

    async def get_run(self, run_id: str) -> dict[str, Any]:
        return _run(await _one(self._pool, f"sync run {run_id}", _RUN_SELECT + " WHERE id = $1", run_id))

    # ---- Review items --------------------------------------------------------------------------------------

    async def list_review_items(
        self, *, organization_id: str | None = None, status: str | None = "open"
    ) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            _REVIEW_SELECT + " WHERE ($1::uuid IS NULL OR r.organization_id = $1)"
            " AND ($2::text IS NULL OR r.status = $2) ORDER BY r.created_at, r.id",
            organization_id, status,
        )
        return [_review(r) for r in rows]

    async def get_review_item(self, review_id: str) -> dict[str, Any]:
        return _review(await _one(self._pool, f"review item {review_id}", _REVIEW_SELECT + " WHERE r.id = $1",
                                  review_id))

    async def review_mirror_user(self, review_id: str) -> MirrorUser | None:
        """The Entra user a review item is about, as the mirror holds it (None when gone)."""
        review = await self.get_review_item(review_id)
        async with self._pool.acquire() as conn:
            users = await load_mirror_users(
                cast(asyncpg.Connection, conn), review["entra_tenant_id"], [review["entra_object_id"]]
            )
        return users[0] if users else None

    async def resolve_review_link(self, review_id: str, end_user_id: str, *, email: str | None = None) -> Outcome:
        """Link an existing End User of the Organization to the review's Entra user, whose End User email is
        `email`. Refused when another End User holds that email: the sync could never give it to the linked
        one, and would open a review again at every change."""
        async with self._pool.acquire() as conn, conn.transaction():
            review, org = await _lock_open_review(conn, review_id)
            end_user = await conn.fetchrow(
                "SELECT id, entra_tenant_id, entra_object_id, sync_state FROM end_users"
                " WHERE id = $1 AND organization_id = $2 FOR UPDATE", end_user_id, review["organization_id"],
            )
            if end_user is None:
                raise InvalidReference("end_user_id", "no End User with this id in the review's Organization")
            target = (review["entra_tenant_id"], review["entra_object_id"])
            if end_user["entra_object_id"] is not None and (
                end_user["entra_tenant_id"], end_user["entra_object_id"]
            ) != target:
                raise Conflict("that End User is already linked to another Entra user")
            await _refuse_held_email(conn, review["organization_id"], email, besides=end_user["id"])
            state, reason = _linked_state(org)
            try:
                await end_users.link(conn, end_user["id"], tenant_id=target[0], object_id=target[1], state=state,
                                     reason=reason, old_state=end_user["sync_state"])
            except asyncpg.UniqueViolationError:
                raise Conflict(_ALREADY_LINKED) from None
            return await _finish_review(
                conn, review=review, org=org, end_user_id=str(end_user["id"]), action="link"
            )

    async def resolve_review_create(self, review_id: str, fields: Mapping[str, str | None]) -> Outcome:
        """Create a linked End User for the review's Entra user. Refused (409 naming the holder) when its email
        is taken: created without it, the End User would never be updated and every sync would open a new
        review about it."""
        async with self._pool.acquire() as conn, conn.transaction():
            review, org = await _lock_open_review(conn, review_id)
            values = {f: fields.get(f) for f in END_USER_FIELDS}
            await _refuse_held_email(conn, review["organization_id"], values["email"], besides=None)
            state, reason = _linked_state(org)
            try:
                new_id = await end_users.create_linked(
                    conn, review["organization_id"], tenant_id=review["entra_tenant_id"],
                    object_id=review["entra_object_id"], state=state, reason=reason, fields=values)
            except asyncpg.UniqueViolationError:
                raise Conflict(_ALREADY_LINKED) from None
            return await _finish_review(
                conn, review=review, org=org, end_user_id=str(new_id), action="create"
            )


# ---- helpers that run inside a caller's transaction ------------------------------------------------------

async def _one(on: Conn | Pool, what: str, sql: str, *args: Any) -> asyncpg.Record:
    """The row `sql` selects, or NotFound("no <what>")."""
    row = await on.fetchrow(sql, *args)
    if row is None:
        raise NotFound(f"no {what}")
    return row


async def _lock_psa_tenant(conn: Conn, psa_tenant_id: str) -> asyncpg.Record:
    return await _one(
        conn, f"PSA tenant {psa_tenant_id}",
        "SELECT id, name, microsoft_tenant_id, created_at, updated_at FROM psa_tenants WHERE id = $1 FOR UPDATE",
        psa_tenant_id,
    )


async def _lock_organization(conn: Conn, organization_id: str) -> asyncpg.Record:
    # NO KEY UPDATE, as an UPDATE of its columns takes: the worker's End User writes key-share the row (their
    # foreign key) while holding the tenant's mapping lock, which an operator's change then waits for.
    return await _one(conn, f"Organization {organization_id}", _ORG_SELECT + " WHERE o.id = $1 FOR NO KEY UPDATE OF o",
                      organization_id)


async def _require_microsoft_tenant(conn: Conn, tenant_id: str) -> None:
    # Key-share locked: a concurrent removal of the tenant waits for this mapping and then refuses (409).
    exists = await conn.fetchval(
        "SELECT 1 FROM microsoft_tenants WHERE tenant_id = $1 FOR KEY SHARE", tenant_id
    )
    if not exists:
        raise InvalidReference("microsoft_tenant_id", f"no Microsoft tenant {tenant_id} is registered")


async def _require_unmapped(conn: Conn | asyncpg.Pool, tenant_id: str) -> None:
    mapped = await conn.fetchval(
        "SELECT name FROM psa_tenants WHERE microsoft_tenant_id = $1 ORDER BY name LIMIT 1", tenant_id
    )
    if mapped is not None:
        raise Conflict(f"Microsoft tenant {tenant_id} is mapped to PSA tenant {mapped!r}; unmap it first")


async def _require_psa_reference(conn: Conn, psa_tenant_id: str) -> str | None:
    """The Microsoft tenant of an existing PSA tenant named in a body (InvalidReference when none)."""
    row = await conn.fetchrow("SELECT microsoft_tenant_id FROM psa_tenants WHERE id = $1", psa_tenant_id)
    if row is None:
        raise InvalidReference("psa_tenant_id", f"no PSA tenant {psa_tenant_id}")
    tenant: str | None = row["microsoft_tenant_id"]
    return tenant


def _require_mapped(org: Row) -> str:
    tenant: str | None = org["microsoft_tenant_id"]
    if tenant is None:
        raise Conflict(
            f"PSA tenant {org['psa_tenant_name']!r} of this Organization is not mapped to a Microsoft tenant"
        )
    return tenant


async def _remap(conn: Conn, *, psa: asyncpg.Record, new_tenant: str | None) -> Outcome:
    """Point a PSA tenant at `new_tenant`: stop links to the old one, queue syncs from the new one."""
    old = psa["microsoft_tenant_id"]
    if old is not None:
        await hold_tenant_mapping(conn, old)
    await conn.execute(
        "UPDATE psa_tenants SET microsoft_tenant_id = $2, updated_at = now() WHERE id = $1",
        psa["id"], new_tenant,
    )
    orgs = await conn.fetch("SELECT id FROM organizations WHERE psa_tenant_id = $1", psa["id"])
    org_ids = [r["id"] for r in orgs]
    marked = 0
    if old is not None:
        reason = f"Microsoft tenant {old} unmapped from PSA tenant {psa['name']}"
        action = "remap" if new_tenant else "unmap"
        marked = await _stop_old_tenant(conn, org_ids=org_ids, tenant_id=old, reason=reason, action=action)
    runs = await _queue_enabled(conn, org_ids=org_ids, tenant_id=new_tenant) if new_tenant else []
    return Outcome(
        body={}, runs=tuple(runs), stale_tenants=(old,) if old else (), extra={"end_users_stopped": marked}
    )


async def _queue_run(conn: Conn, *, organization_id: Any, tenant_id: str) -> Enqueued:
    run_id = await conn.fetchval(
        "INSERT INTO sync_runs (kind, organization_id, tenant_id, status)"
        " VALUES ('org-sync', $1, $2, 'queued') RETURNING id", organization_id, tenant_id,
    )
    return Enqueued(run_id=str(run_id), tenant_id=tenant_id, organization_id=str(organization_id))


async def _queue_enabled(conn: Conn, *, org_ids: Sequence[Any], tenant_id: str) -> list[Enqueued]:
    """Queue an org-sync for each of these Organizations whose user sync is enabled."""
    rows = await conn.fetch(
        "INSERT INTO sync_runs (kind, organization_id, tenant_id, status)"
        " SELECT 'org-sync', s.organization_id, $2, 'queued' FROM org_user_syncs s"
        " WHERE s.organization_id = ANY ($1::uuid[]) AND s.status = 'enabled'"
        " RETURNING id, organization_id", list(org_ids), tenant_id,
    )
    return [
        Enqueued(run_id=str(r["id"]), tenant_id=tenant_id, organization_id=str(r["organization_id"]))
        for r in rows
    ]


async def _stop_old_tenant(
    conn: Conn, *, org_ids: Sequence[Any], tenant_id: str, reason: str, action: str
) -> int:
    """End Users of these Organizations linked to `tenant_id` stop being updated (deactivated and excluded
    ones keep their state, as the core decides); open reviews close."""
    count = await end_users.stop_updating(
        conn, organization_ids=org_ids, tenant_id=tenant_id, reason=reason, action=action)
    await conn.execute(
        "UPDATE review_items SET status = 'resolved', resolved_at = now(), resolution = $3::text::jsonb"
        " WHERE organization_id = ANY ($1::uuid[]) AND entra_tenant_id = $2 AND status = 'open'",
        list(org_ids), tenant_id, _dumps({"action": "dismissed", "reason": reason}),
    )
    return int(count)


async def _lock_open_review(conn: Conn, review_id: str) -> tuple[asyncpg.Record, asyncpg.Record]:
    review = await _one(
        conn, f"review item {review_id}",
        "SELECT id, organization_id, entra_tenant_id, entra_object_id, status FROM review_items"
        " WHERE id = $1 FOR UPDATE", review_id,
    )
    if review["status"] != "open":
        raise Conflict("this review item is already resolved")
    org = await _lock_organization(conn, review["organization_id"])
    if org["microsoft_tenant_id"] != review["entra_tenant_id"]:
        raise Conflict(
            f"the review's Microsoft tenant {review['entra_tenant_id']} is no longer mapped"
            " to the Organization"
        )
    return review, org


async def _refuse_held_email(conn: Conn, organization_id: Any, email: str | None, *, besides: Any) -> None:
    """Conflict naming the End User (other than `besides`) that holds `email` in the Organization, if any."""
    if not email:
        return
    holder = await conn.fetchrow(
        "SELECT id, first_name, last_name, email, sync_state, entra_object_id FROM end_users"
        " WHERE organization_id = $1 AND lower(email) = lower($2) AND ($3::uuid IS NULL OR id <> $3)",
        organization_id, email.strip(), besides,
    )
    if holder is None:
        return
    name = " ".join(filter(None, (holder["first_name"], holder["last_name"]))) or "(no name)"
    linked = f", linked to Entra user {holder['entra_object_id']}" if holder["entra_object_id"] else ""
    raise Conflict(
        f"email {email} is held by End User {holder['id']} ({name}, {holder['sync_state']}{linked}): link that"
        " End User instead, or change its email first"
    )


def _linked_state(org: Row) -> tuple[str, str | None]:
    if org["user_sync_status"] == "enabled":
        return "synced", "linked by an operator"
    return "sync_disabled", REASON_SYNC_DISABLED


async def _finish_review(
    conn: Conn, *, review: asyncpg.Record, org: asyncpg.Record, end_user_id: str, action: str
) -> Outcome:
    await conn.execute(
        "UPDATE review_items SET status = 'resolved', resolved_at = now(), resolution = $2::text::jsonb"
        " WHERE id = $1", review["id"], _dumps({"action": action, "end_user_id": end_user_id}),
    )
    runs: list[Enqueued] = []
    if org["user_sync_status"] == "enabled":
        runs.append(await _queue_run(conn, organization_id=org["id"], tenant_id=review["entra_tenant_id"]))
    return Outcome(
        body={"review_item_id": str(review["id"]), "action": action, "end_user_id": end_user_id},
        runs=tuple(runs),
    )


def _end_user(row: Row) -> dict[str, Any]:
    return _record(row, json_fields=("microsoft", "assets", "leaver"))


def _run(row: Row) -> dict[str, Any]:
    return _record(row, json_fields=("counts", "warnings"))


def _review(row: Row) -> dict[str, Any]:
    out = _record(row, json_fields=("resolution", "entra_user", "candidates"))
    out["candidate_ids"] = [str(c) for c in row["candidate_ids"]]
    return out
