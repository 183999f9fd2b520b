"""Operator actions on End Users, each in a transaction of its own (`EndUserActions`): edit and lock, unlock,
delete, exclude and include again, the change journal, leavers, and undoing a run (`worker.store.run_undo`).
Every write goes through `worker.store.end_users`, the one write path, and into the journal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg

from worker.core.model import StoredEndUser
from worker.store import Conn, Pool, run_undo
from worker.store.end_users import EVENT, OPERATOR, REASON_EXCLUDED, REASON_INCLUDED, journal, load_by_ids
from worker.store.records import Conflict, NotFound, PoolQueries, Row, one


class EndUserActions(PoolQueries):
    """The admin API's End User operations that change state or read the journal."""

    async def _locked(self, conn: Conn, end_user_id: str) -> StoredEndUser:
        found = await load_by_ids(conn, [end_user_id], lock=True)
        if end_user_id not in found:
            raise NotFound(f"no End User {end_user_id}")
        return found[end_user_id]

    async def edit(self, end_user_id: str, values: Mapping[str, str | None]) -> None:
        """Edit fields; on a linked End User each edited field becomes locked (the sync never overwrites it)."""
        async with self._pool.acquire() as conn, conn.transaction():
            e = await self._locked(conn, end_user_id)
            changed = {f: v for f, v in values.items() if e.fields.get(f) != v}
            lock = sorted(set(values) - e.locked_fields) if e.entra_object_id is not None else []
            if not changed and not lock:
                return
            sets = [f"{f} = ${i}" for i, f in enumerate(changed, start=3)]
            try:
                await conn.execute(
                    "UPDATE end_users SET " + ", ".join([*sets, "locked_fields = locked_fields || $2::text[]",
                                                         "updated_at = now()"]) + " WHERE id = $1",
                    end_user_id, lock, *changed.values())
            except asyncpg.UniqueViolationError:
                raise Conflict(f"email: another End User of this Organization has {values.get('email')}") from None
            rows = [(end_user_id, f, e.fields.get(f), v) for f, v in changed.items()]
            rows = rows or [(end_user_id, EVENT, None, None)]
            await journal(conn, rows, run_id=None, actor=OPERATOR, action="edit",
                          reason=("locked: " + ", ".join(lock)) if lock else None)

    async def unlock(self, end_user_id: str, field: str) -> None:
        """Hand a locked field back to Entra: the next sync of this user fills it."""
        async with self._pool.acquire() as conn, conn.transaction():
            e = await self._locked(conn, end_user_id)
            if field not in e.locked_fields:
                raise NotFound(f"field {field} of End User {end_user_id} is not locked")
            await conn.execute(
                "UPDATE end_users SET locked_fields = array_remove(locked_fields, $2), content_hash = NULL,"
                " updated_at = now() WHERE id = $1", end_user_id, field)
            await _flag_for_sync(conn, e)
            await journal(conn, [(end_user_id, EVENT, None, None)], run_id=None, actor=OPERATOR, action="unlock",
                          reason=f"{field} handed back to Entra")

    async def delete(self, end_user_id: str) -> bool:
        """Delete; a linked non-manual End User is also excluded (the sync never re-creates it). Returns whether
        an exclusion was recorded."""
        async with self._pool.acquire() as conn, conn.transaction():
            e = await self._locked(conn, end_user_id)
            excluded = e.entra_object_id is not None and e.sync_state != "manual"
            if excluded:
                await _exclude(conn, e, how="deleted")
            await conn.execute("DELETE FROM end_users WHERE id = $1", end_user_id)
            await journal(conn, [(end_user_id, "sync_state", e.sync_state, None)], run_id=None, actor=OPERATOR,
                          action="delete", reason="deleted by an operator" + ("; excluded" if excluded else ""))
            return excluded

    async def exclude(self, end_user_id: str) -> None:
        """Keep the record, stop syncing it (`excluded`) until the exclusion is removed."""
        async with self._pool.acquire() as conn, conn.transaction():
            e = await self._locked(conn, end_user_id)
            if e.entra_object_id is None:
                raise Conflict("a manual End User is not linked to an Entra user: there is nothing to exclude")
            if e.sync_state == "excluded":
                return
            await _exclude(conn, e, how="excluded")
            await conn.execute("UPDATE end_users SET sync_state = 'excluded', sync_state_reason = $2,"
                               " updated_at = now() WHERE id = $1", end_user_id, REASON_EXCLUDED)
            await journal(conn, [(end_user_id, "sync_state", e.sync_state, "excluded")], run_id=None,
                          actor=OPERATOR, action="exclude", reason=REASON_EXCLUDED)

    async def list_exclusions(self, organization_id: str) -> list[dict[str, Any]]:
        await _require_org(self._pool, organization_id)
        rows = await self._pool.fetch(
            "SELECT entra_tenant_id, entra_object_id, end_user_id::text, how, excluded_by, display_name, email,"
            " created_at FROM end_user_exclusions WHERE organization_id = $1::uuid ORDER BY created_at DESC,"
            " entra_object_id", organization_id)
        return [{**dict(r), "created_at": r["created_at"].isoformat()} for r in rows]

    async def include(self, organization_id: str, entra_object_id: str) -> None:
        """Remove an exclusion: a kept End User resumes at the next sync of that user, a deleted one is
        created again if still in scope."""
        async with self._pool.acquire() as conn, conn.transaction():
            gone = await conn.fetch(
                "DELETE FROM end_user_exclusions WHERE organization_id = $1::uuid AND entra_object_id = $2"
                " RETURNING entra_tenant_id", organization_id, entra_object_id)
            if not gone:
                raise NotFound(f"Entra user {entra_object_id} is not excluded from Organization {organization_id}")
            kept = await conn.fetch(
                "UPDATE end_users SET sync_state = 'sync_disabled', sync_state_reason = $3, content_hash = NULL,"
                " updated_at = now() WHERE organization_id = $1::uuid AND entra_object_id = $2"
                " AND sync_state = 'excluded' RETURNING id", organization_id, entra_object_id, REASON_INCLUDED)
            await journal(conn, [(r["id"], "sync_state", "excluded", "sync_disabled") for r in kept], run_id=None,
                          actor=OPERATOR, action="include", reason=REASON_INCLUDED)
            await conn.execute(
                "INSERT INTO entra_user_dirty (tenant_id, id) SELECT t, $2 FROM unnest($1::text[]) AS t"
                " ON CONFLICT DO NOTHING", [r[0] for r in gone], entra_object_id)

    async def changes(self, end_user_id: str, *, limit: int, offset: int) -> dict[str, Any]:
        """The journal of one End User, newest event first (also after the End User was deleted)."""
        rows = await self._pool.fetch(
            """SELECT changed_at, run_id::text AS run_id, actor, action, reason, max(id) AS last,
                      json_agg(json_build_array(field, old_value, new_value) ORDER BY id)::text AS entries
               FROM end_user_changes WHERE end_user_id = $1::uuid
               GROUP BY changed_at, run_id, actor, action, reason
               ORDER BY last DESC LIMIT $2 OFFSET $3""", end_user_id, limit, offset)
        if not rows and offset == 0 and not await self._pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM end_users WHERE id = $1::uuid)", end_user_id):
            raise NotFound(f"no End User {end_user_id}")
        return {"items": [_event(r) for r in rows], "limit": limit, "offset": offset}

    async def list_leavers(self, organization_id: str, *, since: datetime | None) -> list[dict[str, Any]]:
        await _require_org(self._pool, organization_id)
        rows = await self._pool.fetch(
            "SELECT e.id::text, e.first_name, e.last_name, e.email, e.entra_object_id, e.sync_state_reason,"
            " e.leaver::text AS leaver FROM end_users e WHERE e.organization_id = $1::uuid"
            " AND e.sync_state = 'deactivated' AND e.leaver IS NOT NULL"
            " AND ($2::timestamptz IS NULL OR (e.leaver->>'at')::timestamptz >= $2)"
            " ORDER BY e.leaver->>'at' DESC, e.id", organization_id, since)
        return [{**dict(r), "leaver": json.loads(r["leaver"])} for r in rows]

    async def undo_run(self, run_id: str, *, dry_run: bool) -> dict[str, Any]:
        """Reverse a run's End User changes (see `core.ownership.plan_undo`); refused while its cause is in
        force. A dry run answers the same without writing."""
        return await run_undo.undo_run(self._pool, run_id, dry_run=dry_run)


