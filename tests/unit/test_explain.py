"""Explaining a user: `filters.explain` per section (and that it agrees with `compile_filters`), and the notes
and next-sync verdict of `core.explain`, as named matrices."""

from __future__ import annotations

from typing import Any

import pytest

from worker.core.explain import Facts, explain
from worker.core.filters import compile_filters
from worker.core.filters import explain as explain_sections
from worker.core.model import END_USER_FIELDS, Filters, MirrorUser, OrgContext, StoredEndUser
from worker.core.projection import AssetIndex, project
from worker.core.reconcile import reconcile

GUEST_UPN = "jane_fabrikam.com#EXT#@contoso.onmicrosoft.com"
BASE: dict[str, Any] = {"tenant_id": "t1", "id": "u1", "given_name": "Jane", "surname": "Doe",
                        "mail": "jane@contoso.com", "user_principal_name": "jdoe@contoso.com",
                        "department": "Sales", "office_location": "Oslo", "user_type": "Member",
                        "account_enabled": True, "group_ids": frozenset({"g1", "g2"})}
SALES = Filters(departments=("sales",))


def table(rows: list[tuple[Any, ...]]) -> list[Any]:
    return [pytest.param(*row[1:], id=row[0]) for row in rows]


def entra(**kw: Any) -> MirrorUser:
    return MirrorUser(**(BASE | kw))


SECTION_CASES = [
    ("all-matches-everyone", {}, Filters(), {"user_types": (("Member",), True), "groups": (("g1", "g2"), True)}),
    ("department-case-insensitive", {}, SALES, {"departments": (("Sales",), True)}),
    ("department-missed", {"department": "Finance"}, SALES, {"departments": (("Finance",), False)}),
    ("department-missing", {"department": None}, SALES, {"departments": ((), False)}),
    ("domains-mail-and-upn", {"mail": "jane@fabrikam.com"}, Filters(domains=("contoso.com",)),
     {"domains": (("contoso.com", "fabrikam.com"), True)}),
    ("guest-home-domain", {"mail": None, "user_principal_name": GUEST_UPN}, Filters(domains=("contoso.com",)),
     {"domains": (("fabrikam.com",), False)}),
    ("group-member", {}, Filters(groups=("g2", "g9")), {"groups": (("g1", "g2"), True)}),
    ("group-not-member", {"group_ids": frozenset()}, Filters(groups=("g9",)), {"groups": ((), False)}),
    ("user-type-and-office", {}, Filters(user_types=("guest",), office_locations=("OSLO",)),
     {"user_types": (("Member",), False), "office_locations": (("Oslo",), True)}),
]


@pytest.mark.parametrize(("change", "filters", "expected"), table(SECTION_CASES))
def test_sections(change: dict[str, Any], filters: Filters, expected: dict[str, tuple[tuple[str, ...], bool]]) -> None:
    user = entra(**change)
    sections = {s.section: s for s in explain_sections(user, filters)}
    assert list(sections) == ["user_types", "domains", "office_locations", "departments", "groups"]
    for name, (values, matched) in expected.items():
        assert (sections[name].user_values, sections[name].matched) == (values, matched), name
        assert sections[name].filter == getattr(filters, name)
    # In scope exactly when every section matched, as the sync decides it.
    assert all(s.matched for s in sections.values()) == compile_filters(filters)(user)


ORG = OrgContext(organization_id="org1", tenant_id="t1", filters=SALES)


def linked(u: MirrorUser, state: str, reason: str | None = None) -> StoredEndUser:
    p = project(u, sku_names={}, assets=AssetIndex(()))
    return StoredEndUser(id="eu1", organization_id="org1", fields=p.fields, sync_state=state,  # type: ignore[arg-type]
                         sync_state_reason=reason, entra_tenant_id="t1", entra_object_id=u.id,
                         content_hash=p.content_hash("synced"))


