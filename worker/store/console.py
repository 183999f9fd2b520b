"""The SQL behind the operator console's pages that the admin API has no single query for.

Each page is read with a fixed, small number of statements whatever the fleet's size: one for every
Microsoft tenant's health, one for every Organization's sync column of a PSA tenant, a keyset page of End
Users (an Organization may hold 100,000; never an OFFSET walk over them), and a tenant's last 24 hours of
activity. Only the store package runs SQL; this module returns JSON-ready dicts like `worker.store.admin`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from worker.store.admin import NotFound, _plain, _record

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

_LIST_COLUMNS = """
e.id, e.first_name, e.last_name, e.email, e.job_title, e.sync_state, e.sync_state_reason, e.last_synced_at,
lower(coalesce(e.last_name, '')) AS k1, lower(coalesce(e.first_name, '')) AS k2
"""  # k1, k2, id: the keyset; the name index of migration 0008 holds exactly these
# Search is a substring of "first last email", lower-cased once per row (ILIKE on four columns cost 2.5x more).
_LIST_WHERE = """
e.organization_id = $1 AND ($2::text IS NULL OR e.sync_state = $2)
AND ($3::text IS NULL OR strpos(lower(concat_ws(' ', e.first_name, e.last_name, e.email)), $3) > 0)
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
        """A PSA tenant's Organizations with their user sync status, run in progress and last run (the attention
        badges come from `AdminStore.get_user_sync`, as the admin API's)."""
        rows = await self._pool.fetch(_ORG_SYNC_SQL, psa_tenant_id)
        return [_record(r, json_fields=("filters",)) for r in rows]

    async def end_users_page(
        self, organization_id: str, *, q: str | None, sync_state: str | None, after: Cursor | None = None,
        before: Cursor | None = None, limit: int = PAGE_SIZE,
    ) -> dict[str, Any]:
        """One page of an Organization's End Users by name, after or before a cursor, with the total.

        Unfiltered: a keyset walk of the name index and an index-only count, so page 2,000 of 100,000 costs
        what page 1 does. Filtered (search, sync state): the filter has to look at every row of the
        Organization anyway, so one scan yields both the matches' total (a window count) and the page.
        """
        args: list[Any] = [organization_id, sync_state, q.lower() if q else None]
        cursor = after or before
        direction = "DESC" if before is not None else "ASC"
        keyset = ""
        if cursor is not None:
            keyset = f" WHERE (k1, k2, id) {'<' if before is not None else '>'} ($4, $5, $6::uuid)"
            args += [cursor.last, cursor.first, cursor.id]
        total_sql = "count(*) OVER ()" if (q or sync_state) else "NULL::bigint"
        sql = (
            f"SELECT * FROM (SELECT {_LIST_COLUMNS}, {total_sql} AS total FROM end_users e WHERE {_LIST_WHERE}) s"
            f"{keyset} ORDER BY k1 {direction}, k2 {direction}, id {direction} LIMIT {int(limit) + 1}"
        )
        async with self._pool.acquire() as conn:
            rows = list(await conn.fetch(sql, *args))
            total = rows[0]["total"] if rows and (q or sync_state) else None
            if total is None:
                total = await conn.fetchval(f"SELECT count(*) FROM end_users e WHERE {_LIST_WHERE}", *args[:3])
        more = len(rows) > limit
        rows = rows[:limit]
        if before is not None:
            rows.reverse()
        items = [{k: _plain(v) for k, v in r.items() if k not in ("k1", "k2", "total")} for r in rows]
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


MIRROR_SEED_COLUMNS = ("tenant_id", "id", "display_name", "given_name", "surname", "mail", "user_principal_name",
                       "department", "office_location", "user_type", "account_enabled", "content_hash")
END_USER_SEED_COLUMNS = ("organization_id", "first_name", "last_name", "email", "job_title", "sync_state",
                         "entra_tenant_id", "entra_object_id", "microsoft", "last_synced_at")


async def seed_console_bench(
    pool: asyncpg.Pool, *, tenant_id: str, filters: dict[str, Any],
    rows: Callable[[str], tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]],
) -> dict[str, Any]:
    """The console benchmark's world: a mapped tenant, one enabled Organization, its mirror users and linked End
    Users by COPY (`rows(org_id)` gives them in MIRROR_SEED_COLUMNS / END_USER_SEED_COLUMNS order), a day of
    runs and a review item; then planner statistics. Returns the ids the pages need."""
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO microsoft_tenants (tenant_id, display_name, client_id, client_secret)"
                           " VALUES ($1, 'contoso.onmicrosoft.com', 'cid', 'secret')", tenant_id)
        psa = await conn.fetchval("INSERT INTO psa_tenants (name, microsoft_tenant_id) VALUES ('Bench MSP', $1)"
                                  " RETURNING id::text", tenant_id)
        org = await conn.fetchval("INSERT INTO organizations (name, psa_tenant_id) VALUES ('Contoso', $1::uuid)"
                                  " RETURNING id::text", psa)
        await conn.execute("INSERT INTO org_user_syncs (organization_id, status, filters) VALUES ($1::uuid,"
                           " 'enabled', $2)", org, filters)
        mirror, end_users = rows(org)
        await conn.copy_records_to_table("entra_users", records=mirror, columns=MIRROR_SEED_COLUMNS)
        await conn.copy_records_to_table("end_users", records=end_users, columns=END_USER_SEED_COLUMNS)
        await conn.execute(
            "INSERT INTO sync_runs (kind, organization_id, tenant_id, status, counts, requested_at, started_at,"
            " finished_at) SELECT 'resync', $1::uuid, $2, 'succeeded',"
            " jsonb_build_object('updated', 40 + h, 'unchanged', $3::int),"
            " now() - make_interval(hours => h), now() - make_interval(hours => h),"
            " now() - make_interval(hours => h) + interval '7 seconds' FROM generate_series(0, 23, 2) h",
            org, tenant_id, len(end_users),
        )
        await conn.execute("INSERT INTO review_items (organization_id, entra_tenant_id, entra_object_id, reason)"
                           " VALUES ($1::uuid, $2, $3, 'several End Users share this email')",
                           org, tenant_id, mirror[min(5, len(mirror) - 1)][1])
        await conn.execute("VACUUM ANALYZE entra_users")
        await conn.execute("VACUUM ANALYZE end_users")
        some = await conn.fetchval("SELECT id::text FROM end_users WHERE organization_id = $1::uuid"
                                   " ORDER BY id LIMIT 1 OFFSET $2", org, len(end_users) // 2)
    return {"tenant_id": tenant_id, "psa_id": psa, "org_id": org, "end_user_id": some}
