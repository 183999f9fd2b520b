"""SQL of held runs: one per Organization at a time, what it holds, and how a hold ends.

A run whose deactivations the accidental-deletion guard holds becomes the Organization's held run
(`sync_runs.status = 'held'`, at most one per Organization: a unique index says so). Later runs that hold
deactivations add to it (`hold`); a run that no longer holds any closes it (`release`): its deactivations were
applied (confirmed, or few enough now) or its users stopped leaving. An operator may `dismiss` it: nobody is
deactivated and its users are un-flagged, so the next change batch does not hold them again (a whole
Organization sync decides them afresh). Closed held runs read `succeeded`, with a warning saying how the hold
ended. Every function takes the connection it runs on; call them in a transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from worker.store import Conn


class NotHeld(Exception):
    """The run is not an Organization's held run (message: why)."""


async def lock_held_run(conn: Conn, organization_id: str) -> str | None:
    """The Organization's held run, locked until the transaction ends; None when there is none."""
    run_id = await conn.fetchval(
        "SELECT id::text FROM sync_runs WHERE organization_id = $1::uuid AND status = 'held' FOR UPDATE",
        organization_id,
    )
    return str(run_id) if run_id is not None else None


async def hold(conn: Conn, run_id: str, object_ids: Sequence[str], *, warning: str | None = None) -> None:
    """`run_id` holds the deactivations of these Entra users (all of them, as of now): status `held`, their ids,
    the `held` count; `warning` is appended when given."""
    await conn.execute(
        "UPDATE sync_runs SET status = 'held', held_object_ids = $2::text[],"
        " counts = counts || jsonb_build_object('held', cardinality($2::text[])),"
        " warnings = CASE WHEN $3::text IS NULL THEN warnings ELSE warnings || jsonb_build_array($3::text) END"
        " WHERE id = $1::uuid", run_id, sorted(set(object_ids)), warning,
    )


async def release(conn: Conn, run_id: str, *, note: str) -> None:
    """The hold of `run_id` ended (`note` says how): it reads `succeeded` from now on."""
    await conn.execute(
        "UPDATE sync_runs SET status = 'succeeded', warnings = warnings || jsonb_build_array($2::text)"
        " WHERE id = $1::uuid AND status = 'held'", run_id, note,
    )


async def dismiss(conn: Conn, run_id: str) -> None:
    """An operator keeps everyone: the hold ends, nobody is deactivated, and its users' flags are cleared."""
    row = await conn.fetchrow(
        "SELECT status, organization_id, tenant_id, held_object_ids FROM sync_runs WHERE id = $1::uuid FOR UPDATE",
        run_id,
    )
    if row is None:
        raise LookupError(run_id)
    if row["status"] != "held" or row["organization_id"] is None:
        raise NotHeld(f"only a held Organization run can be dismissed; this one is {row['status']}")
    held = list(row["held_object_ids"])
    await release(conn, run_id, note=f"dismissed by an operator: {len(held)} held deactivations not applied")
    await conn.execute(
        "DELETE FROM entra_user_dirty d USING unnest($2::text[]) AS k(id) WHERE d.tenant_id = $1 AND d.id = k.id",
        row["tenant_id"], held,
    )


async def dismiss_run(pool: asyncpg.Pool, run_id: str) -> None:
    """`dismiss` in a transaction of its own (the admin API's `POST /sync-runs/{id}/dismiss`)."""
    async with pool.acquire() as conn, conn.transaction():
        await dismiss(conn, run_id)


async def held_run_holding(conn: Conn, organization_id: str, object_id: str) -> str | None:
    """The Organization's held run if it holds this Entra user's deactivation, else None."""
    run_id = await conn.fetchval(
        "SELECT id::text FROM sync_runs WHERE organization_id = $1::uuid AND status = 'held'"
        " AND $2 = ANY (held_object_ids)", organization_id, object_id,
    )
    return str(run_id) if run_id is not None else None
