"""The one write path for End Users, and the journal's reader.

Every End User change goes through this module and into `end_user_changes`: the sync's set-based writes
(creates, updates and adoptions, state changes; journalled in bulk with the rows they write), and each
operator action — disable, unmap/remap, review resolution, manual create, edit, unlock, delete, exclude,
include, undo. A journal row names its End User, the run (sync) or none, the actor (`sync` or `operator`),
the action, the field with its old and new value, and a reason; one *event* is the rows of one End User
sharing (changed_at, run_id, actor, action, reason).

The decisions (which fields survive a sync, what stopping updates does, how a run is undone) are the pure
core's (`worker.core.reconcile`, `worker.core.ownership`); this module reads what they need and writes what
they decide. Functions taking a connection run inside the caller's transaction; `EndUserStore` opens its own.
jsonb is written as `$n::text::jsonb` and read as `::text` where the pool's codecs may be absent.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from worker.core.model import (
    END_USER_FIELDS,
    Create,
    OrgContext,
    StateChange,
    StoredEndUser,
    Update,
)
from worker.core.ownership import JournalEvent, UndoStep, UndoSubject, cause_in_force, plan_undo
from worker.core.reconcile import stop_updating as decide_stop_updating
from worker.store import Conn

Row = asyncpg.Record | Mapping[str, Any]

SYNC, OPERATOR = "sync", "operator"
EVENT = "event"  # the journal row of an event that changes no field (exclude, include, unlock, delete)
# Operator actions after which a run's undo leaves an End User it created alone.
_OPERATOR_DECISIONS = ("edit", "unlock", "exclude", "link")
REASON_EXCLUDED = "excluded by an operator"
REASON_INCLUDED = "included again by an operator; the next sync decides its state"


class EndUserError(Exception):
    """A request the End User's state does not allow; mapped by the admin API like the admin store's."""


class NotFound(EndUserError):
    pass


class Conflict(EndUserError):
    pass


# ---- reading End Users as the core sees them --------------------------------------------------------------

END_USER_SELECT = f"""
    SELECT e.id::text AS id, e.organization_id::text AS organization_id, {", ".join("e." + f for f in END_USER_FIELDS)},
           e.sync_state, e.sync_state_reason, e.entra_tenant_id, e.entra_object_id, e.microsoft, e.content_hash,
           e.entra_fields, e.locked_fields,
           COALESCE((SELECT array_agg(a.asset_id::text) FROM end_user_assets a WHERE a.end_user_id = e.id),
                    '{{}}') AS asset_ids
    FROM end_users e
