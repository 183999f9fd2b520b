"""The SQL behind the operator console's pages that the admin API has no single query for.

Each page is read with a fixed, small number of statements whatever the fleet's size: one for every
Microsoft tenant's health, one for every Organization's sync column of a PSA tenant, a keyset page of End
Users (an Organization may hold 100,000; never an OFFSET walk over them), and a tenant's last 24 hours of
activity. Only the store package runs SQL; this module returns JSON-ready dicts like `worker.store.admin`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from worker.store.admin import NotFound, _escape_like, _plain, _record

PAGE_SIZE = 50

# What a run changed in End Users (out_of_scope counts mirror users the filters leave out, not writes).
_RUN_CHANGES = (
    "coalesce((counts->>'created')::int, 0) + coalesce((counts->>'updated')::int, 0)"
    " + coalesce((counts->>'deactivated')::int, 0)"
)

# Every Microsoft tenant with its mapped PSA tenant and health: the last run that changed End Users, the
# last delta call, last notification, earliest subscription expiry and last error.
_TENANT_HEALTH_SQL = f"""
SELECT m.tenant_id, m.display_name, m.default_domain, m.created_at,
       p.id AS psa_tenant_id, p.name AS psa_tenant_name,
       (SELECT r.finished_at FROM sync_runs r WHERE r.tenant_id = m.tenant_id AND r.finished_at IS NOT NULL
          AND {_RUN_CHANGES} > 0 ORDER BY r.requested_at DESC LIMIT 1) AS last_change_at,
       s.last_delta_at, s.last_full_resync_at, s.last_notification_at, s.last_error,
       (SELECT min(g.expires_at) FROM graph_subscriptions g WHERE g.tenant_id = m.tenant_id) AS subscription_expires_at,
       (SELECT count(*) FROM graph_subscriptions g WHERE g.tenant_id = m.tenant_id) AS subscriptions
FROM microsoft_tenants m
LEFT JOIN psa_tenants p ON p.microsoft_tenant_id = m.tenant_id
LEFT JOIN tenant_sync_status s ON s.tenant_id = m.tenant_id
"""

# A PSA tenant's Organizations with what the "Microsoft User Sync" column shows for each.
_ORG_SYNC_SQL = """
SELECT o.id, o.name, coalesce(s.status, 'not_set_up') AS status, s.filters::text AS filters,
       EXISTS (SELECT 1 FROM sync_runs r WHERE r.organization_id = o.id AND r.status IN ('queued', 'running'))
           AS in_progress,
       last.id AS last_run_id, last.status AS last_run_status, last.error AS last_run_error,
       last.finished_at AS last_run_finished_at,
       (SELECT count(*) FROM review_items ri WHERE ri.organization_id = o.id AND ri.status = 'open')
           AS open_review_items,
       (SELECT count(*) FROM end_users e WHERE e.organization_id = o.id) AS end_users
FROM organizations o
LEFT JOIN org_user_syncs s ON s.organization_id = o.id
LEFT JOIN LATERAL (
    SELECT r.id, r.status, r.error, r.finished_at FROM sync_runs r WHERE r.organization_id = o.id
    ORDER BY r.requested_at DESC, r.id LIMIT 1
) last ON true
WHERE o.psa_tenant_id = $1
ORDER BY lower(o.name), o.id
"""

# End Users in the console's order: the expression index of migration 0008 serves both the keyset and count.
_SORT_PARTS = ("lower(coalesce(e.last_name, ''))", "lower(coalesce(e.first_name, ''))", "e.id")
_SORT_KEY = ", ".join(_SORT_PARTS)
_LIST_COLUMNS = """
e.id, e.first_name, e.last_name, e.email, e.job_title, e.sync_state, e.sync_state_reason, e.last_synced_at,
lower(coalesce(e.last_name, '')) AS k1, lower(coalesce(e.first_name, '')) AS k2
"""
_LIST_WHERE = """
e.organization_id = $1 AND ($2::text IS NULL OR e.sync_state = $2)
AND ($3::text IS NULL OR e.first_name ILIKE $3 OR e.last_name ILIKE $3 OR e.email ILIKE $3
     OR concat_ws(' ', e.first_name, e.last_name) ILIKE $3)
