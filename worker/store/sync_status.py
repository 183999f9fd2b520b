"""SQL of what needs an operator's attention in an Organization's user sync (its status endpoint's extra fields).

`open_review_items`: review items waiting for a decision; `held_run_id`: the run whose deactivations wait for a
confirmation or a dismissal (at most one, see `worker.store.holds`); `last_error`: why the last run failed, else
the error the Organization's Microsoft tenant last reported (refused credentials …), else None.
"""

from __future__ import annotations

from typing import Any

import asyncpg


async def attention(pool: asyncpg.Pool, organization_id: str, tenant_id: str | None) -> dict[str, Any]:
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

