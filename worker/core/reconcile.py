"""Reconcile: decide what happens to an Organization's End Users given the Entra users observed.

`reconcile` turns mirror users into a `Plan` (creates, updates, state changes, deactivations, reviews and
counts); the store applies it. The rules, in the order they are checked:

- An Entra user an operator excluded (or whose End User is `excluded`) is never created nor updated.
- A linked End User (same Organization, Microsoft tenant and object id) in the `manual` state is never
  touched. A *leaver* (deleted, soft-deleted, absent from a complete listing, or disabled) deactivates a
  `synced` or `sync_disabled` End User; `deactivated` and `out_of_scope` ones stay as they are.
- A linked user in scope is refreshed to `synced` (reactivating if needed); nothing is planned when its
  content hash and state already match, and it is not even projected when the End User was written from the
  same inputs (`projection.input_hash`). Its fields are merged as `ownership.merge_fields` says: locked
  fields and fields Entra never supplied keep the stored value. Out of scope, it is marked `out_of_scope`
  and never updated again while it stays out.
- An unlinked user out of scope, or leaving, is only counted. In scope, it adopts the one unlinked End User
  sharing one of its addresses (mail, non-guest UPN); several candidates, or its email already held by
  another End User (emails are unique per Organization), or claimed by another user of the same call, go to
  review; otherwise it is created.

Linked users are decided before unlinked ones so an existing link wins an email over a newcomer whatever the
order of `observed`. Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from worker.core.filters import compile_filters
from worker.core.model import (
    END_USER_FIELDS,
    Create,
    FieldChange,
    MirrorUser,
    OrgContext,
    Plan,
    RemovedReason,
    Review,
    StateChange,
    StoredEndUser,
    SyncState,
    Update,
)
from worker.core.ownership import leaver_card, merge_fields, supplied
from worker.core.projection import (
    AssetIndex,
    Fields,
    Projection,
    content_hash,
    email_keys,
    input_hash,
    org_inputs_hash,
    project,
)

REASON_DELETED: Final = "deleted in Entra ID"
REASON_SOFT_DELETED: Final = "soft-deleted in Entra ID (restorable)"
REASON_ABSENT: Final = "not found in a complete listing of Entra ID"
REASON_DISABLED: Final = "disabled in Entra ID"
REASON_OUT_OF_SCOPE: Final = "no longer matches the user sync filters"

REVIEW_SEVERAL: Final = "several End Users share this email"
REVIEW_EMAIL_TAKEN: Final = "email already used by another synced End User"
REVIEW_NEW_EMAIL_TAKEN: Final = "new email already used by another End User"
REVIEW_SAME_RUN: Final = "another Entra user in this sync has the same email"

_REMOVED_REASONS: Final[dict[RemovedReason, str]] = {
    "deleted": REASON_DELETED,
    "changed": REASON_SOFT_DELETED,
    "absent": REASON_ABSENT,
}
_RESUMABLE: Final[frozenset[SyncState]] = frozenset({"synced", "sync_disabled"})


def leaver_reason(u: MirrorUser) -> str | None:
    """Why `u` counts as having left the Organization, or None while it is active."""
    if u.removed is not None:
        return _REMOVED_REASONS[u.removed]
    if u.account_enabled is False:
        return REASON_DISABLED
    return None


# ---- reconcile ---------------------------------------------------------------------------------------------

def reconcile(
    observed: Iterable[MirrorUser],
    *,
    org: OrgContext,
    linked: Mapping[str, StoredEndUser],
    by_email: Mapping[str, Sequence[StoredEndUser]],
) -> Plan:
    """The plan for `org` given `observed` users of its tenant (the last of repeated object ids wins).

    `linked`: the Organization's End Users linked to these users in this tenant, by object id.
    `by_email`: the Organization's End Users by lower-cased email, for every address of these users.
    """
    rc = _Reconciliation(org=org, by_email=by_email)
    newcomers: list[MirrorUser] = []
    for u in _latest(observed, tenant_id=org.tenant_id):
        stored = linked.get(u.id)
        if u.id in org.excluded or (stored is not None and stored.sync_state == "excluded"):
            rc.plan.excluded += 1
            continue
        if stored is None:
            newcomers.append(u)
        else:
            _decide_linked(rc, u, stored)
    for u in newcomers:
        _decide_newcomer(rc, u)
    return rc.plan.build()


def _latest(observed: Iterable[MirrorUser], *, tenant_id: str) -> Iterable[MirrorUser]:
    latest: dict[str, MirrorUser] = {}
    for u in observed:
        if u.tenant_id != tenant_id:
            raise ValueError(f"user {u.id} belongs to tenant {u.tenant_id}, not {tenant_id}")
        latest[u.id] = u
    return latest.values()


@dataclass(slots=True)
class _PlanBuilder:
    creates: list[Create] = field(default_factory=list)
    updates: list[Update] = field(default_factory=list)
    state_changes: list[StateChange] = field(default_factory=list)
    deactivations: list[StateChange] = field(default_factory=list)
    reviews: list[Review] = field(default_factory=list)
    input_hashes: list[tuple[str, bytes]] = field(default_factory=list)
    unchanged: int = 0
    out_of_scope: int = 0
    excluded: int = 0

    def build(self) -> Plan:
        return Plan(
            creates=tuple(self.creates), updates=tuple(self.updates), state_changes=tuple(self.state_changes),
            deactivations=tuple(self.deactivations), reviews=tuple(self.reviews), unchanged=self.unchanged,
            out_of_scope=self.out_of_scope, excluded=self.excluded, input_hashes=tuple(self.input_hashes),
        )


class _Reconciliation:
    """One reconcile call: compiled inputs, the plan so far, and the emails claimed during the call."""

    def __init__(self, *, org: OrgContext, by_email: Mapping[str, Sequence[StoredEndUser]]) -> None:
        self.in_scope = compile_filters(org.filters)
        self.assets = AssetIndex(org.assets)
        self.sku_names = org.sku_names
        self.org_hash = org_inputs_hash(org.sku_names, org.assets)
        self.by_email = by_email
        self.plan = _PlanBuilder()
        self.claims: dict[str, tuple[str, str | None]] = {}  # email -> (object id, End User id or None)
        self.adopted: set[str] = set()

    def project(self, u: MirrorUser) -> Projection:
        return project(u, sku_names=self.sku_names, assets=self.assets)

    def holders(self, email: str, *, besides: str | None) -> list[StoredEndUser]:
        """End Users of the Organization holding `email`, other than the End User `besides`."""
        return [e for e in self.by_email.get(email, ()) if e.id != besides]

    def claimed_by_other(self, email: str, *, object_id: str) -> tuple[str, str | None] | None:
        claim = self.claims.get(email)
        return claim if claim is not None and claim[0] != object_id else None

    def claim(self, email: str | None, *, object_id: str, end_user_id: str | None) -> None:
        if email:
            self.claims[email] = (object_id, end_user_id)


# ---- linked users --------------------------------------------------------------------------------------------

def _decide_linked(rc: _Reconciliation, u: MirrorUser, stored: StoredEndUser) -> None:
    if stored.sync_state == "manual":
        rc.plan.unchanged += 1
        return
    reason = leaver_reason(u)
    if reason is not None:
        _leave(rc, u, stored, reason=reason)
    elif rc.in_scope(u):
        _refresh(rc, u, stored)
    else:
        _leave_scope(rc, u, stored)


def _leave(rc: _Reconciliation, u: MirrorUser, stored: StoredEndUser, *, reason: str) -> None:
    if stored.sync_state in _RESUMABLE:
        card = leaver_card(u, sku_names=rc.sku_names, reason=reason)
        rc.plan.deactivations.append(_state_change(u, stored, to="deactivated", reason=reason, leaver=card))
    elif stored.sync_state == "out_of_scope":
        rc.plan.out_of_scope += 1   # never updated while out of scope, not even to deactivate
    else:
        rc.plan.unchanged += 1      # already deactivated


def _leave_scope(rc: _Reconciliation, u: MirrorUser, stored: StoredEndUser) -> None:
    if stored.sync_state == "out_of_scope":
        rc.plan.out_of_scope += 1
    else:
        # synced, sync_disabled, or deactivated and now restored but no longer matching the filters.
        rc.plan.state_changes.append(_state_change(u, stored, to="out_of_scope", reason=REASON_OUT_OF_SCOPE))


def _refresh(rc: _Reconciliation, u: MirrorUser, stored: StoredEndUser) -> None:
    inputs = input_hash(u, rc.org_hash)
    if stored.sync_state == "synced" and inputs is not None and stored.input_hash == inputs:
        rc.plan.unchanged += 1  # written from these very inputs: its projection is what it holds
        return
    projection = rc.project(u)
    fields, digest = _merged(projection, stored)
    if stored.sync_state == "synced" and stored.content_hash == digest:
        rc.plan.unchanged += 1
        if inputs is not None:
            rc.plan.input_hashes.append((stored.id, inputs))
        return
    email = _email_key(fields)
    if email and email != _email_key(stored.fields):
        taken = rc.holders(email, besides=stored.id)
        claim = rc.claimed_by_other(email, object_id=u.id)
        if taken or claim:
            rc.plan.reviews.append(_review(u, REVIEW_NEW_EMAIL_TAKEN, [e.id for e in taken], claim))
            return
        rc.claim(email, object_id=u.id, end_user_id=stored.id)
    rc.plan.updates.append(_update(u, stored, projection, fields, digest=digest, link=False, inputs=inputs))


# ---- newcomers (no linked End User) -----------------------------------------------------------------------

def _decide_newcomer(rc: _Reconciliation, u: MirrorUser) -> None:
    if leaver_reason(u) is not None or not rc.in_scope(u):
        rc.plan.out_of_scope += 1
        return
    candidates = _candidates(rc, u)
    if len(candidates) > 1:
        rc.plan.reviews.append(_review(u, REVIEW_SEVERAL, [e.id for e in candidates]))
        return
    target = candidates[0] if candidates else None
    projection = rc.project(u)
    # Adopting keeps what the operator typed where Entra has no value.
    fields, digest = _merged(projection, target) if target else (projection.fields, projection.content_hash("synced"))
    email = _email_key(fields)
    if email and _email_blocked(rc, u, email=email, target=target):
        return
    if target is None:
        rc.plan.creates.append(_create(u, projection, digest=digest, inputs=input_hash(u, rc.org_hash)))
    else:
        rc.adopted.add(target.id)
        rc.plan.updates.append(_update(u, target, projection, fields, digest=digest, link=True,
                                       inputs=input_hash(u, rc.org_hash)))
    rc.claim(email, object_id=u.id, end_user_id=target.id if target else None)


def _candidates(rc: _Reconciliation, u: MirrorUser) -> list[StoredEndUser]:
    """Unlinked End Users under any of `u`'s addresses, not adopted earlier in this call, without repeats."""
    found: dict[str, StoredEndUser] = {}
    for key in email_keys(u):
        for e in rc.by_email.get(key, ()):
            if e.entra_object_id is None and e.id not in rc.adopted:
                found.setdefault(e.id, e)
    return list(found.values())


