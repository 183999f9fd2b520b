"""Preview: what the sync would do with proposed filters, told by the sync's own plans.

The preview runs `reconcile` over the mirror chunk by chunk, exactly as an Organization's sync does, but writes
nothing. Two things stand in for the writes:

- `Written` holds the End Users as the plans of earlier chunks would leave them (created, adopted, their emails
  changed), and lays them over what the database returns for the next chunk, so a later chunk sees an email an
  earlier one took, as the sync does after writing it;
- `Tally` counts each plan the way the sync counts a run (`created`, `updated`, `stopped`, `review`,
  `deactivated`), with a few samples of each.

Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from worker.core.filters import Predicate
from worker.core.model import MirrorUser, OrgContext, Plan, ScopedUser, StoredEndUser
from worker.core.projection import email_of
from worker.core.reconcile import REASON_OUT_OF_SCOPE

SAMPLE_SIZE: Final = 5
CATEGORIES: Final = ("would_create", "would_update", "would_stop_updating", "would_review", "would_deactivate")
_NEW_PREFIX: Final = "new:"  # ids of End Users a preview would create (none exist yet)


def _key(email: str | None) -> str | None:
    return email.strip().lower() if email else None


class Written:
    """End Users as the plans recorded so far would leave them: laid over fresh reads of later chunks."""

    def __init__(self, org: OrgContext) -> None:
        self._org = org
        self._by_id: dict[str, StoredEndUser] = {}
        self._by_email: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def record(self, plan: Plan, *, linked: Mapping[str, StoredEndUser],
               by_email: Mapping[str, Sequence[StoredEndUser]]) -> None:
        """Remember what `plan` (decided from `linked` and `by_email`) would write to End Users' emails and links."""
        before = {e.id: e for e in linked.values()} | {e.id: e for es in by_email.values() for e in es}
        for c in plan.creates:
            self._put(StoredEndUser(
                id=_NEW_PREFIX + c.entra_object_id, organization_id=self._org.organization_id, fields=c.fields,
                sync_state="synced", entra_tenant_id=self._org.tenant_id, entra_object_id=c.entra_object_id,
                microsoft=c.microsoft, content_hash=c.content_hash, asset_ids=c.asset_ids,
            ))
        for u in plan.updates:
            old = self._by_id.get(u.end_user_id) or before.get(u.end_user_id)
            if old is None:  # reconcile only updates End Users it was given
                raise ValueError(f"update of End User {u.end_user_id}, which the plan's inputs do not hold")
            self._put(msgspec.structs.replace(
                old, fields=u.fields, sync_state=u.sync_state, sync_state_reason=u.sync_state_reason,
                entra_tenant_id=self._org.tenant_id, entra_object_id=u.entra_object_id, microsoft=u.microsoft,
                content_hash=u.content_hash, asset_ids=u.asset_ids,
            ))

    def _put(self, e: StoredEndUser) -> None:
        old = self._by_id.get(e.id)
        if old is not None and (old_key := _key(old.fields.get("email"))):
            self._by_email.get(old_key, set()).discard(e.id)
        self._by_id[e.id] = e
        if key := _key(e.fields.get("email")):
            self._by_email.setdefault(key, set()).add(e.id)

    def over(self, by_email: Mapping[str, Sequence[StoredEndUser]], keys: Iterable[str]
             ) -> dict[str, list[StoredEndUser]]:
        """`by_email` as read from the database for `keys`, with the End Users recorded here in their new places."""
        out: dict[str, list[StoredEndUser]] = {}
        for key in keys:
            held, recorded = by_email.get(key, ()), self._by_email.get(key)
            if not recorded and not any(e.id in self._by_id for e in held):
                if held:  # the common case, and every case before any plan wrote something
                    out[key] = list(held)
                continue
            stored = [e for e in held if e.id not in self._by_id]
            stored += [self._by_id[i] for i in sorted(recorded or ())]
            if stored:
                out[key] = stored
        return out