"""


def stored_end_user(row: Row) -> StoredEndUser:
    microsoft = row["microsoft"]
    return StoredEndUser(
        id=row["id"], organization_id=row["organization_id"],
        fields={f: row[f] for f in END_USER_FIELDS}, sync_state=row["sync_state"],
        sync_state_reason=row["sync_state_reason"], entra_tenant_id=row["entra_tenant_id"],
        entra_object_id=row["entra_object_id"],
        microsoft=json.loads(microsoft) if isinstance(microsoft, str) else microsoft,
        content_hash=row["content_hash"], asset_ids=frozenset(row["asset_ids"]),
        entra_fields=frozenset(row["entra_fields"]), locked_fields=frozenset(row["locked_fields"]),
    )


async def load_by_ids(conn: Conn, ids: Sequence[str], *, lock: bool = False) -> dict[str, StoredEndUser]:
    rows = await conn.fetch(
        END_USER_SELECT + " WHERE e.id = ANY($1::uuid[])" + (" FOR UPDATE OF e" if lock else ""), list(ids))
    return {r["id"]: stored_end_user(r) for r in rows}


async def excluded_object_ids(conn: Conn, organization_id: str, tenant_id: str) -> frozenset[str]:
    rows = await conn.fetch(
        "SELECT entra_object_id FROM end_user_exclusions WHERE organization_id = $1::uuid AND entra_tenant_id = $2",
        organization_id, tenant_id)
    return frozenset(r[0] for r in rows)


# ---- the journal ------------------------------------------------------------------------------------------

async def journal(
    conn: Conn, rows: Sequence[tuple[Any, str, str | None, str | None]], *, run_id: str | None, actor: str,
    action: str | Sequence[str], reason: str | Sequence[str | None] | None = None,
) -> None:
    """Journal `rows` of (end_user_id, field, old, new) in one statement; `action` and `reason` are one value
    for every row or one per row."""
    if not rows:
        return
    actions = [action] * len(rows) if isinstance(action, str) else list(action)
    reasons = [reason] * len(rows) if reason is None or isinstance(reason, str) else list(reason)
    await conn.execute(
        "INSERT INTO end_user_changes (end_user_id, run_id, actor, field, old_value, new_value, action, reason)"
        " SELECT j.id, $1::uuid, $2, j.f, j.o, j.n, j.a, j.r"
        " FROM unnest($3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[]) AS j(id, f, o, n, a, r)",
        run_id, actor, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows],
        actions, reasons,
    )


# ---- the sync's bulk writes ---------------------------------------------------------------------------------

_CREATE_COLUMNS = ("id", "organization_id", *END_USER_FIELDS, "sync_state", "entra_tenant_id", "entra_object_id",
                   "microsoft", "content_hash", "last_synced_at", "entra_fields")


async def write_creates(conn: Conn, *, org: OrgContext, run_id: str | None, creates: Sequence[Create]) -> None:
    """New End Users, their journal entries and Asset links, each written with COPY (the bulk path)."""
    if not creates:
        return
    now = datetime.now(UTC)
    org_id, run = uuid.UUID(org.organization_id), uuid.UUID(run_id) if run_id else None
    ids = time_ordered_uuids(len(creates))
    await conn.copy_records_to_table("end_users", columns=_CREATE_COLUMNS, records=[
        (i, org_id, *(x.fields.get(f) for f in END_USER_FIELDS), "synced", org.tenant_id, x.entra_object_id,
         x.microsoft, x.content_hash, now, list(x.entra_fields))
        for i, x in zip(ids, creates, strict=True)
    ])
    await conn.copy_records_to_table(
        "end_user_changes", columns=("end_user_id", "run_id", "field", "old_value", "new_value", "action"),
        records=[(i, run, "created", None, x.entra_object_id, "create") for i, x in zip(ids, creates, strict=True)],
    )
    links = [(i, uuid.UUID(a)) for i, x in zip(ids, creates, strict=True) for a in x.asset_ids]
    if links:
        await conn.copy_records_to_table("end_user_assets", columns=("end_user_id", "asset_id"), records=links)


def time_ordered_uuids(count: int) -> list[uuid.UUID]:
    """`count` UUIDv7 (RFC 9562: millisecond time, then random bits), ascending: End User ids that append to
    the primary key's index instead of landing on a random page of it as version 4 ids do."""
    stamp = (int(time.time() * 1000) & (1 << 48) - 1) << 80 | 0x7 << 76 | 0b10 << 62
    randoms = sorted(int.from_bytes(os.urandom(10), "big") >> 6 for _ in range(count))  # 74 random bits each
    return [uuid.UUID(int=stamp | (r >> 62) << 64 | r & (1 << 62) - 1) for r in randoms]


class StaleRead(Exception):
    """A write decided from End Users read before another write changed them (see `write_updates`)."""


