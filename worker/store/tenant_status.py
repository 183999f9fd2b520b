"""A Microsoft tenant's real-time sync state: its Graph subscriptions and the worker's last delta, full
resync, notification and error (`GET /microsoft-tenants/{id}/sync-status`)."""

from __future__ import annotations

from typing import Any

from worker.store.records import PoolQueries, one, record


class TenantStatusQueries(PoolQueries):
    """Subscriptions and tenant status."""

    async def tenant_sync_status(self, tenant_id: str) -> dict[str, Any]:
        """The real-time state of one tenant: subscriptions (expiry, last notification), last delta, last
        full resync, last error. Times are when the worker processed the work."""
        async with self._pool.acquire() as conn:
            await one(conn, f"Microsoft tenant {tenant_id}", "SELECT 1 FROM microsoft_tenants WHERE tenant_id = $1",
                      tenant_id)
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
        return {"tenant_id": tenant_id, **(record(status, json_fields=("last_resync_drift",)) if status else empty),
                "subscriptions": [record(r) for r in subs]}
