"""Registered Microsoft tenants: their credential, registration, change and removal.

Only the credential's test and the deletion of subscriptions in Graph are not here (`worker.admin.operations`
does them through `worker.graph`). Removing a tenant removes its mirror and sync state, never product data.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from worker.credentials import TenantCredentials
from worker.store.mapping import require_unmapped
from worker.store.records import Conflict, NotFound, PoolQueries, one, record
from worker.store.tenants import subscriptions_lock, tenant_lock_key

# Tables holding a Microsoft tenant's mirror and sync state (`tenant_id` column), removed with the tenant.
_TENANT_TABLES = (
    "entra_user_dirty", "entra_user_sign_ins", "entra_user_enrichment", "entra_group_members", "entra_groups",
    "entra_users", "subscribed_skus", "delta_links", "graph_subscriptions", "tenant_sync_status",
    "mirror_facets", "mirror_group_counts", "mirror_group_count_state", "tenant_notifications_hourly",
    "mirror_facets_stale",
)


class MicrosoftTenantQueries(PoolQueries):
    """Microsoft tenants: listed, read, registered, changed and removed."""

    async def list_microsoft_tenants(self) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            "SELECT m.tenant_id, m.display_name, m.client_id, m.default_domain,"
            " m.capabilities::text AS capabilities, m.created_at, m.updated_at,"
            " (SELECT p.id FROM psa_tenants p WHERE p.microsoft_tenant_id = m.tenant_id LIMIT 1)"
            "   AS psa_tenant_id"
            " FROM microsoft_tenants m ORDER BY m.display_name, m.tenant_id"
        )
        return [record(r, json_fields=("capabilities",)) for r in rows]

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
        creds = await one(
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
        await require_unmapped(self._pool, tenant_id)
        ids = await self._pool.fetch("SELECT id FROM graph_subscriptions WHERE tenant_id = $1", tenant_id)
        return creds, [r["id"] for r in ids]

    async def delete_microsoft_tenant(self, tenant_id: str) -> dict[str, int]:
        """Remove an unmapped tenant with its mirror, delta links, subscriptions and status; returns the rows
        removed per table. End Users, runs and the journal are product data and stay (they were stopped when
        the tenant was unmapped). Conflict while mapped, or while the worker is doing this tenant's work (its
        advisory locks are tried, never waited for: the operator retries in a moment)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await one(conn, f"Microsoft tenant {tenant_id}",
                      "SELECT 1 FROM microsoft_tenants WHERE tenant_id = $1 FOR UPDATE", tenant_id)
            await require_unmapped(conn, tenant_id)
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
