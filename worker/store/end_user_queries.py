"""End Users and Assets as the admin API lists, reads and creates them. Operator decisions about one End
User (edit, lock, exclude, delete, undo) are `worker.store.end_user_actions`; every write goes through
`worker.store.end_users`, the one write path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from worker.store import end_users
from worker.store.mapping import lock_organization, organization
from worker.store.records import Conflict, PoolQueries, Row, escape_like, one, record

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


def end_user_record(row: Row) -> dict[str, Any]:
    return record(row, json_fields=("microsoft", "assets", "leaver"))


class EndUserQueries(PoolQueries):
    """An Organization's End Users: listed (search, state, page), one by id, a manual one created."""

    async def list_end_users(
        self, organization_id: str, *, email: str | None = None, sync_state: str | None = None,
        q: str | None = None, limit: int = 100, offset: int = 0,
    ) -> dict[str, Any]:
        await organization(self._pool, organization_id)
        pattern = None if not q else "%" + escape_like(q) + "%"
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
        return {"items": [end_user_record(r) for r in rows], "total": total, "limit": limit, "offset": offset}

    async def get_end_user(self, end_user_id: str) -> dict[str, Any]:
        return end_user_record(await one(self._pool, f"End User {end_user_id}", _END_USER_SELECT + " WHERE e.id = $1",
                                    end_user_id))

    async def create_manual_end_user(
        self, organization_id: str, fields: Mapping[str, str | None]
    ) -> dict[str, Any]:
        await organization(self._pool, organization_id)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                new_id = await end_users.create_manual(conn, organization_id, fields)
        except asyncpg.UniqueViolationError:
            raise Conflict(
                f"an End User with email {fields.get('email')} already exists in this Organization"
            ) from None
        return await self.get_end_user(str(new_id))


class AssetQueries(PoolQueries):
    """An Organization's Assets."""

    async def list_assets(self, organization_id: str) -> list[dict[str, Any]]:
        await organization(self._pool, organization_id)
        rows = await self._pool.fetch(
            "SELECT id, organization_id, name, mac_addresses, created_at FROM assets"
            " WHERE organization_id = $1 ORDER BY name, id", organization_id,
        )
        return [record(r) for r in rows]

    async def create_asset(self, organization_id: str, *, name: str, macs: Sequence[str]) -> dict[str, Any]:
        """Create an Asset and link it at once to synced End Users whose devices carry one of its MACs."""
        async with self._pool.acquire() as conn, conn.transaction():
            org = await lock_organization(conn, organization_id)
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
        return record(row)