async def write_updates(conn: Conn, *, org: OrgContext, run_id: str | None, updates: Sequence[Update]) -> None:
    """Refresh (or adopt) End Users set-based; the fields were merged by the core (locks and operator-owned
    fields kept), and a reactivated leaver loses its leaver card."""
    if not updates:
        return
    u = updates
    n = len(END_USER_FIELDS)
    status = await conn.execute(
        f"""UPDATE end_users e SET {", ".join(f"{f} = u.f{i}" for i, f in enumerate(END_USER_FIELDS))},
                   microsoft = u.ms, content_hash = u.h, sync_state = u.st, sync_state_reason = u.rsn,
                   entra_tenant_id = $1, entra_object_id = u.oid, last_synced_at = now(), updated_at = now(),
                   entra_fields = string_to_array(u.ef, ','), leaver = NULL
            FROM unnest($2::uuid[], {", ".join(f"${i + 3}::text[]" for i in range(n))}, ${n + 3}::text[],
                        ${n + 4}::jsonb[], ${n + 5}::bytea[], ${n + 6}::text[], ${n + 7}::text[], ${n + 8}::text[],
                        ${n + 9}::bool[])
                 AS u(id, {", ".join(f"f{i}" for i in range(n))}, oid, ms, h, st, rsn, ef, adopt)
            WHERE e.id = u.id AND (NOT u.adopt OR e.entra_object_id IS NULL)""",
        org.tenant_id, [x.end_user_id for x in u],
        *[[x.fields.get(f) for x in u] for f in END_USER_FIELDS],
        [x.entra_object_id for x in u], [x.microsoft for x in u], [x.content_hash for x in u],
        [x.sync_state for x in u], [x.sync_state_reason for x in u], [",".join(x.entra_fields) for x in u],
        [x.link for x in u],
    )
    if int(status.split()[-1]) != len(u):
        # An adoption decided from a read taken before another chunk's write linked that End User (the
        # projection reads ahead): nothing of this transaction may stand; the caller decides it again.
        raise StaleRead(f"{len(u) - int(status.split()[-1])} End Users were linked since they were read")
    rows: list[tuple[Any, str, str | None, str | None]] = []
    actions: list[str] = []
    for x in u:
        action = "adopt" if x.link else "update"
        entries = [(x.end_user_id, ch.field, ch.old, ch.new) for ch in x.changes]
        if x.link or (x.old_state is not None and x.old_state != x.sync_state):
            entries.append((x.end_user_id, "sync_state", x.old_state, x.sync_state))
        rows += entries
        actions += [action] * len(entries)
    await journal(conn, rows, run_id=run_id, actor=SYNC, action=actions)
    await _relink_assets(conn, [(x.end_user_id, x.asset_ids) for x in u])


def _state_action(change: StateChange) -> str:
    return {"deactivated": "deactivate", "out_of_scope": "out_of_scope",
            "sync_disabled": "stop_updating"}.get(change.sync_state, "state")


async def write_state_changes(
    conn: Conn, *, run_id: str | None, changes: Sequence[StateChange], actor: str = SYNC,
    action: str | None = None,
) -> None:
    """Move End Users' sync state (fields untouched). Becoming `deactivated` records the leaver card: the
    core's Entra side (evidence, last sign-in, licences) with when and the Assets linked at that moment."""
    if not changes:
        return
    await conn.execute(
        """UPDATE end_users e SET sync_state = c.st, sync_state_reason = c.rsn, updated_at = now(),
                  leaver = CASE WHEN c.st <> 'deactivated' THEN NULL
                    ELSE coalesce(c.card::jsonb, '{}'::jsonb) || jsonb_build_object('at', now(), 'assets',
                      (SELECT coalesce(jsonb_agg(jsonb_build_object('id', a.id, 'name', a.name) ORDER BY a.name, a.id),
                                       '[]'::jsonb)
                       FROM end_user_assets ea JOIN assets a ON a.id = ea.asset_id WHERE ea.end_user_id = e.id)) END
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS c(id, st, rsn, card) WHERE e.id = c.id""",
        [c.end_user_id for c in changes], [c.sync_state for c in changes],
        [c.sync_state_reason for c in changes],
        [json.dumps(c.leaver) if c.leaver is not None else None for c in changes],
    )
    await journal(
        conn, [(c.end_user_id, "sync_state", c.old_state, c.sync_state) for c in changes], run_id=run_id,
        actor=actor, action=[action or _state_action(c) for c in changes],
        reason=[c.sync_state_reason for c in changes],
    )


async def _relink_assets(conn: Conn, links: Sequence[tuple[Any, frozenset[str]]]) -> None:
    if not links:
        return
    ids = [i for i, _ in links]
    await conn.execute("DELETE FROM end_user_assets WHERE end_user_id = ANY($1::uuid[])", ids)
    pairs = [(i, a) for i, assets in links for a in assets]
    if pairs:
        await conn.execute(
            "INSERT INTO end_user_assets (end_user_id, asset_id) "
            "SELECT * FROM unnest($1::uuid[], $2::uuid[]) ON CONFLICT DO NOTHING",
            [p[0] for p in pairs], [p[1] for p in pairs],
        )


# ---- operator changes that run in the caller's transaction ----------------------------------------------------

