"""Who owns an End User's fields, and how a run is undone: decisions shared by the sync, the preview and the
admin API.

- **Ownership.** A field Entra supplied a value for is Entra's; a field Entra never supplied is the operator's
  and the sync never blanks it (adopting an End User by email keeps the phone the operator typed); a value
  Entra supplied and later cleared is cleared. A field an operator edited on a linked End User is *locked*:
  the sync never overwrites it until the lock is handed back.
- **Leavers.** What offboarding needs from the Entra side when an End User is deactivated: the evidence, the
  last sign-in, the licences assigned at that moment (the store adds when, and the linked Assets).
- **Undo.** Which of a run's End User changes can be reversed, from the run's journal and the End Users as
  they are now; and whether the cause of a run is still in force (then the next sync would redo it).

Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from typing import Any, Final, Literal

import msgspec

from worker.core.model import SYNC_STATES, MirrorUser, StoredEndUser, SyncState
from worker.core.projection import Fields, microsoft_data

# ---- field ownership -----------------------------------------------------------------------------------------

def supplied(projected: Fields) -> tuple[str, ...]:
    """The fields Entra supplies a value for, in the projection's order (END_USER_FIELDS)."""
    return tuple([name for name, value in projected.items() if value is not None])


def merge_fields(
    stored: Mapping[str, str | None], projected: Fields, *, entra_fields: Set[str], locked: Set[str]
) -> Fields:
    """The End User fields after a sync: Entra's values, except where a field is locked (the operator's
    value stays) or Entra has no value for a field it never supplied (the stored value stays). Returns
    `projected` itself when nothing of the stored record survives, so callers can reuse its hash."""
    # The hot path of a sync that updates many users: one pass over the projection, locks looked up only
    # when there are any.
    kept = [name for name, value in projected.items()
            if value is None and name not in entra_fields and stored.get(name) is not None]
    if locked:
        kept += [name for name in locked if name not in kept]
    if not kept:
        return projected
    return projected | {name: stored.get(name) for name in kept}


# ---- leavers -----------------------------------------------------------------------------------------------

Evidence = Literal["deleted", "soft_deleted", "absent_from_complete_listing", "disabled"]
_EVIDENCE: Final[dict[str, Evidence]] = {
    "deleted": "deleted", "changed": "soft_deleted", "absent": "absent_from_complete_listing",
}


def leaver_evidence(u: MirrorUser) -> Evidence | None:
    """Why `u` is a leaver, as explicit evidence; None while the account is active."""
    if u.removed is not None:
        return _EVIDENCE[u.removed]
    if u.account_enabled is False:
        return "disabled"
    return None


def leaver_card(u: MirrorUser, *, sku_names: Mapping[str, str], reason: str) -> dict[str, object] | None:
    """The Entra side of a leaver card: evidence, reason, last sign-in and the licences assigned now."""
    evidence = leaver_evidence(u)
    if evidence is None:
        return None
    microsoft = microsoft_data(u, sku_names)
    return {"evidence": evidence, "reason": reason, "last_sign_in_at": u.last_sign_in_at,
            "licenses": microsoft["licenses"], "user_principal_name": u.user_principal_name}


# ---- undo --------------------------------------------------------------------------------------------------

class JournalEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One journalled change of one End User (end_user_changes rows sharing an event)."""

    action: str
    fields: dict[str, tuple[str | None, str | None]] = {}
    sync_state: tuple[str | None, str | None] | None = None


class UndoSubject(msgspec.Struct, frozen=True, kw_only=True):
    """An End User a run changed: the run's events (oldest first), the record now, and whether an operator
    edited, locked, excluded or linked it since the run."""

    end_user_id: str
    events: tuple[JournalEvent, ...]
    current: StoredEndUser | None
    operator_changed: bool = False


UndoKind = Literal["remove", "unlink", "restore", "skip"]


class UndoStep(msgspec.Struct, frozen=True, kw_only=True):
    end_user_id: str
    kind: UndoKind
    fields: dict[str, str | None] = {}           # values to put back
    sync_state: SyncState | None = None          # state to put back (None: leave it)
    reason: str = ""


SKIP_GONE: Final = "the End User no longer exists"
SKIP_OPERATOR: Final = "changed by an operator since the run"
SKIP_NOTHING: Final = "changed since the run; nothing of the run is left to reverse"
_CREATED: Final = frozenset({"create"})
_ADOPTED: Final = frozenset({"adopt"})


def plan_undo(subjects: Iterable[UndoSubject]) -> tuple[UndoStep, ...]:
    """Reverse a run's End User changes: remove what it created (unless an operator changed it since), unlink
    what it adopted and restore the values the adoption replaced, restore the fields and states it changed.
    A field (or state) is restored only while it still holds what the run wrote: a later change wins."""
    return tuple(_undo_one(s) for s in subjects)


def _undo_one(s: UndoSubject) -> UndoStep:
    if s.current is None:
        return UndoStep(end_user_id=s.end_user_id, kind="skip", reason=SKIP_GONE)
    actions = {e.action for e in s.events}
    if actions & _CREATED:
        if s.operator_changed:
            return UndoStep(end_user_id=s.end_user_id, kind="skip", reason=SKIP_OPERATOR)
        return UndoStep(end_user_id=s.end_user_id, kind="remove", reason="created by the run")
    fields, state = _net_changes(s.events)
    restore = {name: old for name, (old, new) in fields.items() if s.current.fields.get(name) == new}
    if actions & _ADOPTED:
        before = state[0] if state is not None and state[0] is not None else "manual"
        return UndoStep(end_user_id=s.end_user_id, kind="unlink", fields=restore,
                        sync_state=_state(before), reason="adopted by the run")
    back = None
    if state is not None and state[0] is not None and s.current.sync_state == state[1]:
        back = _state(state[0])
    if not restore and back is None:
        return UndoStep(end_user_id=s.end_user_id, kind="skip", reason=SKIP_NOTHING)
    return UndoStep(end_user_id=s.end_user_id, kind="restore", fields=restore, sync_state=back,
                    reason="changed by the run")


def _net_changes(
    events: Iterable[JournalEvent],
) -> tuple[dict[str, tuple[str | None, str | None]], tuple[str | None, str | None] | None]:
    """Per field, the value before the run's first change and after its last; the same for the state."""
    fields: dict[str, tuple[str | None, str | None]] = {}
    state: tuple[str | None, str | None] | None = None
    for e in events:
        for name, (old, new) in e.fields.items():
            fields[name] = (fields[name][0] if name in fields else old, new)
        if e.sync_state is not None:
            state = (state[0] if state is not None else e.sync_state[0], e.sync_state[1])
    return {k: v for k, v in fields.items() if v[0] != v[1]}, state


_STATES: Final[frozenset[str]] = frozenset(SYNC_STATES)


def _state(value: str) -> SyncState:
    if value not in _STATES:
        raise ValueError(f"not a sync state: {value}")
    return value  # type: ignore[return-value]


def cause_in_force(
    *, run_tenant: str | None, run_filters: Mapping[str, Any] | None, sync_status: str,
    mapped_tenant: str | None, filters: Mapping[str, Any] | None,
) -> str | None:
    """Why undoing a run would be redone by the next sync, or None when its cause no longer applies: the
    Organization still syncs, from the same Microsoft tenant, with the same filters (a run recorded without
    its filters counts as the same)."""
    if sync_status != "enabled" or mapped_tenant is None or mapped_tenant != run_tenant:
        return None
    if run_filters is not None and filters is not None and dict(run_filters) != dict(filters):
        return None
    return (f"the cause of this run is still in force: user sync is enabled from Microsoft tenant {run_tenant}"
            " with the same filters, so the next sync would redo it; disable the sync, fix the mapping or"
            " change the filters first")
