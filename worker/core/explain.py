"""Why is this Entra user (not) an End User of an Organization, and what would the next sync do about it?

`explain` takes the facts the store gathered (the mirror user, the Organization's filters and sync status, the
linked End User, an open review item, a held deactivation) and the plan `reconcile` makes for this one user
right now, and answers: each filter section with the user's values and the verdict (`filters.explain`),
whether the user is in scope, leaver evidence, and `notes` — one sentence per reason the End User's
`sync_state` is what it is.

Extension point: `NOTES` is the list of note functions, each `Facts -> str | None`, asked in order. A new
reason an End User's state can have (an exclusion, locked fields …) is one more function there, and one more
field in `Facts` for the store to fill.
Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from worker.core.filters import SectionMatch, filters_to_json
from worker.core.filters import explain as explain_sections
from worker.core.model import Filters, MirrorUser, Plan, StoredEndUser
from worker.core.reconcile import leaver_reason


class Facts(msgspec.Struct, frozen=True, kw_only=True):
    """What the store knows about one Entra user and one Organization."""

    user: MirrorUser | None                        # None: not in the tenant mirror
    filters: Filters | None                        # None: user sync not set up
    sync_status: str                               # enabled | disabled | not_set_up
    end_user: StoredEndUser | None                 # the linked End User (or the one asked for by email)
    review: tuple[str, str] | None = None          # an open review item: (id, reason)
    held_run_id: str | None = None                 # the held run holding this user's deactivation
    next_sync: Plan | None = None                  # reconcile's plan for this user alone, decided now


Note = Callable[[Facts], str | None]


def _sections(facts: Facts) -> tuple[SectionMatch, ...]:
    if facts.user is None or facts.filters is None:
        return ()
    return explain_sections(facts.user, facts.filters)


def _in_scope(facts: Facts) -> bool | None:
    sections = _sections(facts)
    return all(s.matched for s in sections) if sections else None


def _not_in_mirror(facts: Facts) -> str | None:
    if facts.user is not None:
        return None
    return "the Entra user is not in the tenant mirror (never listed, or the tenant was never synced)"


def _sync_status(facts: Facts) -> str | None:
    if facts.sync_status == "not_set_up":
        return "user sync is not set up for this Organization"
    if facts.sync_status == "disabled":
        return "user sync is disabled for this Organization: End Users are kept and not updated"
    return None


def _leaver(facts: Facts) -> str | None:
    reason = leaver_reason(facts.user) if facts.user is not None else None
    return f"leaver evidence: {reason}" if reason else None


def _scope(facts: Facts) -> str | None:
    sections = _sections(facts)
    if not sections:
        return None
    missed = [s.section for s in sections if not s.matched]
    return "matches every filter section" if not missed else "out of scope: no match in " + ", ".join(missed)


def _state(facts: Facts) -> str | None:
    e = facts.end_user
    if e is None:
        return "no End User is linked to this Entra user"
    reason = f" ({e.sync_state_reason})" if e.sync_state_reason else ""
    if e.sync_state == "manual":
        return "a manual End User: the sync never changes it" + (
            "" if e.entra_object_id is None else ", though it is linked")
    if e.sync_state == "synced":
        return "synced: updated by the sync while the user stays in scope" + reason
    if e.sync_state == "out_of_scope":
        return "out_of_scope: kept, and not updated while the user does not match the filters" + reason
    if e.sync_state == "deactivated":
        return "deactivated: the user left" + reason + "; reactivated if restored and in scope"
    return f"{e.sync_state}{reason}"


def _review(facts: Facts) -> str | None:
    if facts.review is None:
        return None
    review_id, reason = facts.review
    return (f"review pending ({reason}): the sync creates or updates nothing for this user until review item"
            f" {review_id} is resolved")


def _held(facts: Facts) -> str | None:
    if facts.held_run_id is None:
        return None
    return f"its deactivation is held in run {facts.held_run_id}: confirm or dismiss that run"


NOTES: list[Note] = [_not_in_mirror, _sync_status, _leaver, _scope, _state, _review, _held]


def next_sync(plan: Plan | None) -> dict[str, Any] | None:
    """What `plan` (reconcile's, for this user alone) would do: action and, where there is one, the reason."""
    if plan is None:
        return None
    if plan.creates:
        return {"action": "create"}
    if plan.updates:
        update = plan.updates[0]
        return {"action": "adopt" if update.link else "update", "end_user_id": update.end_user_id,
                "fields": [c.field for c in update.changes]}
    if plan.deactivations:
        return {"action": "deactivate", "reason": plan.deactivations[0].sync_state_reason}
    if plan.state_changes:
        return {"action": "stop_updating", "reason": plan.state_changes[0].sync_state_reason}
    if plan.reviews:
        return {"action": "review", "reason": plan.reviews[0].reason,
                "candidate_ids": list(plan.reviews[0].candidate_ids)}
    return {"action": "nothing"}


def explain(facts: Facts) -> dict[str, Any]:
    """The answer of `GET …/user-sync/explain` (but the identifying fields the caller adds)."""
    return {
        "filters": filters_to_json(facts.filters) if facts.filters is not None else None,
        "sections": [msgspec.to_builtins(s) for s in _sections(facts)],
        "in_scope": _in_scope(facts),
        "leaver": leaver_reason(facts.user) if facts.user is not None else None,
        "notes": [note for f in NOTES if (note := f(facts)) is not None],
        "next_sync": next_sync(facts.next_sync),
    }
