"""The SQL behind the operator console's pages that the admin API has no single query for.

Each page is read with a fixed, small number of statements whatever the fleet's size: one for every
Microsoft tenant's health, one for every Organization's sync column of a PSA tenant, a keyset page of End
Users (an Organization may hold 100,000; never an OFFSET walk over them), and a tenant's last 24 hours of
activity. Only the store package runs SQL; this module returns JSON-ready dicts like `worker.store.admin`.
The console benchmark's world is seeded by `worker.store.console_seed`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from worker.store.records import NotFound, plain, record

PAGE_SIZE = 50

# What a run changed in End Users (out_of_scope counts mirror users the filters leave out, not writes).
_RUN_CHANGES = (
    "coalesce((counts->>'created')::int, 0) + coalesce((counts->>'updated')::int, 0)"
    " + coalesce((counts->>'deactivated')::int, 0)"
)

# Every Microsoft tenant with its mapped PSA tenant and health: the last run that changed End Users, the
# last delta call, last notification, earliest subscription expiry, the last resync's drift and last error.
_TENANT_HEALTH_SQL = f"""
SELECT m.tenant_id, m.display_name, m.default_domain, m.created_at,
       p.id AS psa_tenant_id, p.name AS psa_tenant_name,
       (SELECT r.finished_at FROM sync_runs r WHERE r.tenant_id = m.tenant_id AND r.finished_at IS NOT NULL
          AND {_RUN_CHANGES} > 0 ORDER BY r.requested_at DESC LIMIT 1) AS last_change_at,
       s.last_delta_at, s.last_full_resync_at, s.last_notification_at, s.last_error,
       (SELECT min(g.expires_at) FROM graph_subscriptions g WHERE g.tenant_id = m.tenant_id) AS subscription_expires_at,
       (SELECT count(*) FROM graph_subscriptions g WHERE g.tenant_id = m.tenant_id) AS subscriptions,
       s.last_resync_drift::text AS last_resync_drift
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
       (SELECT count(*) FROM end_users e WHERE e.organization_id = o.id) AS end_users,
       -- the attention badges, as worker/store/user_sync.py's `attention` (GET …/user-sync) gives them
       (SELECT count(*) FROM review_items ri WHERE ri.organization_id = o.id AND ri.status = 'open')
           AS open_review_items,
       (SELECT h.id::text FROM sync_runs h WHERE h.organization_id = o.id AND h.status = 'held' LIMIT 1)
           AS held_run_id,
       coalesce((SELECT CASE WHEN f.status = 'failed' THEN f.error END FROM sync_runs f
                 WHERE f.organization_id = o.id AND f.status IN ('succeeded', 'held', 'failed')
                 ORDER BY f.finished_at DESC NULLS LAST, f.requested_at DESC LIMIT 1),
                (SELECT t.last_error FROM tenant_sync_status t WHERE t.tenant_id = pt.microsoft_tenant_id))
           AS last_error
