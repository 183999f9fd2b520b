"""SQL of a tenant's configuration as the sync reads it: its credential, the Organizations that sync from it
(with their filters, licence names, assets and exclusions), and the advisory locks that serialise its work.

Every function takes the connection it runs on, so the caller decides the transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from worker.core.model import Asset, Filters, OrgContext
from worker.credentials import TenantCredentials
from worker.store import Conn, end_users


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

