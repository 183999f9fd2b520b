"""SQL of a tenant's Graph feed as the worker records it: its Graph subscriptions, the change notifications it
accepted per hour, and the tenant's sync status (what the worker last did for it, the last resync's drift).

Every function takes the connection it runs on, so the caller decides the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from worker.store import Conn


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
