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

from worker.core.model import MirrorUser, OrgContext, Plan, StoredEndUser
from worker.core.projection import email_of

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
        kept = self.samples[category]
        kept.append(sample)
        kept.sort(key=lambda s: s["entra_object_id"])  # the first ids, whatever order plans arrive in
        del kept[SAMPLE_SIZE:]