async def stop_updating(
    conn: Conn, *, organization_ids: Sequence[Any], tenant_id: str | None, reason: str, action: str
) -> int:
    """Linked End Users of these Organizations (those linked to `tenant_id`, when given) stop being updated,
    as `core.reconcile.stop_updating` decides: deactivated and excluded ones keep their state."""
    rows = await conn.fetch(
        END_USER_SELECT + " WHERE e.organization_id = ANY($1::uuid[]) AND e.entra_object_id IS NOT NULL"
        " AND ($2::text IS NULL OR e.entra_tenant_id = $2) FOR UPDATE OF e",
        [str(o) for o in organization_ids], tenant_id,
    )
    plan = decide_stop_updating((stored_end_user(r) for r in rows), reason=reason)
    await write_state_changes(conn, run_id=None, changes=plan.state_changes, actor=OPERATOR, action=action)
    return len(plan.state_changes)


async def create_manual(conn: Conn, organization_id: Any, fields: Mapping[str, str | None]) -> str:
    columns = [f for f in END_USER_FIELDS if f in fields]
    placeholders = ", ".join(f"${i}" for i in range(2, len(columns) + 2))
    new_id = await conn.fetchval(
        f"INSERT INTO end_users (organization_id, {', '.join(columns)}, sync_state)"
        f" VALUES ($1, {placeholders}, 'manual') RETURNING id", organization_id, *(fields[c] for c in columns))
    await journal(conn, [(new_id, f, None, fields[f]) for f in columns if fields[f] is not None]
                  + [(new_id, "sync_state", None, "manual")], run_id=None, actor=OPERATOR, action="create")
    return str(new_id)


async def link(
    conn: Conn, end_user_id: Any, *, tenant_id: str, object_id: str, state: str, reason: str | None, old_state: str
) -> None:
    """Link an existing End User to an Entra user (review resolution); the next sync fills it."""
    await conn.execute(
        "UPDATE end_users SET entra_tenant_id = $2, entra_object_id = $3, sync_state = $4,"
        " sync_state_reason = $5, content_hash = NULL, updated_at = now() WHERE id = $1",
        end_user_id, tenant_id, object_id, state, reason,
    )
    rows = [(end_user_id, "entra_object_id", None, object_id), (end_user_id, "sync_state", old_state, state)]
    await journal(conn, rows, run_id=None, actor=OPERATOR, action="link", reason="review resolved by linking")


async def create_linked(
    conn: Conn, organization_id: Any, *, tenant_id: str, object_id: str, state: str, reason: str | None,
    fields: Mapping[str, str | None],
) -> str:
    """Create an End User linked to an Entra user (review resolution)."""
    cols = ", ".join(END_USER_FIELDS)
    params = ", ".join(f"${i}" for i in range(6, len(END_USER_FIELDS) + 6))
    new_id = await conn.fetchval(
        f"INSERT INTO end_users (organization_id, entra_tenant_id, entra_object_id, sync_state,"
        f" sync_state_reason, {cols}) VALUES ($1, $2, $3, $4, $5, {params}) RETURNING id",
        organization_id, tenant_id, object_id, state, reason, *(fields.get(f) for f in END_USER_FIELDS),
    )
    await journal(conn, [(new_id, f, None, fields.get(f)) for f in END_USER_FIELDS if fields.get(f) is not None]
                  + [(new_id, "sync_state", None, state)], run_id=None, actor=OPERATOR, action="create",
                  reason="review resolved by creating")
    return str(new_id)


# ---- operator actions with their own transaction ------------------------------------------------------------

class EndUserStore:
    """The admin API's End User operations that change state or read the journal."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

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
        async with self._pool.acquire() as conn, conn.transaction():
            run = await conn.fetchrow(
                "SELECT id::text, organization_id::text, tenant_id, status, filters::text AS filters, undone_at"
                " FROM sync_runs WHERE id = $1::uuid FOR UPDATE", run_id)
            if run is None:
                raise NotFound(f"no sync run {run_id}")
            await _check_undoable(conn, run)
            subjects = await _undo_subjects(conn, run_id)
            steps = plan_undo(subjects)
            if not dry_run:
                await _apply_undo(conn, run_id, steps)
                await conn.execute("UPDATE sync_runs SET undone_at = now() WHERE id = $1::uuid", run_id)
        return _undo_report(run_id, steps, dry_run=dry_run)


async def _require_org(pool: asyncpg.Pool, organization_id: str) -> None:
    if not await pool.fetchval("SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1::uuid)", organization_id):
        raise NotFound(f"no Organization {organization_id}")


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


# ---- undo -----------------------------------------------------------------------------------------------------

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
        ids, list(_OPERATOR_DECISIONS), since)}
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