FROM organizations o
JOIN psa_tenants pt ON pt.id = o.psa_tenant_id
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
"""  # k1, k2, id: the keyset; the name indexes of migrations 0008 and 0009 hold exactly these
_LIST_WHERE = "e.organization_id = $1"
_STATE_WHERE = " AND e.sync_state = ${n}"  # only when filtered: an "IS NULL OR" would hide the index from a plan
# Search is by prefix, lower-cased, of the full name ("first last"), the last name or the email: each a range
# of a text_pattern_ops index of migration 0009 (byte order, so [q, q + U+10FFFF) holds every text starting
# with q, and a range is indexable with a parameter where LIKE is not). No substring search: without pg_trgm a
# substring has to read every row of the Organization.
_SEARCH_WHERE = """ AND (
    (lower(coalesce(e.first_name, '') || ' ' || coalesce(e.last_name, '')) ~>=~ ${lo}
     AND lower(coalesce(e.first_name, '') || ' ' || coalesce(e.last_name, '')) ~<~ ${hi})
    OR (lower(e.last_name) ~>=~ ${lo} AND lower(e.last_name) ~<~ ${hi})
    OR (lower(e.email) ~>=~ ${lo} AND lower(e.email) ~<~ ${hi}))"""
_PREFIX_END = "\U0010ffff"
# A search's total is counted up to this many matches ("10,000+"): a one-letter prefix may match most of an
# Organization of 100,000, and its exact count would cost what the page is meant not to.
SEARCH_COUNT_CAP = 10_000


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


@dataclass(frozen=True)
class _EndUserPageQuery:
    """The statements of one End User page: the keyset walk (`sql`, one row more than the page to tell whether
    there is a next one) and its total (`count_sql`, capped for a search)."""

    sql: str
    count_sql: str
    args: list[Any]
    keyset_args: list[Any]

    @staticmethod
    def build(organization_id: str, *, q: str | None, sync_state: str | None, cursor: Cursor | None,
              backwards: bool, limit: int) -> _EndUserPageQuery:
        where = _LIST_WHERE
        args: list[Any] = [organization_id]
        if sync_state:
            args.append(sync_state)
            where += _STATE_WHERE.format(n=len(args))
        if q:
            prefix = q.lower()
            args += [prefix, prefix + _PREFIX_END]
            where += _SEARCH_WHERE.format(lo=len(args) - 1, hi=len(args))
        direction = "DESC" if backwards else "ASC"
        keyset = ""
        keyset_args: list[Any] = []
        if cursor is not None:
            n = len(args)
            keyset = (f" AND (lower(coalesce(e.last_name, '')), lower(coalesce(e.first_name, '')), e.id)"
                      f" {'<' if backwards else '>'} (${n + 1}, ${n + 2}, ${n + 3}::uuid)")
            keyset_args = [cursor.last, cursor.first, cursor.id]
        sql = (
            f"SELECT {_LIST_COLUMNS} FROM end_users e WHERE {where}{keyset}"
            f" ORDER BY lower(coalesce(e.last_name, '')) {direction}, lower(coalesce(e.first_name, '')) {direction},"
            f" e.id {direction} LIMIT {int(limit) + 1}"
        )
        if q:
            count_sql = f"SELECT count(*) FROM (SELECT 1 FROM end_users e WHERE {where} LIMIT {SEARCH_COUNT_CAP + 1}) c"
        else:
            count_sql = f"SELECT count(*) FROM end_users e WHERE {where}"
        return _EndUserPageQuery(sql=sql, count_sql=count_sql, args=args, keyset_args=keyset_args)


def _end_users_page(
    rows: list[Any], *, total: int, limit: int, after: Cursor | None, before: Cursor | None
) -> dict[str, Any]:
    """The page's items in name order, its total and the cursors of the pages before and after it."""
    capped = total > SEARCH_COUNT_CAP
    more = len(rows) > limit
    rows = rows[:limit]
    if before is not None:
        rows.reverse()
    items = [{k: plain(v) for k, v in r.items() if k not in ("k1", "k2")} for r in rows]
    keys = [Cursor(r["k1"], r["k2"], str(r["id"])) for r in rows]
    has_next = more if before is None else True
    has_prev = (after is not None) if before is None else more
    return {
        "items": items, "total": min(total, SEARCH_COUNT_CAP), "total_capped": capped,
        "next": keys[-1].encode() if keys and has_next else None,
        "prev": keys[0].encode() if keys and has_prev else None,
    }


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
        return [record(r, json_fields=("last_resync_drift",)) for r in rows]

    async def organizations_sync(self, psa_tenant_id: str) -> list[dict[str, Any]]:
        """A PSA tenant's Organizations with their user sync status, run in progress, last run and attention
        badges (held run, open review items, last error: the same rules as `GET …/user-sync`), in one query."""
        rows = await self._pool.fetch(_ORG_SYNC_SQL, psa_tenant_id)
        return [record(r, json_fields=("filters",)) for r in rows]

    async def end_users_page(
        self, organization_id: str, *, q: str | None, sync_state: str | None, after: Cursor | None = None,
        before: Cursor | None = None, limit: int = PAGE_SIZE,
    ) -> dict[str, Any]:
        """One page of an Organization's End Users by name, after or before a cursor, with the total.

        Every form is a keyset walk of an index, so page 2,000 of 100,000 costs what page 1 does: the name
        index (unfiltered), the (sync state, name) index (a state), or the three prefix indexes' matches
        sorted (a search). Totals: an index-only count, except a search's, counted up to SEARCH_COUNT_CAP
        (`total_capped` then says the total is at least that).
        """
        query = _EndUserPageQuery.build(organization_id, q=q, sync_state=sync_state, cursor=after or before,
                                        backwards=before is not None, limit=limit)
        async with self._pool.acquire() as conn, conn.transaction():
            if q:
                # A plan for these very prefixes: a generic plan (asyncpg prepares, PostgreSQL switches to generic
                # after five runs) cannot tell "fiona.scott" (694 rows: the prefix indexes) from "j" (the name
                # index walk), and walked the whole name index for the former: 150-600 ms instead of 15.
                await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            rows = list(await conn.fetch(query.sql, *query.args, *query.keyset_args))
            total = int(await conn.fetchval(query.count_sql, *query.args))
        return _end_users_page(rows, total=total, limit=limit, after=after, before=before)

    async def end_user_names(self, end_user_ids: list[str]) -> dict[str, str]:
        """Each End User's name ("first last", else the email, else the id) in one query; gone ones are left out."""
        rows = await self._pool.fetch(
            "SELECT id::text, first_name, last_name, email FROM end_users WHERE id = ANY($1::uuid[])", end_user_ids)
        return {r["id"]: " ".join(x for x in (r["first_name"], r["last_name"]) if x) or r["email"] or r["id"]
                for r in rows}

    async def tenant_activity(self, tenant_id: str, *, since: datetime) -> dict[str, Any]:
        """Runs of a tenant finished since `since` (End User changes per hour, each run's duration) and the change
        notifications the worker accepted per UTC hour since the hour of `since`."""
        rows = await self._pool.fetch(
            f"SELECT id, kind, status, organization_id, started_at, finished_at, {_RUN_CHANGES} AS changes"
            " FROM sync_runs WHERE tenant_id = $1 AND requested_at >= $2 AND finished_at IS NOT NULL"
            " ORDER BY finished_at", tenant_id, since,
        )
        hours = await self._pool.fetch(
            "SELECT hour, count FROM tenant_notifications_hourly WHERE tenant_id = $1 AND hour >= $2 ORDER BY hour",
            tenant_id, since.replace(minute=0, second=0, microsecond=0),
        )
        return {"runs": [record(r) for r in rows],
                "notifications": [(r["hour"], int(r["count"])) for r in hours]}