async def _require_org(pool: Pool, organization_id: str) -> None:
    await one(pool, f"Organization {organization_id}", "SELECT 1 FROM organizations WHERE id = $1::uuid",
              organization_id)


async def _flag_for_sync(conn: Conn, e: StoredEndUser) -> None:
    """Have the next sync of the tenant project this End User's Entra user, changed or not."""
    if e.entra_tenant_id and e.entra_object_id:
        await conn.execute("INSERT INTO entra_user_dirty (tenant_id, id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                           e.entra_tenant_id, e.entra_object_id)


async def _exclude(conn: Conn, e: StoredEndUser, *, how: str) -> None:
    name = " ".join(filter(None, (e.fields.get("first_name"), e.fields.get("last_name")))) or None
    await conn.execute(
        "INSERT INTO end_user_exclusions (organization_id, entra_tenant_id, entra_object_id, end_user_id, how,"
        " display_name, email) VALUES ($1::uuid, $2, $3, $4::uuid, $5, $6, $7)"
        " ON CONFLICT (organization_id, entra_tenant_id, entra_object_id) DO UPDATE SET how = EXCLUDED.how,"
        " end_user_id = EXCLUDED.end_user_id, created_at = now()",
        e.organization_id, e.entra_tenant_id, e.entra_object_id, e.id, how, name, e.fields.get("email"))


def _event(row: Row) -> dict[str, Any]:
    fields: dict[str, list[str | None]] = {}
    state: list[str | None] | None = None
    for name, old, new in json.loads(row["entries"]):
        if name == "sync_state":
            state = [old, new]
        elif name == "created":
            state = state or [None, "synced"]
        elif name != EVENT:
            fields[name] = [old, new]
    action = row["action"] or ("create" if state == [None, "synced"] and not fields else "update")
    actor: dict[str, Any] = {"kind": row["actor"]}
    if row["run_id"] is not None:
        actor["run_id"] = row["run_id"]
    return {"at": row["changed_at"].isoformat(), "actor": actor, "action": action, "fields": fields,
            "sync_state": state, "reason": row["reason"]}