"""


@dataclass(frozen=True)
class Cursor:
    """A position in the End User order: (lower last name, lower first name, id)."""

    last: str
    first: str
    id: str

    def encode(self) -> str:
        return json.dumps([self.last, self.first, self.id], separators=(",", ":"))

    @staticmethod
    def decode(text: str) -> Cursor | None:
        """None for anything that is not a cursor this module wrote (a tampered URL starts over)."""
        try:
            last, first, ident = json.loads(text)
        except (ValueError, TypeError):
            return None
        if not all(isinstance(v, str) for v in (last, first, ident)) or len(ident) != 36:
            return None
        return Cursor(last, first, ident)


class ConsoleStore:
    """Reads for the console pages. Stateless apart from the pool it is given."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def tenant_health(self, tenant_id: str | None = None) -> list[dict[str, Any]]:
        """Every Microsoft tenant (or one) with its mapping and health, by display name."""
        rows = await self._pool.fetch(
            _TENANT_HEALTH_SQL + " WHERE $1::text IS NULL OR m.tenant_id = $1"
            " ORDER BY lower(m.display_name), m.tenant_id", tenant_id,
        )
        if tenant_id is not None and not rows:
            raise NotFound(f"no Microsoft tenant {tenant_id}")
        return [_record(r) for r in rows]

    async def organizations_sync(self, psa_tenant_id: str) -> list[dict[str, Any]]:
        """A PSA tenant's Organizations with their user sync status, run in progress, last run, reviews."""
        rows = await self._pool.fetch(_ORG_SYNC_SQL, psa_tenant_id)
        return [_record(r, json_fields=("filters",)) for r in rows]

    async def end_users_page(
        self, organization_id: str, *, q: str | None, sync_state: str | None, after: Cursor | None = None,
        before: Cursor | None = None, limit: int = PAGE_SIZE,
    ) -> dict[str, Any]:
        """One page of an Organization's End Users by name, after or before a cursor, with the total.

        Keyset pagination on an index: page 2,000 of 100,000 costs what page 1 does.
        """
        pattern = None if not q else "%" + _escape_like(q) + "%"
        args: list[Any] = [organization_id, sync_state, pattern]
        where = _LIST_WHERE
        order = "ASC"
        cursor = after or before
        if cursor is not None:
            where += f" AND ({_SORT_KEY}) {'>' if after else '<'} ($4, $5, $6::uuid)"
            args += [cursor.last, cursor.first, cursor.id]
            order = "ASC" if after else "DESC"
        sort = ", ".join(f"{part} {order}" for part in _SORT_PARTS)
        sql = f"SELECT {_LIST_COLUMNS} FROM end_users e WHERE {where} ORDER BY {sort} LIMIT {int(limit) + 1}"
        async with self._pool.acquire() as conn:
            rows = list(await conn.fetch(sql, *args))
            total = await conn.fetchval(f"SELECT count(*) FROM end_users e WHERE {_LIST_WHERE}", *args[:3])
        more = len(rows) > limit
        rows = rows[:limit]
        if before is not None:
            rows.reverse()
        items = [{k: _plain(v) for k, v in r.items() if k not in ("k1", "k2")} for r in rows]
        keys = [Cursor(r["k1"], r["k2"], str(r["id"])) for r in rows]
        has_next = more if before is None else True
        has_prev = (after is not None) if before is None else more
        return {
            "items": items, "total": total,
            "next": keys[-1].encode() if keys and has_next else None,
            "prev": keys[0].encode() if keys and has_prev else None,
        }

    async def tenant_activity(self, tenant_id: str, *, since: datetime) -> dict[str, Any]:
        """Runs of a tenant finished since `since`: End User changes per hour, and each run's duration."""
        rows = await self._pool.fetch(
            f"SELECT id, kind, status, organization_id, started_at, finished_at, {_RUN_CHANGES} AS changes"
            " FROM sync_runs WHERE tenant_id = $1 AND requested_at >= $2 AND finished_at IS NOT NULL"
            " ORDER BY finished_at", tenant_id, since,
        )
        return {"runs": [_record(r) for r in rows]}