def _email_blocked(rc: _Reconciliation, u: MirrorUser, *, email: str, target: StoredEndUser | None) -> bool:
    """Plan a review when `email` is claimed in this call or held by an End User other than `target`."""
    claim = rc.claimed_by_other(email, object_id=u.id)
    if claim is not None:
        rc.plan.reviews.append(_review(u, REVIEW_SAME_RUN, [], claim))
        return True
    # An unlinked holder would have been a candidate, so what remains is linked to another Entra object
    # (or adopted earlier in this call).
    taken = rc.holders(email, besides=target.id if target else None)
    if taken:
        rc.plan.reviews.append(_review(u, REVIEW_EMAIL_TAKEN, [e.id for e in taken]))
        return True
    return False


# ---- plan entries ---------------------------------------------------------------------------------------------

def _email_key(fields: Mapping[str, str | None]) -> str | None:
    email = fields.get("email")
    return email.strip().lower() if email else None


def _changes(old: Mapping[str, str | None], new: Fields) -> tuple[FieldChange, ...]:
    return tuple(
        FieldChange(name, old.get(name), new[name]) for name in END_USER_FIELDS if old.get(name) != new[name]
    )


def _merged(projection: Projection, stored: StoredEndUser) -> tuple[Fields, bytes]:
    """The fields `stored` ends up with (ownership rules) and their content hash."""
    fields = merge_fields(stored.fields, projection.fields, entra_fields=stored.entra_fields,
                          locked=stored.locked_fields)
    if fields is projection.fields:
        return fields, projection.content_hash("synced")
    return fields, content_hash(fields, projection.microsoft, sync_state="synced", asset_ids=projection.asset_ids)


