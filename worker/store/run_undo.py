"""Undoing a sync run: its End User changes reversed as `worker.core.ownership.plan_undo` decides, refused while
its cause is in force; a dry run answers the same without writing. The reversal is journalled like any
operator change (`worker.store.end_users`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from worker.core.ownership import JournalEvent, UndoStep, UndoSubject, cause_in_force, plan_undo
from worker.store import Conn, Pool
from worker.store.end_users import EVENT, OPERATOR, OPERATOR_DECISIONS, journal, load_by_ids
from worker.store.records import Conflict, Row, one


async def undo_run(pool: Pool, run_id: str, *, dry_run: bool) -> dict[str, Any]:
    """Reverse a run's End User changes (NotFound, or Conflict while refused); what was (or would be) done."""
    async with pool.acquire() as conn, conn.transaction():
        run = await one(
            conn, f"sync run {run_id}",
            "SELECT id::text, organization_id::text, tenant_id, status, filters::text AS filters, undone_at"
            " FROM sync_runs WHERE id = $1::uuid FOR UPDATE", run_id)
        await _check_undoable(conn, run)
        subjects = await _undo_subjects(conn, run_id)
        steps = plan_undo(subjects)
        if not dry_run:
            await _apply_undo(conn, run_id, steps)
            await conn.execute("UPDATE sync_runs SET undone_at = now() WHERE id = $1::uuid", run_id)
    return _undo_report(run_id, steps, dry_run=dry_run)


async def _check_undoable(conn: Conn, run: Row) -> None:
    if run["undone_at"] is not None:
        raise Conflict(f"sync run {run['id']} was already undone at {run['undone_at'].isoformat()}")
    if run["status"] in ("queued", "running"):
        raise Conflict(f"sync run {run['id']} is {run['status']}: wait for it to end")
    if run["organization_id"] is None:
        raise Conflict("only an Organization's run can be undone")
    org = await conn.fetchrow(
        "SELECT coalesce(s.status, 'not_set_up') AS status, s.filters::text AS filters, p.microsoft_tenant_id"
        " FROM organizations o JOIN psa_tenants p ON p.id = o.psa_tenant_id"
        " LEFT JOIN org_user_syncs s ON s.organization_id = o.id WHERE o.id = $1::uuid",
        run["organization_id"])
    assert org is not None
    refusal = cause_in_force(
        run_tenant=run["tenant_id"], run_filters=json.loads(run["filters"]) if run["filters"] else None,
        sync_status=org["status"], mapped_tenant=org["microsoft_tenant_id"],
        filters=json.loads(org["filters"]) if org["filters"] else None)
    if refusal:
        raise Conflict(refusal)


async def _undo_subjects(conn: Conn, run_id: str) -> list[UndoSubject]:
    rows = await conn.fetch(
        "SELECT end_user_id::text, changed_at, action, field, old_value, new_value, id FROM end_user_changes"
        " WHERE run_id = $1::uuid AND actor = 'sync' ORDER BY end_user_id, id", run_id)
    if not rows:
        return []
    grouped: dict[str, list[JournalEvent]] = {}
    last_key: tuple[Any, ...] | None = None
    pending: dict[str, Any] = {}
    for r in rows:
        key = (r["end_user_id"], r["changed_at"], r["action"])
        if key != last_key:
            if last_key is not None:
                grouped.setdefault(last_key[0], []).append(JournalEvent(**pending))
            pending, last_key = {"action": r["action"] or "update", "fields": {}, "sync_state": None}, key
        if r["field"] == "sync_state":
            pending["sync_state"] = (r["old_value"], r["new_value"])
        elif r["field"] == "created":
            pending["action"] = "create"
        elif r["field"] != EVENT:
            pending["fields"][r["field"]] = (r["old_value"], r["new_value"])
    assert last_key is not None
    grouped.setdefault(last_key[0], []).append(JournalEvent(**pending))
    ids = list(grouped)
    current = await load_by_ids(conn, ids, lock=True)
    since = max(r["id"] for r in rows)
    touched = {r[0] for r in await conn.fetch(
        "SELECT DISTINCT end_user_id::text FROM end_user_changes WHERE end_user_id = ANY($1::uuid[])"
        " AND actor = 'operator' AND action = ANY($2::text[]) AND id > $3",
        ids, list(OPERATOR_DECISIONS), since)}
    return [UndoSubject(end_user_id=i, events=tuple(grouped[i]), current=current.get(i),
                        operator_changed=i in touched) for i in ids]


async def _apply_undo(conn: Conn, run_id: str, steps: Iterable[UndoStep]) -> None:
    reason = f"undo of sync run {run_id}"
    removed = [s for s in steps if s.kind == "remove"]
    if removed:
        states: dict[str, str] = {r[0]: r[1] for r in await conn.fetch(
            "DELETE FROM end_users WHERE id = ANY($1::uuid[]) RETURNING id::text, sync_state",
            [s.end_user_id for s in removed])}
        await journal(conn, [(s.end_user_id, "sync_state", states.get(s.end_user_id), None) for s in removed],
                      run_id=run_id, actor=OPERATOR, action="undo", reason=reason + ": created by the run, removed")
    for s in steps:
        if s.kind not in ("unlink", "restore"):
            continue
        before = (await load_by_ids(conn, [s.end_user_id]))[s.end_user_id]
        sets = [f"{f} = ${i}" for i, f in enumerate(s.fields, start=2)]
        if s.sync_state is not None:
            sets += [f"sync_state = '{s.sync_state}'", "sync_state_reason = NULL"]
            if s.sync_state != "deactivated":
                sets.append("leaver = NULL")
        if s.kind == "unlink":
            sets += ["entra_tenant_id = NULL", "entra_object_id = NULL", "microsoft = NULL", "last_synced_at = NULL",
                     "entra_fields = '{}'", "locked_fields = '{}'"]
            await conn.execute("DELETE FROM end_user_assets WHERE end_user_id = $1::uuid", s.end_user_id)
        try:
            await conn.execute("UPDATE end_users SET " + ", ".join([*sets, "content_hash = NULL", "updated_at = now()"])
                               + " WHERE id = $1::uuid", s.end_user_id, *s.fields.values())
        except asyncpg.UniqueViolationError:
            raise Conflict(f"End User {s.end_user_id}: its previous email {s.fields.get('email')} is now held by"
                           " another End User") from None
        rows = [(s.end_user_id, f, before.fields.get(f), v) for f, v in s.fields.items()]
        if s.sync_state is not None:
            rows.append((s.end_user_id, "sync_state", before.sync_state, s.sync_state))
        if s.kind == "unlink":
            rows.append((s.end_user_id, "entra_object_id", before.entra_object_id, None))
        await journal(conn, rows, run_id=run_id, actor=OPERATOR, action="undo", reason=f"{reason}: {s.reason}")


def _undo_report(run_id: str, steps: Sequence[UndoStep], *, dry_run: bool) -> dict[str, Any]:
    def of(kind: str) -> list[dict[str, Any]]:
        return [{"end_user_id": s.end_user_id, "fields": s.fields, "sync_state": s.sync_state}
                for s in steps if s.kind == kind]
    return {
        "run_id": run_id, "dry_run": dry_run,
        "removed": [s.end_user_id for s in steps if s.kind == "remove"],
        "unlinked": of("unlink"), "restored": of("restore"),
        "skipped": [{"end_user_id": s.end_user_id, "reason": s.reason} for s in steps if s.kind == "skip"],
    }