def manual(email: str) -> StoredEndUser:
    return StoredEndUser(id="eu2", organization_id="org1", sync_state="manual",
                         fields=dict.fromkeys(END_USER_FIELDS, None) | {"email": email})


def facts(user: MirrorUser | None, end_user: StoredEndUser | None, *, status: str = "enabled",
          others: tuple[StoredEndUser, ...] = (), **kw: Any) -> Facts:
    plan = None
    if user is not None and status == "enabled":
        by_email: dict[str, list[StoredEndUser]] = {}
        for e in (*((end_user,) if end_user else ()), *others):
            if e.fields.get("email"):
                by_email.setdefault(str(e.fields["email"]).lower(), []).append(e)
        links = {user.id: end_user} if end_user is not None and end_user.entra_object_id else {}
        plan = reconcile([user], org=ORG, linked=links, by_email=by_email)
    return Facts(user=user, filters=SALES if status != "not_set_up" else None, sync_status=status,
                 end_user=end_user, next_sync=plan, **kw)


U = entra()
NOTE_CASES = [
    ("newcomer-in-scope", facts(U, None), True, "create",
     ["matches every filter section", "no End User is linked"]),
    ("synced-unchanged", facts(U, linked(U, "synced")), True, "nothing", ["synced: updated by the sync"]),
    ("synced-moved", facts(entra(city="Lyon"), linked(U, "synced")), True, "update", ["synced"]),
    ("disabled-in-entra", facts(entra(account_enabled=False), linked(U, "synced")), True, "deactivate",
     ["leaver evidence: disabled in Entra ID"]),
    ("deactivated-deleted", facts(entra(removed="deleted"), linked(U, "deactivated", "deleted in Entra ID")),
     True, "nothing", ["leaver evidence: deleted in Entra ID", "deactivated: the user left (deleted in Entra ID)"]),
    ("out-of-scope", facts(entra(department="Finance"), linked(U, "out_of_scope", "no longer matches")), False,
     "nothing", ["out of scope: no match in departments", "out_of_scope: kept"]),
    ("leaving-scope", facts(entra(department="Finance"), linked(U, "synced")), False, "stop_updating",
     ["out of scope: no match in departments"]),
    ("email-taken", facts(U, None, others=(StoredEndUser(
        id="eu9", organization_id="org1", sync_state="synced", entra_tenant_id="t1", entra_object_id="u9",
        fields=dict.fromkeys(END_USER_FIELDS, None) | {"email": "jane@contoso.com"}),), review=("r1", "taken")),
     True, "review", ["review pending (taken): the sync creates or updates nothing for this user until review"
                      " item r1 is resolved"]),
    ("adopts-manual", facts(U, None, others=(manual("JANE@contoso.com"),)), True, "adopt", []),
    ("held", facts(entra(removed="deleted"), linked(U, "synced"), held_run_id="run7"), True, "deactivate",
     ["its deactivation is held in run run7: confirm or dismiss that run"]),
    ("sync-disabled", facts(U, linked(U, "sync_disabled", "user sync disabled"), status="disabled"), True, None,
     ["user sync is disabled for this Organization", "sync_disabled (user sync disabled)"]),
    ("not-set-up", facts(U, None, status="not_set_up"), None, None, ["user sync is not set up"]),
    ("manual-not-in-mirror", facts(None, manual("x@contoso.com")), None, None,
     ["the Entra user is not in the tenant mirror", "a manual End User: the sync never changes it"]),
]


@pytest.mark.parametrize(("given", "in_scope", "action", "notes"), table(NOTE_CASES))
def test_notes(given: Facts, in_scope: bool | None, action: str | None, notes: list[str]) -> None:
    answer = explain(given)
    assert answer["in_scope"] is in_scope
    assert (answer["next_sync"] or {}).get("action") == action, answer["next_sync"]
    for note in notes:
        assert any(n.startswith(note) for n in answer["notes"]), (note, answer["notes"])