def _create(u: MirrorUser, projection: Projection, *, digest: bytes, inputs: bytes | None) -> Create:
    return Create(
        entra_object_id=u.id, fields=projection.fields, microsoft=projection.microsoft, content_hash=digest,
        asset_ids=projection.asset_ids, entra_fields=supplied(projection.fields), input_hash=inputs,
    )


def _update(
    u: MirrorUser, stored: StoredEndUser, projection: Projection, fields: Fields, *, digest: bytes, link: bool,
    inputs: bytes | None,
) -> Update:
    return Update(
        end_user_id=stored.id, entra_object_id=u.id, changes=_changes(stored.fields, fields),
        fields=fields, microsoft=projection.microsoft, sync_state="synced", sync_state_reason=None,
        content_hash=digest, asset_ids=projection.asset_ids, link=link, old_state=stored.sync_state,
        entra_fields=supplied(projection.fields), input_hash=inputs,
    )


def _state_change(
    u: MirrorUser, stored: StoredEndUser, *, to: SyncState, reason: str, leaver: dict[str, object] | None = None
) -> StateChange:
    return StateChange(
        end_user_id=stored.id, entra_object_id=u.id, old_state=stored.sync_state, sync_state=to,
        sync_state_reason=reason, leaver=leaver,
    )


def _review(
    u: MirrorUser, reason: str, ids: Iterable[str], claim: tuple[str, str | None] | None = None
) -> Review:
    candidate_ids = set(ids)
    if claim is not None and claim[1] is not None:
        candidate_ids.add(claim[1])
    return Review(entra_object_id=u.id, reason=reason, candidate_ids=tuple(sorted(candidate_ids)))


