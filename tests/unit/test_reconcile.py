"""Reconcile rules as named matrices: linked users, newcomers (adoption, review, create), one call's
consistency, stopping updates, and the accidental-deletion guard."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
import pytest

from worker.core.model import (
    END_USER_FIELDS,
    Asset,
    FieldChange,
    Filters,
    MirrorUser,
    OrgContext,
    Plan,
    StoredEndUser,
    SyncState,
)
from worker.core.ownership import supplied
from worker.core.projection import AssetIndex, project
from worker.core.reconcile import (
    REASON_ABSENT,
    REASON_DELETED,
    REASON_DISABLED,
    REASON_OUT_OF_SCOPE,
    REASON_SOFT_DELETED,
    REVIEW_EMAIL_TAKEN,
    REVIEW_NEW_EMAIL_TAKEN,
    REVIEW_SAME_RUN,
    REVIEW_SEVERAL,
    hold_deactivations,
    reconcile,
    stop_updating,
)

ORG = OrgContext(
    organization_id="org1", tenant_id="t1", filters=Filters(departments=("Sales",)),
    sku_names={"sku-e3": "ENTERPRISEPACK"}, assets=(Asset(id="a1", macs=("AA:BB:CC:DD:EE:01",)),),
)
BASE: dict[str, Any] = {
    "tenant_id": "t1", "id": "u1", "given_name": "Jane", "surname": "Doe", "mail": "Jane@contoso.com",
    "user_principal_name": "jdoe@contoso.com", "department": "Sales", "account_enabled": True, "city": "Paris",
    "license_sku_ids": ("sku-e3",), "device_macs": ("aabbccddee01",),
}
GUEST_UPN = "jane_fabrikam.com#EXT#@contoso.onmicrosoft.com"


def table(rows: list[tuple[Any, ...]]) -> list[Any]:
    """Matrix rows `(id, *values)` as named pytest params."""
    return [pytest.param(*row[1:], id=row[0]) for row in rows]


def entra(**kw: Any) -> MirrorUser:
    return MirrorUser(**(BASE | kw))


def linked_copy(u: MirrorUser, state: SyncState, *, eu_id: str = "eu1", locked: frozenset[str] = frozenset(),
                **fields: str | None) -> StoredEndUser:
    """The End User a previous run left for `u` (same content, Entra's fields marked as supplied), now in
    `state`; `fields` are values an operator typed since (then `locked` says which of them are locked)."""
    p = project(u, sku_names=ORG.sku_names, assets=AssetIndex(ORG.assets))
    return StoredEndUser(
        id=eu_id, organization_id="org1", fields=p.fields | fields, sync_state=state, entra_tenant_id="t1",
        entra_object_id=u.id, microsoft=p.microsoft, content_hash=p.content_hash("synced"),
        asset_ids=p.asset_ids, entra_fields=frozenset(supplied(p.fields)), locked_fields=locked,
    )


def manual(eu_id: str, email: str) -> StoredEndUser:
    fields = dict.fromkeys(END_USER_FIELDS, None) | {"first_name": "J.", "email": email}
    return StoredEndUser(id=eu_id, organization_id="org1", fields=fields, sync_state="manual")


def synced_elsewhere(eu_id: str, email: str, *, object_id: str = "u9", tenant: str = "t1") -> StoredEndUser:
    fields = dict.fromkeys(END_USER_FIELDS, None) | {"email": email}
    return StoredEndUser(id=eu_id, organization_id="org1", fields=fields, sync_state="synced",
                         entra_tenant_id=tenant, entra_object_id=object_id)


def run(observed: Iterable[MirrorUser], *, linked: Iterable[StoredEndUser] = (),
        others: Iterable[StoredEndUser] = (), excluded: frozenset[str] = frozenset()) -> Plan:
    linked = list(linked)
    by_email: dict[str, list[StoredEndUser]] = {}
    for e in [*linked, *others]:
        if e.fields.get("email"):
            by_email.setdefault(str(e.fields["email"]).lower(), []).append(e)
    org = msgspec.structs.replace(ORG, excluded=excluded)
    return reconcile(observed, org=org, linked={str(e.entra_object_id): e for e in linked}, by_email=by_email)


def summary(plan: Plan) -> list[str]:
    """A plan as short strings, so a matrix row can state the whole expected outcome."""
    return [
        *(f"create {c.entra_object_id}" for c in plan.creates),
        *(f"{'adopt' if u.link else 'update'} {u.end_user_id}" for u in plan.updates),
        *(f"{s.old_state}->{s.sync_state} {s.end_user_id}: {s.sync_state_reason}" for s in plan.state_changes),
        *(f"deactivate {s.end_user_id} ({s.old_state}): {s.sync_state_reason}" for s in plan.deactivations),
        *(f"review {r.entra_object_id}: {r.reason} {list(r.candidate_ids)}" for r in plan.reviews),
        *([f"unchanged={plan.unchanged}"] if plan.unchanged else []),
        *([f"out_of_scope={plan.out_of_scope}"] if plan.out_of_scope else []),
        *([f"excluded={plan.excluded}"] if plan.excluded else []),
    ]


# ---- linked users: state x what Entra says --------------------------------------------------------------

SAME: dict[str, Any] = {}
MOVED = {"city": "Lyon"}
DELETED = {"removed": "deleted"}
SOFT_DELETED = {"removed": "changed"}
ABSENT = {"removed": "absent"}
DISABLED = {"account_enabled": False}
OUT = {"department": "Finance"}
OUT_OF_SCOPE_STATE = f"->out_of_scope eu1: {REASON_OUT_OF_SCOPE}"

LINKED_CASES = [
    # id, stored state, change in Entra since the End User was written, expected plan
    ("synced-same-is-unchanged", "synced", SAME, ["unchanged=1"]),
    ("synced-changed-updates", "synced", MOVED, ["update eu1"]),
    ("synced-deleted", "synced", DELETED, [f"deactivate eu1 (synced): {REASON_DELETED}"]),
    ("synced-soft-deleted", "synced", SOFT_DELETED, [f"deactivate eu1 (synced): {REASON_SOFT_DELETED}"]),
    ("synced-absent-from-listing", "synced", ABSENT, [f"deactivate eu1 (synced): {REASON_ABSENT}"]),
    ("synced-disabled", "synced", DISABLED, [f"deactivate eu1 (synced): {REASON_DISABLED}"]),
    ("synced-deleted-and-out-of-scope", "synced", DELETED | OUT, [f"deactivate eu1 (synced): {REASON_DELETED}"]),
    ("synced-out-of-scope", "synced", OUT, ["synced" + OUT_OF_SCOPE_STATE]),
    ("sync-disabled-resumed", "sync_disabled", SAME, ["update eu1"]),
    ("sync-disabled-resumed-deleted", "sync_disabled", DELETED,
     [f"deactivate eu1 (sync_disabled): {REASON_DELETED}"]),
    ("sync-disabled-resumed-out-of-scope", "sync_disabled", OUT, ["sync_disabled" + OUT_OF_SCOPE_STATE]),
    ("out-of-scope-back-in-scope", "out_of_scope", SAME, ["update eu1"]),
    ("out-of-scope-still-out", "out_of_scope", OUT | MOVED, ["out_of_scope=1"]),
    ("out-of-scope-deleted-left-alone", "out_of_scope", DELETED, ["out_of_scope=1"]),
    ("deactivated-restored", "deactivated", SAME, ["update eu1"]),
    ("deactivated-re-enabled-and-changed", "deactivated", MOVED, ["update eu1"]),
    ("deactivated-still-deleted", "deactivated", DELETED, ["unchanged=1"]),
    ("deactivated-still-disabled", "deactivated", DISABLED, ["unchanged=1"]),
    ("deactivated-restored-out-of-scope", "deactivated", OUT, ["deactivated" + OUT_OF_SCOPE_STATE]),
    ("manual-never-touched-changed", "manual", MOVED, ["unchanged=1"]),
    ("manual-never-touched-deleted", "manual", DELETED, ["unchanged=1"]),
    ("manual-never-touched-out", "manual", OUT, ["unchanged=1"]),
    ("excluded-never-updated", "excluded", MOVED, ["excluded=1"]),
    ("excluded-never-deactivated", "excluded", DISABLED, ["excluded=1"]),
    ("excluded-never-out-of-scope", "excluded", OUT, ["excluded=1"]),
]


@pytest.mark.parametrize(("state", "change", "expected"), table(LINKED_CASES))
def test_linked(state: SyncState, change: dict[str, Any], expected: list[str]) -> None:
    stored = linked_copy(entra(), state)
    assert summary(run([entra(**change)], linked=[stored])) == expected


UPDATE_CASES = [
    # id, stored state, change, expected journal
    ("journal-only-changed-fields", "synced", {"city": "Lyon", "job_title": "CFO"},
     (FieldChange("city", "Paris", "Lyon"), FieldChange("job_title", None, "CFO"))),
    ("microsoft-only-change-has-empty-journal", "synced", {"license_sku_ids": ()}, ()),
    ("asset-only-change-has-empty-journal", "synced", {"device_macs": ()}, ()),
    ("reactivation-without-field-change", "deactivated", {}, ()),
]


@pytest.mark.parametrize(("state", "change", "journal"), table(UPDATE_CASES))
def test_update_content(state: SyncState, change: dict[str, Any], journal: tuple[FieldChange, ...]) -> None:
    u = entra(**change)
    (update,) = run([u], linked=[linked_copy(entra(), state)]).updates
    expected = project(u, sku_names=ORG.sku_names, assets=AssetIndex(ORG.assets))
    assert update.changes == journal
    assert (update.fields, update.microsoft, update.asset_ids) == (
        expected.fields, expected.microsoft, expected.asset_ids)
    assert (update.sync_state, update.sync_state_reason, update.link) == ("synced", None, False)
    assert update.content_hash == expected.content_hash("synced")


def test_unknown_stored_hash_refreshes() -> None:
    stored = linked_copy(entra(), "synced")
    stored = StoredEndUser(**{f: getattr(stored, f) for f in stored.__struct_fields__} | {"content_hash": None})
    assert summary(run([entra()], linked=[stored])) == ["update eu1"]


# ---- newcomers: no End User linked to the Entra object ----------------------------------------------------

NEWCOMER_CASES = [
    # id, user change, other End Users of the Organization, expected plan
    ("creates", SAME, [], ["create u1"]),
    ("out-of-scope-counted", OUT, [], ["out_of_scope=1"]),
    ("deleted-not-created", DELETED, [], ["out_of_scope=1"]),
    ("disabled-not-created", DISABLED, [], ["out_of_scope=1"]),
    ("adopts-by-mail-any-case", SAME, [manual("m1", "JANE@Contoso.com")], ["adopt m1"]),
    ("adopts-by-upn", SAME, [manual("m1", "jdoe@contoso.com")], ["adopt m1"]),
    ("adopts-once-under-both-keys", {"user_principal_name": "jane@contoso.com"},
     [manual("m1", "jane@contoso.com")], ["adopt m1"]),
    ("guest-upn-never-matches", {"mail": None, "user_principal_name": GUEST_UPN},
     [manual("m1", GUEST_UPN)], ["create u1"]),
    ("several-candidates-review", SAME, [manual("m1", "jane@contoso.com"), manual("m2", "jdoe@contoso.com")],
     [f"review u1: {REVIEW_SEVERAL} ['m1', 'm2']"]),
    ("several-candidates-same-email", SAME, [manual("m2", "jane@contoso.com"), manual("m1", "jane@contoso.com")],
     [f"review u1: {REVIEW_SEVERAL} ['m1', 'm2']"]),
    ("email-linked-to-another-object", SAME, [synced_elsewhere("s1", "jane@contoso.com")],
     [f"review u1: {REVIEW_EMAIL_TAKEN} ['s1']"]),
    ("email-linked-in-another-tenant", SAME, [synced_elsewhere("s1", "jane@contoso.com", object_id="u1",
                                                               tenant="t0")],
     [f"review u1: {REVIEW_EMAIL_TAKEN} ['s1']"]),
    ("candidate-by-upn-but-mail-taken", SAME,
     [manual("m1", "jdoe@contoso.com"), synced_elsewhere("s1", "jane@contoso.com")],
     [f"review u1: {REVIEW_EMAIL_TAKEN} ['s1']"]),
    ("upn-held-elsewhere-mail-free", SAME, [synced_elsewhere("s1", "jdoe@contoso.com")], ["create u1"]),
    ("no-email-at-all-creates", {"mail": None, "user_principal_name": GUEST_UPN}, [], ["create u1"]),
]


@pytest.mark.parametrize(("change", "others", "expected"), table(NEWCOMER_CASES))
def test_newcomer(change: dict[str, Any], others: list[StoredEndUser], expected: list[str]) -> None:
    assert summary(run([entra(**change)], others=others)) == expected


def test_create_content() -> None:
    u = entra()
    (create,) = run([u]).creates
    expected = project(u, sku_names=ORG.sku_names, assets=AssetIndex(ORG.assets))
    assert (create.fields, create.microsoft, create.asset_ids) == (
        expected.fields, expected.microsoft, frozenset({"a1"}))
    assert create.content_hash == expected.content_hash("synced")


def test_adoption_journals_and_links() -> None:
    (update,) = run([entra()], others=[manual("m1", "jane@contoso.com")]).updates
    assert update.link and update.sync_state == "synced" and update.entra_object_id == "u1"
    assert update.changes == (
        FieldChange("first_name", "J.", "Jane"), FieldChange("last_name", None, "Doe"),
        FieldChange("email", "jane@contoso.com", "Jane@contoso.com"), FieldChange("city", None, "Paris"),
    )


# ---- one call: repeated objects, competing emails, accounting ---------------------------------------------

def u2(**kw: Any) -> MirrorUser:
    return entra(id="u2", **kw)


SAME_CALL_CASES = [
    # id, observed, linked End Users, other End Users, expected plan
    ("same-email-creates-once", [entra(), u2()], [], [],
     ["create u1", f"review u2: {REVIEW_SAME_RUN} []"]),
    ("same-email-adopts-once", [entra(), u2()], [], [manual("m1", "jane@contoso.com")],
     ["adopt m1", f"review u2: {REVIEW_SAME_RUN} ['m1']"]),
    ("other-address-not-readopted", [entra(), u2(mail="j2@contoso.com", user_principal_name="jane@contoso.com")],
     [], [manual("m1", "jane@contoso.com")], ["create u2", "adopt m1"]),
    ("repeat-last-wins-in-scope", [entra(**OUT), entra()], [], [], ["create u1"]),
    ("repeat-last-wins-out-of-scope", [entra(), entra(**OUT)], [], [], ["out_of_scope=1"]),
    ("repeat-linked-one-decision", [entra(**DELETED), entra(**MOVED), entra()], [linked_copy(entra(), "synced")],
     [], ["unchanged=1"]),
    ("linked-email-change-wins-over-newcomer", [u2(mail="new@contoso.com", user_principal_name="x@contoso.com"),
                                                entra(mail="new@contoso.com")],
     [linked_copy(entra(), "synced")], [],
     ["update eu1", f"review u2: {REVIEW_SAME_RUN} ['eu1']"]),
    ("linked-email-change-to-free-address", [entra(mail="new@contoso.com")], [linked_copy(entra(), "synced")], [],
     ["update eu1"]),
    ("linked-email-change-to-held-address", [entra(mail="boss@contoso.com")], [linked_copy(entra(), "synced")],
     [manual("m1", "boss@contoso.com")], [f"review u1: {REVIEW_NEW_EMAIL_TAKEN} ['m1']"]),
    ("linked-email-case-change-is-no-conflict", [entra(mail="JANE@CONTOSO.COM")],
     [linked_copy(entra(), "synced")], [], ["update eu1"]),
    ("two-linked-claim-one-address", [entra(mail="new@contoso.com"), u2(mail="new@contoso.com")],
     [linked_copy(entra(), "synced"), linked_copy(u2(mail="old@contoso.com"), "synced", eu_id="eu2")], [],
     ["update eu1", f"review u2: {REVIEW_NEW_EMAIL_TAKEN} ['eu1']"]),
]


@pytest.mark.parametrize(("observed", "linked", "others", "expected"), table(SAME_CALL_CASES))
def test_same_call(observed: list[MirrorUser], linked: list[StoredEndUser], others: list[StoredEndUser],
                   expected: list[str]) -> None:
    assert summary(run(observed, linked=linked, others=others)) == expected


def test_every_observed_user_is_accounted_once() -> None:
    observed = [entra(id=f"n{i}", mail=f"n{i}@contoso.com", user_principal_name=None) for i in range(5)]
    observed += [entra(id="o1", mail="o1@contoso.com", **OUT), entra(id="d1", mail="d1@c.com", **DELETED)]
    linked = [linked_copy(entra(id=f"l{i}", mail=f"l{i}@contoso.com"), "synced", eu_id=f"e{i}") for i in range(4)]
    observed += [entra(id="l0", mail="l0@contoso.com"), entra(id="l1", mail="l1@contoso.com", **MOVED),
                 entra(id="l2", mail="l2@contoso.com", **OUT), entra(id="l3", mail="l3@contoso.com", **DISABLED)]
    plan = run([*observed, observed[0]], linked=linked, others=[manual("m1", "n4@contoso.com")])
    counted = (len(plan.creates) + len(plan.updates) + len(plan.state_changes) + len(plan.deactivations)
               + len(plan.reviews) + plan.unchanged + plan.out_of_scope)
    assert counted == len(observed)
    assert (len(plan.creates), len(plan.updates), plan.unchanged, plan.out_of_scope) == (4, 2, 1, 2)


def test_user_of_another_tenant_is_rejected() -> None:
    with pytest.raises(ValueError, match="tenant"):
        run([entra(tenant_id="t2")])


# ---- stop_updating -----------------------------------------------------------------------------------------

STOP_CASES = [
    # id, state, linked?, expected
    ("synced-stops", "synced", True, ["synced->sync_disabled eu1: tenant unmapped"]),
    ("out-of-scope-stops", "out_of_scope", True, ["out_of_scope->sync_disabled eu1: tenant unmapped"]),
    ("already-stopped", "sync_disabled", True, ["unchanged=1"]),
    ("deactivated-keeps-its-reason", "deactivated", True, ["unchanged=1"]),
    ("excluded-stays-excluded", "excluded", True, ["unchanged=1"]),
    ("manual-never-touched", "manual", True, []),
    ("unlinked-never-touched", "synced", False, []),
]


@pytest.mark.parametrize(("state", "is_linked", "expected"), table(STOP_CASES))
def test_stop_updating(state: SyncState, is_linked: bool, expected: list[str]) -> None:
    stored = linked_copy(entra(), state)
    if not is_linked:
        stored = StoredEndUser(id="eu1", organization_id="org1", fields=stored.fields, sync_state=state)
    assert summary(stop_updating([stored], reason="tenant unmapped")) == expected


# ---- the accidental-deletion guard ------------------------------------------------------------------------

GUARD_CASES = [
    # id, pending, synced total, ratio, expected held
    ("nothing-pending", 0, 100, 0.2, False),
    ("at-ratio-not-held", 20, 100, 0.2, False),
    ("over-ratio-held", 21, 100, 0.2, True),
    ("one-leaver-small-company", 1, 3, 0.2, False),
    ("two-of-three-below-minimum", 2, 3, 0.2, False),
    ("whole-small-company-held", 3, 3, 0.2, True),
    ("no-synced-base-but-many", 5, 0, 0.2, True),
    ("ratio-one-never-holds-within-base", 50, 50, 1.0, False),
]


@pytest.mark.parametrize(("pending", "total", "ratio", "held"), table(GUARD_CASES))
def test_hold_deactivations(pending: int, total: int, ratio: float, held: bool) -> None:
    assert hold_deactivations(pending, total, ratio=ratio) is held


def test_guard_minimum_is_a_setting() -> None:
    assert hold_deactivations(1, 3, ratio=0.2, minimum=1) is True


@pytest.mark.parametrize("ratio", [-0.1, 1.5])
def test_guard_rejects_bad_ratio(ratio: float) -> None:
    with pytest.raises(ValueError, match="ratio"):
        hold_deactivations(1, 10, ratio=ratio)


# ---- exclusions and field ownership -----------------------------------------------------------------------

EXCLUDED_CASES = [
    # id, linked End User's state (None: no End User), Entra change, expected plan
    ("newcomer-never-created", None, SAME, ["excluded=1"]),
    ("newcomer-never-adopted", "adopt", SAME, ["excluded=1"]),
    ("linked-synced-never-updated", "synced", MOVED, ["excluded=1"]),
    ("linked-synced-never-deactivated", "synced", DELETED, ["excluded=1"]),
]


@pytest.mark.parametrize(("state", "change", "expected"), table(EXCLUDED_CASES))
def test_an_excluded_entra_user_is_never_created_nor_updated(
    state: SyncState | str | None, change: dict[str, Any], expected: list[str]
) -> None:
    linked = [linked_copy(entra(), state)] if state not in (None, "adopt") else []  # type: ignore[arg-type]
    others = [manual("m1", "jane@contoso.com")] if state == "adopt" else []
    assert summary(run([entra(**change)], linked=linked, others=others, excluded=frozenset({"u1"}))) == expected
    assert summary(run([entra(**change)], linked=linked, others=others)) != expected  # the exclusion decides


OWNERSHIP_CASES = [
    # id, operator's values on the stored record, locked, Entra change, expected fields (subset)
    ("entra-change-updates-entra-field", {}, frozenset(), {"city": "Lyon"}, {"city": "Lyon"}),
    ("entra-cleared-a-value-it-supplied", {}, frozenset(), {"city": None}, {"city": None}),
    ("operator-value-entra-never-supplied-kept", {"phone": "+33 1"}, frozenset(), {"job_title": "CFO"},
     {"phone": "+33 1", "job_title": "CFO"}),
    ("locked-field-kept-against-entra-change", {"city": "Nice"}, frozenset({"city"}), {"city": "Lyon"},
     {"city": "Nice"}),
    ("locked-field-kept-against-unrelated-change", {"city": "Nice"}, frozenset({"city"}), {"job_title": "CFO"},
     {"city": "Nice", "job_title": "CFO"}),
    ("locked-field-kept-when-entra-clears-it", {"city": "Nice"}, frozenset({"city"}), {"city": None},
     {"city": "Nice"}),
    ("unlocked-operator-value-replaced-by-entra", {"city": "Nice"}, frozenset(), {"job_title": "CFO"},
     {"city": "Paris", "job_title": "CFO"}),
]


@pytest.mark.parametrize(("typed", "locked", "change", "expected"), table(OWNERSHIP_CASES))
def test_field_ownership_on_refresh(typed: dict[str, str], locked: frozenset[str], change: dict[str, Any],
                                    expected: dict[str, str | None]) -> None:
    stored = linked_copy(entra(), "synced", locked=locked, **typed)
    (update,) = run([entra(**change)], linked=[stored]).updates
    assert {k: update.fields[k] for k in expected} == expected
    assert not {c.field for c in update.changes} & locked  # a locked field is never journalled as changed


def test_a_locked_edit_with_no_entra_change_stays_unchanged_once_its_hash_is_written() -> None:
    stored = linked_copy(entra(), "synced", locked=frozenset({"city"}), city="Nice")
    (update,) = run([entra()], linked=[stored]).updates  # the first sync after the edit rewrites the hash
    assert update.fields["city"] == "Nice" and update.changes == ()
    rewritten = msgspec.structs.replace(stored, content_hash=update.content_hash)
    assert summary(run([entra()], linked=[rewritten])) == ["unchanged=1"]


def test_adoption_keeps_what_the_operator_typed_where_entra_has_no_value() -> None:
    typed = manual("m1", "jane@contoso.com")
    typed = msgspec.structs.replace(typed, fields=typed.fields | {"phone": "+33 1", "city": "Nice"})
    (update,) = run([entra(business_phones=())], others=[typed]).updates
    assert update.link and update.fields["phone"] == "+33 1"  # Entra has no phone: the operator's stays
    assert update.fields["city"] == "Paris"  # Entra has a city: Entra's wins
    assert update.entra_fields == supplied(update.fields | {"phone": None})


def test_a_deactivation_carries_the_leaver_card_of_the_entra_user() -> None:
    u = entra(account_enabled=False, last_sign_in_at="2026-11-30T08:00:00Z")
    (change,) = run([u], linked=[linked_copy(entra(), "synced")]).deactivations
    assert change.leaver == {"evidence": "disabled", "reason": REASON_DISABLED,
                             "last_sign_in_at": "2026-11-30T08:00:00Z", "user_principal_name": "jdoe@contoso.com",
                             "licenses": [{"sku_id": "sku-e3", "sku_part_number": "ENTERPRISEPACK"}]}
