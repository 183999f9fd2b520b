"""The one write path for End Users, and the journal's reader.

Every End User change goes through this module and into `end_user_changes`: the sync's set-based writes
(creates, updates and adoptions, state changes; journalled in bulk with the rows they write), and each
operator action — disable, unmap/remap, review resolution, manual create, edit, unlock, delete, exclude,
include, undo. A journal row names its End User, the run (sync) or none, the actor (`sync` or `operator`),
the action, the field with its old and new value, and a reason; one *event* is the rows of one End User
sharing (changed_at, run_id, actor, action, reason).

The decisions (which fields survive a sync, what stopping updates does, how a run is undone) are the pure
core's (`worker.core.reconcile`, `worker.core.ownership`); this module reads what they need and writes what
they decide. Functions here take a connection and run inside the caller's transaction. Operator actions with a
transaction of their own are `worker.store.end_user_actions`; undoing a run is `worker.store.run_undo`.
jsonb is written as `$n::text::jsonb` and read as `::text` where the pool's codecs may be absent.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping, Sequence
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
from worker.core.reconcile import stop_updating as decide_stop_updating
from worker.store import Conn

Row = asyncpg.Record | Mapping[str, Any]

SYNC, OPERATOR = "sync", "operator"
EVENT = "event"  # the journal row of an event that changes no field (exclude, include, unlock, delete)
# Operator actions after which a run's undo leaves an End User it created alone.
OPERATOR_DECISIONS = ("edit", "unlock", "exclude", "link")
REASON_EXCLUDED = "excluded by an operator"
REASON_INCLUDED = "included again by an operator; the next sync decides its state"


# ---- reading End Users as the core sees them --------------------------------------------------------------

END_USER_SELECT = f"""
    SELECT e.id::text AS id, e.organization_id::text AS organization_id, {", ".join("e." + f for f in END_USER_FIELDS)},
           e.sync_state, e.sync_state_reason, e.entra_tenant_id, e.entra_object_id, e.microsoft, e.content_hash,
           e.entra_fields, e.locked_fields, e.input_hash,
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
        input_hash=row["input_hash"],
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
                   "microsoft", "content_hash", "last_synced_at", "entra_fields", "input_hash")


async def write_creates(conn: Conn, *, org: OrgContext, run_id: str | None, creates: Sequence[Create]) -> None:
    """New End Users, their journal entries and Asset links, each written with COPY (the bulk path)."""
    if not creates:
        return
    now = datetime.now(UTC)
    org_id, run = uuid.UUID(org.organization_id), uuid.UUID(run_id) if run_id else None
    ids = time_ordered_uuids(len(creates))
    await conn.copy_records_to_table("end_users", columns=_CREATE_COLUMNS, records=[
        (i, org_id, *(x.fields.get(f) for f in END_USER_FIELDS), "synced", org.tenant_id, x.entra_object_id,
         x.microsoft, x.content_hash, now, list(x.entra_fields), x.input_hash)
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
                   entra_fields = string_to_array(u.ef, ','), leaver = NULL, input_hash = u.ih
            FROM unnest($2::uuid[], {", ".join(f"${i + 3}::text[]" for i in range(n))}, ${n + 3}::text[],
                        ${n + 4}::jsonb[], ${n + 5}::bytea[], ${n + 6}::text[], ${n + 7}::text[], ${n + 8}::text[],
                        ${n + 9}::bool[], ${n + 10}::bytea[])
                 AS u(id, {", ".join(f"f{i}" for i in range(n))}, oid, ms, h, st, rsn, ef, adopt, ih)
            WHERE e.id = u.id AND (NOT u.adopt OR e.entra_object_id IS NULL)""",
        org.tenant_id, [x.end_user_id for x in u],
        *[[x.fields.get(f) for x in u] for f in END_USER_FIELDS],
        [x.entra_object_id for x in u], [x.microsoft for x in u], [x.content_hash for x in u],
        [x.sync_state for x in u], [x.sync_state_reason for x in u], [",".join(x.entra_fields) for x in u],
        [x.link for x in u], [x.input_hash for x in u],
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


async def write_input_hashes(conn: Conn, hashes: Sequence[tuple[str, bytes]]) -> None:
    """Store the input hashes of End Users a sync found unchanged (`Plan.input_hashes`): nothing else of them
    changes, so nothing is journalled. Only where the End User is still `synced` and holds the content the
    sync compared it with: an operator's write since then keeps its hash cleared."""
    if not hashes:
        return
    await conn.execute(
        """UPDATE end_users e SET input_hash = h.ih
           FROM unnest($1::uuid[], $2::bytea[]) AS h(id, ih)
           WHERE e.id = h.id AND e.sync_state = 'synced' AND e.input_hash IS DISTINCT FROM h.ih""",
        [h[0] for h in hashes], [h[1] for h in hashes],
    )


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
