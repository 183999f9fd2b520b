"""An Organization's user sync: its status and filters, enabling, running now, confirming a held run,
disabling; and what needs an operator's attention in it.

`attention` gives the status endpoint's extra fields: `open_review_items` (review items waiting for a
decision), `held_run_id` (the run whose deactivations wait for a confirmation or a dismissal, at most one:
see `worker.store.holds`) and `last_error` (why the last run failed, else the error the Organization's
Microsoft tenant last reported, else None). The console's Organizations column (`worker.store.console`)
gives the same badges in one query.
"""

from __future__ import annotations

from typing import Any

from worker.store import Pool, end_users
from worker.store.mapping import lock_organization, organization, require_mapped
from worker.store.records import Conflict, PoolQueries, dumps, one, record
from worker.store.runs import RUN_SELECT, Enqueued, Outcome, queue_run, run_record
from worker.store.tenants import hold_tenant_mapping

REASON_SYNC_DISABLED = "user sync disabled"


class UserSyncQueries(PoolQueries):
    """The user sync of one Organization."""

    async def get_user_sync(self, organization_id: str) -> dict[str, Any]:
        org = await organization(self._pool, organization_id)
        row = await self._pool.fetchrow(
            "SELECT status, filters::text AS filters, enabled_at, disabled_at, updated_at"
            " FROM org_user_syncs WHERE organization_id = $1", organization_id,
        )
        in_progress = await self._pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM sync_runs WHERE organization_id = $1"
            " AND status IN ('queued', 'running'))", organization_id,
        )
        last = await self._pool.fetchrow(
            RUN_SELECT + " WHERE organization_id = $1 ORDER BY requested_at DESC, id LIMIT 1",
            organization_id,
        )
        sync = record(row, json_fields=("filters",)) if row else {}
        return {
            "organization_id": organization_id,
            "status": sync.get("status", "not_set_up"),
            "filters": sync.get("filters"),
            "in_progress": bool(in_progress),
            "last_run": run_record(last) if last else None,
            "microsoft_tenant_id": org["microsoft_tenant_id"],
            "enabled_at": sync.get("enabled_at"),
            "disabled_at": sync.get("disabled_at"),
            **await attention(self._pool, organization_id, org["microsoft_tenant_id"]),
        }

    async def enable_user_sync(self, organization_id: str, filters_json: dict[str, Any]) -> Enqueued:
        """Enable or edit an Organization's user sync and queue its initial sync run."""
        async with self._pool.acquire() as conn, conn.transaction():
            org = await lock_organization(conn, organization_id)
            tenant_id = require_mapped(org)
            await conn.execute(
                "INSERT INTO org_user_syncs (organization_id, status, filters, enabled_at)"
                " VALUES ($1, 'enabled', $2::text::jsonb, now())"
                " ON CONFLICT (organization_id) DO UPDATE SET status = 'enabled', filters = EXCLUDED.filters,"
                "  enabled_at = CASE WHEN org_user_syncs.status = 'enabled' THEN org_user_syncs.enabled_at"
                "               ELSE now() END,"
                "  updated_at = now()",
                org["id"], dumps(filters_json),
            )
            return await queue_run(conn, organization_id=org["id"], tenant_id=tenant_id)

    async def queue_org_sync(self, organization_id: str) -> Enqueued:
        """Run now: queue an org-sync with the current filters (the sync must be enabled)."""
        async with self._pool.acquire() as conn, conn.transaction():
            org = await lock_organization(conn, organization_id)
            if org["user_sync_status"] != "enabled":
                raise Conflict("user sync is not enabled for this Organization")
            tenant_id = require_mapped(org)
            return await queue_run(conn, organization_id=org["id"], tenant_id=tenant_id)

    async def queue_confirmation(self, run_id: str) -> Enqueued:
        """Queue an org-sync that applies the deactivations a held run kept back (the operator confirmed)."""
        async with self._pool.acquire() as conn, conn.transaction():
            held = await one(conn, f"sync run {run_id}",
                              "SELECT status, organization_id, tenant_id FROM sync_runs WHERE id = $1 FOR UPDATE",
                              run_id)
            if held["status"] != "held" or held["organization_id"] is None:
                raise Conflict(f"only a held Organization run can be confirmed; this one is {held['status']}")
            org = await lock_organization(conn, held["organization_id"])
            if org["user_sync_status"] != "enabled":
                raise Conflict("user sync is not enabled for this Organization")
            if require_mapped(org) != held["tenant_id"]:
                raise Conflict("the Organization no longer syncs from the Microsoft tenant of this run")
            return await queue_run(conn, organization_id=org["id"], tenant_id=held["tenant_id"])

    async def disable_user_sync(self, organization_id: str) -> Outcome:
        """Disable: every linked End User of the Organization stops being updated; nobody is deleted."""
        async with self._pool.acquire() as conn, conn.transaction():
            org = await lock_organization(conn, organization_id)
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


async def attention(pool: Pool, organization_id: str, tenant_id: str | None) -> dict[str, Any]:
    """The Organization's open review items, held run and last error (see the module's docstring)."""
    row = await pool.fetchrow(
        """SELECT (SELECT count(*) FROM review_items WHERE organization_id = $1::uuid AND status = 'open')
                      AS open_review_items,
                  (SELECT id::text FROM sync_runs WHERE organization_id = $1::uuid AND status = 'held')
                      AS held_run_id,
                  coalesce((SELECT CASE WHEN status = 'failed' THEN error END FROM sync_runs
                            WHERE organization_id = $1::uuid AND status IN ('succeeded', 'held', 'failed')
                            ORDER BY finished_at DESC NULLS LAST, requested_at DESC LIMIT 1),
                           (SELECT last_error FROM tenant_sync_status WHERE tenant_id = $2)) AS last_error""",
        organization_id, tenant_id,
    )
    assert row is not None
    return dict(row)
