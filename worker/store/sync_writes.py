"""SQL of the sync's End User side: what a projection reads of an Organization's End Users, the set-based
application of a reconcile plan through the End User write path, and the sync's run records.

Every function takes the connection it runs on, so the caller decides the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.core.model import MirrorUser, OrgContext, Plan, StateChange, StoredEndUser
from worker.core.projection import email_keys
from worker.store import Conn, end_users
from worker.store.end_users import END_USER_SELECT, stored_end_user

# ---- End Users: projection inputs -----------------------------------------------------------------------

async def load_end_users(
    conn: Conn, *, organization_id: str, tenant_id: str, users: Sequence[MirrorUser]
) -> tuple[dict[str, StoredEndUser], dict[str, list[StoredEndUser]]]:
    """The Organization's End Users linked to these Entra users, and those sharing their emails."""
    ids = [u.id for u in users]
    # One index probe per key (LATERAL … OFFSET 0 is not flattened): with `= ANY(array)` the planner, working
    # from statistics taken before an initial sync filled the table, scans the whole Organization per batch.
    linked_rows = await conn.fetch(
        "SELECT e.* FROM unnest($3::text[]) AS k(oid), LATERAL (" + END_USER_SELECT
        + " WHERE e.organization_id = $1::uuid AND e.entra_tenant_id = $2 AND e.entra_object_id = k.oid"
        " OFFSET 0) AS e", organization_id, tenant_id, ids,
    )
    email_rows = await conn.fetch(
        "SELECT e.* FROM unnest($2::text[]) AS k(email), LATERAL (" + END_USER_SELECT
        + " WHERE e.organization_id = $1::uuid AND lower(e.email) = k.email AND e.email IS NOT NULL"
        " OFFSET 0) AS e", organization_id, sorted({k for u in users for k in email_keys(u)}),
    )
    linked = {r["entra_object_id"]: stored_end_user(r) for r in linked_rows}
    by_email: dict[str, list[StoredEndUser]] = {}
    for r in email_rows:
        by_email.setdefault(r["email"].lower(), []).append(stored_end_user(r))
    return linked, by_email


async def has_end_users(conn: Conn, organization_id: str) -> bool:
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM end_users WHERE organization_id = $1::uuid)", organization_id))


async def synced_count(conn: Conn, organization_id: str) -> int:
    return int(await conn.fetchval(
        "SELECT count(*) FROM end_users WHERE organization_id = $1::uuid AND sync_state = 'synced'",
        organization_id,
    ))


# ---- End Users: applying a plan -----------------------------------------------------------------------

async def apply_plan(
    conn: Conn, *, org: OrgContext, run_id: str | None, plan: Plan,
    include_deactivations: bool = True,
) -> None:
    """Apply a reconcile plan set-based through the End User write path (`worker.store.end_users`), which
    journals every change. Call in a transaction."""
    await end_users.write_creates(conn, org=org, run_id=run_id, creates=plan.creates)
    await end_users.write_updates(conn, org=org, run_id=run_id, updates=plan.updates)
    changes = list(plan.state_changes) + (list(plan.deactivations) if include_deactivations else [])
    await apply_state_changes(conn, run_id=run_id, changes=changes)
    await _apply_reviews(conn, org=org, plan=plan)
    await end_users.write_input_hashes(conn, plan.input_hashes)


async def apply_state_changes(conn: Conn, *, run_id: str | None, changes: Sequence[StateChange]) -> None:
    await end_users.write_state_changes(conn, run_id=run_id, changes=changes)


async def _apply_reviews(conn: Conn, *, org: OrgContext, plan: Plan) -> None:
    for r in plan.reviews:
        await conn.execute(
            """INSERT INTO review_items (organization_id, entra_tenant_id, entra_object_id, reason, candidate_ids)
               VALUES ($1::uuid, $2, $3, $4, $5::uuid[])
               ON CONFLICT (organization_id, entra_tenant_id, entra_object_id) WHERE status = 'open'
               DO UPDATE SET reason = EXCLUDED.reason, candidate_ids = EXCLUDED.candidate_ids""",
            org.organization_id, org.tenant_id, r.entra_object_id, r.reason, list(r.candidate_ids),
        )


async def orgs_awaiting_org_sync(conn: Conn, tenant_id: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT organization_id::text FROM sync_runs WHERE tenant_id = $1 AND kind = 'org-sync'"
        " AND status = 'queued' AND organization_id IS NOT NULL", tenant_id,
    )
    return {r[0] for r in rows}


# ---- Runs ------------------------------------------------------------------------------------------------

# The filters a run applies, kept with it: undoing the run is refused while they still apply.
_RUN_FILTERS = "SELECT f.filters FROM org_user_syncs f WHERE f.organization_id = {}"


async def start_run(
    conn: Conn, *, kind: str, tenant_id: str, organization_id: str | None,
    run_id: str | None = None,
) -> str:
    """Mark a queued run (created by the admin API) running, or create a new running one."""
    if run_id:
        updated = await conn.fetchval(
            "UPDATE sync_runs SET status = 'running', started_at = now(),"
            f" filters = ({_RUN_FILTERS.format('sync_runs.organization_id')}) WHERE id = $1::uuid RETURNING id::text",
            run_id,
        )
        if updated:
            return str(updated)
    return str(await conn.fetchval(
        f"""INSERT INTO sync_runs (id, kind, tenant_id, organization_id, status, started_at, filters)
           VALUES (COALESCE($1::uuid, gen_random_uuid()), $2, $3, $4::uuid, 'running', now(),
                   ({_RUN_FILTERS.format('$4::uuid')}))
           RETURNING id::text""",
        run_id, kind, tenant_id, organization_id,
    ))


async def finish_run(
    conn: Conn, run_id: str, *, status: str, counts: dict[str, int],
    warnings: Sequence[str] = (), error: str | None = None,
) -> None:
    await conn.execute(
        """UPDATE sync_runs SET status = $2, counts = $3, warnings = $4, error = $5, finished_at = now()
           WHERE id = $1::uuid""",
        run_id, status, counts, list(warnings), error,
    )


ABANDONED = ("interrupted: its unit of work ended without closing it (PostgreSQL was unreachable when it failed,"
             " or the worker stopped); a later unit of work took over")


async def end_abandoned_runs(conn: Conn, tenant_id: str) -> list[str]:
    """With the tenant's lock held: end `failed` every delta or resync run of the tenant still `running`.

    Only a unit of work holding the lock records such runs and ends each before it lets go of the lock, so one
    still running now belongs to a unit that ended without closing it: one whose failure path could not reach
    PostgreSQL (`worker.engine.runs.closing_on_failure` is best effort) or a worker that died. An org-sync's run
    is left alone: its command is replayed and the retry takes the same run over (`start_run`), or the consumer
    fails it when it gives up."""
    rows = await conn.fetch(
        """UPDATE sync_runs SET status = 'failed', error = $2, finished_at = now()
           WHERE tenant_id = $1 AND status = 'running' AND kind <> 'org-sync' RETURNING id::text""",
        tenant_id, ABANDONED,
    )
    return [r[0] for r in rows]


async def fail_runs(conn: Conn, run_ids: Sequence[str], error: str) -> None:
    """End queued or running runs `failed` with `error` (finished ones keep their outcome)."""
    await conn.execute(
        """UPDATE sync_runs SET status = 'failed', error = $2, finished_at = now()
           WHERE id = ANY($1::uuid[]) AND status IN ('queued', 'running')""",
        list(run_ids), error,
    )

