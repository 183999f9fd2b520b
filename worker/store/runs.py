"""Sync runs as the admin API sees them: queuing `org-sync` runs (the caller publishes their Commands after
the commit), what a committed change returns (`Outcome`), listing and reading runs, failing a run nobody
will do. Held runs (the accidental-deletion guard) are `worker.store.holds`; undoing a run is
`worker.store.run_undo`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.store import Conn
from worker.store.records import PoolQueries, Row, one, record


@dataclass(frozen=True)
class Enqueued:
    """A queued `org-sync` run; the caller publishes its Command after the commit."""

    run_id: str
    tenant_id: str
    organization_id: str


@dataclass(frozen=True)
class Outcome:
    """What a committed change returns, and what the caller must publish about it."""

    body: dict[str, Any]
    runs: tuple[Enqueued, ...] = ()
    stale_tenants: tuple[str, ...] = ()          # tenants whose subscriptions may no longer be needed
    extra: dict[str, Any] = field(default_factory=dict)

    def with_body(self, body: dict[str, Any]) -> Outcome:
        return Outcome(body=body, runs=self.runs, stale_tenants=self.stale_tenants, extra=self.extra)


NO_CHANGE = Outcome(body={}, extra={"end_users_stopped": 0})


RUN_SELECT = """
SELECT id, kind, organization_id, tenant_id, status, counts::text AS counts, warnings::text AS warnings,
       error, requested_at, started_at, finished_at
FROM sync_runs
"""


def run_record(row: Row) -> dict[str, Any]:
    return record(row, json_fields=("counts", "warnings"))


async def queue_run(conn: Conn, *, organization_id: Any, tenant_id: str) -> Enqueued:
    run_id = await conn.fetchval(
        "INSERT INTO sync_runs (kind, organization_id, tenant_id, status)"
        " VALUES ('org-sync', $1, $2, 'queued') RETURNING id", organization_id, tenant_id,
    )
    return Enqueued(run_id=str(run_id), tenant_id=tenant_id, organization_id=str(organization_id))


async def queue_enabled(conn: Conn, *, org_ids: Sequence[Any], tenant_id: str) -> list[Enqueued]:
    """Queue an org-sync for each of these Organizations whose user sync is enabled."""
    rows = await conn.fetch(
        "INSERT INTO sync_runs (kind, organization_id, tenant_id, status)"
        " SELECT 'org-sync', s.organization_id, $2, 'queued' FROM org_user_syncs s"
        " WHERE s.organization_id = ANY ($1::uuid[]) AND s.status = 'enabled'"
        " RETURNING id, organization_id", list(org_ids), tenant_id,
    )
    return [
        Enqueued(run_id=str(r["id"]), tenant_id=tenant_id, organization_id=str(r["organization_id"]))
        for r in rows
    ]


class RunQueries(PoolQueries):
    """Sync runs: listed newest first, one by id, and failing one whose command could not be enqueued."""

    async def list_runs(
        self, *, organization_id: str | None = None, tenant_id: str | None = None, limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            RUN_SELECT + " WHERE ($1::uuid IS NULL OR organization_id = $1)"
            " AND ($2::text IS NULL OR tenant_id = $2) ORDER BY requested_at DESC, id LIMIT $3 OFFSET $4",
            organization_id, tenant_id, limit, offset,
        )
        return [run_record(r) for r in rows]

    async def get_run(self, run_id: str) -> dict[str, Any]:
        return run_record(await one(self._pool, f"sync run {run_id}", RUN_SELECT + " WHERE id = $1", run_id))

    async def fail_run(self, run_id: str, error: str) -> None:
        """Mark a queued run failed (its command could not be enqueued)."""
        await self._pool.execute(
            "UPDATE sync_runs SET status = 'failed', error = $2, finished_at = now()"
            " WHERE id = $1 AND status = 'queued'", run_id, error,
        )