@dataclass
class Tally:
    """Counts and samples of plans, as the sync counts a run."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {c: [] for c in CATEGORIES})
    matching: int = 0
    details_wanted: set[str] = field(default_factory=set)  # sampled settled users, their details not read

    def settle(self, users: Iterable[ScopedUser], *, in_scope: Predicate, excluded: frozenset[str]) -> None:
        """Count *settled* users: each linked to a `synced` End User written from the inputs the user has now
        (its input hash is the user's `projection.input_hash`), not a leaver. `reconcile` decides such a user
        from its scope alone, and so does this, without the user's properties or End User: an excluded one is
        left alone, in scope its End User is unchanged, out of scope it stops updating
        (`tests/unit/test_input_hash.py` holds this equal to `add` of what `reconcile` plans).
        Samples of them lack the display name and End User id: `wanted` names them, `fill` adds them."""
        kept = self.samples["would_stop_updating"]
        stops = 0
        for u in users:
            if in_scope(u):
                self.matching += 1
            elif u.id not in excluded:
                stops += 1
                if len(kept) < SAMPLE_SIZE or u.id < kept[-1]["entra_object_id"]:
                    self._keep(kept, {"entra_object_id": u.id, "display_name": None, "email": email_of(u),
                                      "end_user_id": None, "reason": REASON_OUT_OF_SCOPE})
                    self.details_wanted.add(u.id)
        self.counts["would_stop_updating"] += stops

    def leave(self, users: Iterable[ScopedUser], *, in_scope: Predicate) -> None:
        """Count users without an End User that the filters leave out, or that left: `reconcile` only counts
        them out of scope (an excluded one, excluded), which the preview does not show; they count only
        towards `matching` (`tests/unit/test_input_hash.py` holds this equal to `add` too)."""
        self.matching += sum(1 for u in users if u.removed is None and in_scope(u))

    def wanted(self) -> list[str]:
        """Settled users among the samples, whose display name and End User id are still to be read."""
        return sorted(s["entra_object_id"] for kept in self.samples.values() for s in kept
                      if s["entra_object_id"] in self.details_wanted)

    def fill(self, details: Mapping[str, tuple[str | None, str | None]]) -> None:
        """Add the display name and End User id (`details`, by object id) to the samples of settled users."""
        for kept in self.samples.values():
            for s in kept:
                if s["entra_object_id"] in self.details_wanted and s["entra_object_id"] in details:
                    s["display_name"], s["end_user_id"] = details[s["entra_object_id"]]
        self.details_wanted.clear()

    def add(self, plan: Plan, users: Iterable[MirrorUser], *, in_scope: Any) -> None:
        """Count `plan`, decided for `users`; `in_scope` is the compiled filters (for `matching`)."""
        by_id = {u.id: u for u in users}
        self.matching += sum(1 for u in by_id.values() if u.removed is None and in_scope(u))
        stops = [c for c in plan.state_changes if c.sync_state == "out_of_scope"]
        entries: tuple[tuple[str, Sequence[Any]], ...] = (
            ("would_create", plan.creates), ("would_update", plan.updates), ("would_stop_updating", stops),
            ("would_review", plan.reviews), ("would_deactivate", plan.deactivations),
        )
        for category, items in entries:
            self.counts[category] += len(items)
            for item in items:
                self._sample(category, item, by_id.get(item.entra_object_id))

    def _sample(self, category: str, item: Any, user: MirrorUser | None) -> None:
        sample = {
            "entra_object_id": item.entra_object_id,
            "display_name": user.display_name if user else None,
            "email": (item.fields.get("email") if hasattr(item, "fields") else email_of(user) if user else None),
            "end_user_id": getattr(item, "end_user_id", None),
        }
        if category == "would_review":
            sample["reason"] = item.reason
        if category in ("would_stop_updating", "would_deactivate"):
            sample["reason"] = item.sync_state_reason
        self._keep(self.samples[category], sample)

    @staticmethod
    def _keep(kept: list[dict[str, Any]], sample: dict[str, Any]) -> None:
        kept.append(sample)
        kept.sort(key=lambda s: s["entra_object_id"])  # the first ids, whatever order plans arrive in
        del kept[SAMPLE_SIZE:]