# ---- stopping, and the accidental-deletion guard ------------------------------------------------------------

def stop_updating(end_users: Iterable[StoredEndUser], *, reason: str) -> Plan:
    """Mark linked End Users `sync_disabled` (sync disabled, tenant unmapped or remapped); keep everything.

    Manual and unlinked End Users are not touched. Deactivated ones stay `deactivated`: their reason is the
    more useful fact, and turning them into `sync_disabled` would make a later re-enable deactivate them all
    again, at once, which the accidental-deletion guard would then hold. Excluded ones stay `excluded`: an
    operator's decision outlives the sync.
    """
    builder = _PlanBuilder()
    for e in end_users:
        if e.entra_object_id is None or e.sync_state == "manual":
            continue
        if e.sync_state in ("sync_disabled", "deactivated", "excluded"):
            builder.unchanged += 1
            continue
        builder.state_changes.append(StateChange(
            end_user_id=e.id, entra_object_id=e.entra_object_id, old_state=e.sync_state,
            sync_state="sync_disabled", sync_state_reason=reason,
        ))
    return builder.build()


def hold_deactivations(pending: int, synced_total: int, *, ratio: float, minimum: int = 3) -> bool:
    """Whether a run's `pending` deactivations should wait for confirmation.

    Held when they are more than `ratio` of the Organization's `synced_total` End Users *and* at least
    `minimum`. The floor is there because the guard is for mass accidents (wrong tenant, a broken listing),
    which by nature remove many users: without it, one ordinary leaver in a 3-person company (33 %) would be
    held every time and the operator would learn to confirm without looking.
    """
    if not 0 <= ratio <= 1:
        raise ValueError(f"ratio must be between 0 and 1, not {ratio}")
    return pending >= minimum and pending > ratio * synced_total
