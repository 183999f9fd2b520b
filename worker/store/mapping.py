"""Configuration and mapping: PSA tenants, their Microsoft tenant, and Organizations.

A (re)mapping or re-assignment stops the End Users linked to the old Microsoft tenant (kept, no longer
updated; open review items close) and queues an `org-sync` from the new one for each Organization whose
user sync is enabled. Every change that touches several rows runs in one transaction; the caller publishes
the queued runs after the commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from worker.store import Conn, Pool, end_users
from worker.store.records import Conflict, InvalidReference, PoolQueries, Row, dumps, one, record
from worker.store.runs import NO_CHANGE, Enqueued, Outcome, queue_enabled
from worker.store.tenants import hold_tenant_mapping

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


async def organization(on: Conn | Pool, organization_id: str) -> dict[str, Any]:
    """One Organization with its PSA and Microsoft tenant and user sync status, or NotFound."""
    return record(await one(on, f"Organization {organization_id}", _ORG_SELECT + " WHERE o.id = $1",
                            organization_id))


async def mapped_tenant(on: Conn | Pool, organization_id: str) -> str:
    """The Microsoft tenant an Organization syncs from; Conflict when its PSA tenant is unmapped."""
    return require_mapped(await organization(on, organization_id))


class MappingQueries(PoolQueries):
    """PSA tenants and their mapping, Organizations and their PSA tenant."""

    async def list_psa_tenants(self) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(_PSA_SELECT + " ORDER BY p.name")
        return [record(r) for r in rows]

    async def get_psa_tenant(self, psa_tenant_id: str) -> dict[str, Any]:
        return record(await one(self._pool, f"PSA tenant {psa_tenant_id}", _PSA_SELECT + " WHERE p.id = $1",
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
            psa = await lock_psa_tenant(conn, psa_tenant_id)
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
            change = NO_CHANGE
            if psa["microsoft_tenant_id"] != microsoft_tenant_id:
                change = await _remap(conn, psa=psa, new_tenant=microsoft_tenant_id)
        return change.with_body(await self.get_psa_tenant(psa_tenant_id))

    async def unmap_psa_tenant(self, psa_tenant_id: str) -> Outcome:
        """Unmap a PSA tenant; End Users linked to its Microsoft tenant stop being updated (kept)."""
        async with self._pool.acquire() as conn, conn.transaction():
            psa = await lock_psa_tenant(conn, psa_tenant_id)
            change = NO_CHANGE
            if psa["microsoft_tenant_id"] is not None:
                change = await _remap(conn, psa=psa, new_tenant=None)
        return change.with_body(await self.get_psa_tenant(psa_tenant_id))

    async def list_organizations(self, *, psa_tenant_id: str | None = None) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            _ORG_SELECT + " WHERE $1::uuid IS NULL OR o.psa_tenant_id = $1 ORDER BY o.name, o.id",
            psa_tenant_id,
        )
        return [record(r) for r in rows]

    async def get_organization(self, organization_id: str) -> dict[str, Any]:
        return await organization(self._pool, organization_id)

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
            org = await lock_organization(conn, organization_id)
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
                runs = await queue_enabled(conn, org_ids=[org["id"]], tenant_id=new_tenant)
        stale = (old_tenant,) if old_tenant and old_tenant != new_tenant else ()
        return Outcome(
            body=await self.get_organization(organization_id), runs=tuple(runs), stale_tenants=stale,
            extra={"end_users_stopped": marked},
        )

    async def mapped_tenant(self, organization_id: str) -> str:
        """The Microsoft tenant an Organization syncs from; Conflict when its PSA tenant is unmapped."""
        return await mapped_tenant(self._pool, organization_id)


# ---- helpers that run inside a caller's transaction ------------------------------------------------------

async def lock_psa_tenant(conn: Conn, psa_tenant_id: str) -> asyncpg.Record:
    return await one(
        conn, f"PSA tenant {psa_tenant_id}",
        "SELECT id, name, microsoft_tenant_id, created_at, updated_at FROM psa_tenants WHERE id = $1 FOR UPDATE",
        psa_tenant_id,
    )


async def lock_organization(conn: Conn, organization_id: str) -> asyncpg.Record:
    # NO KEY UPDATE, as an UPDATE of its columns takes: the worker's End User writes key-share the row (their
    # foreign key) while holding the tenant's mapping lock, which an operator's change then waits for.
    return await one(conn, f"Organization {organization_id}", _ORG_SELECT + " WHERE o.id = $1 FOR NO KEY UPDATE OF o",
                      organization_id)


async def _require_microsoft_tenant(conn: Conn, tenant_id: str) -> None:
    # Key-share locked: a concurrent removal of the tenant waits for this mapping and then refuses (409).
    exists = await conn.fetchval(
        "SELECT 1 FROM microsoft_tenants WHERE tenant_id = $1 FOR KEY SHARE", tenant_id
    )
    if not exists:
        raise InvalidReference("microsoft_tenant_id", f"no Microsoft tenant {tenant_id} is registered")


async def require_unmapped(conn: Conn | asyncpg.Pool, tenant_id: str) -> None:
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


def require_mapped(org: Row) -> str:
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
    runs = await queue_enabled(conn, org_ids=org_ids, tenant_id=new_tenant) if new_tenant else []
    return Outcome(
        body={}, runs=tuple(runs), stale_tenants=(old,) if old else (), extra={"end_users_stopped": marked}
    )


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
        list(org_ids), tenant_id, dumps({"action": "dismissed", "reason": reason}),
    )
    return int(count)


