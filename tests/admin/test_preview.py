"""Options and preview from the tenant mirror, counted by hand. That the preview equals what applying its
filters then does is tests/admin/test_preview_property.py; its 100,000-user timing is `entra-sync bench preview`."""

from __future__ import annotations

import uuid
from typing import Any

from .conftest import ALL_FILTERS, Api, insert_end_user, seed_mirror

GROUPS = {"g-all": "All staff", "g-sales": "Sales team", "g-emea": "EMEA sales", "g-empty": "Empty"}
# g-all ⊃ g-sales ⊃ g-emea (nested), plus direct members
USERS: list[dict[str, Any]] = [
    {"id": "u1", "display_name": "Ann", "mail": "ann@contoso.com", "user_principal_name": "ann@contoso.com",
     "department": "Sales", "office_location": "Oslo", "user_type": "Member"},
    {"id": "u2", "display_name": "Bob", "mail": "bob@fabrikam.com", "user_principal_name": "bob@contoso.com",
     "department": "sales ", "office_location": "Paris", "user_type": "Member"},
    {"id": "u3", "display_name": "Cat", "mail": None, "user_principal_name": "cat_tailspin.com#EXT#@contoso.com",
     "department": "Support", "office_location": None, "user_type": "Guest"},
    {"id": "u4", "display_name": "Dan", "mail": "dan@contoso.com", "user_principal_name": "dan@contoso.com",
     "department": None, "office_location": "Oslo", "user_type": "Member"},
    {"id": "u5", "display_name": "Eve", "mail": "eve@contoso.com", "user_principal_name": "eve@contoso.com",
     "department": "Sales", "office_location": "Oslo", "user_type": "Member", "removed": "deleted"},
]
MEMBERS = [("g-all", "g-sales", "group"), ("g-sales", "g-emea", "group"), ("g-emea", "u2", "user"),
           ("g-sales", "u1", "user"), ("g-all", "u4", "user"), ("g-emea", "u5", "user")]


async def _seeded(api: Api) -> Any:
    world = await api.world()
    await seed_mirror(api.pool, world.tenant_id, USERS, groups=GROUPS, members=MEMBERS)
    return world


async def test_options_list_values_with_counts(api: Api) -> None:
    world = await _seeded(api)
    options = await api.ok("GET", f"/organizations/{world.org_id}/user-sync/options")
    assert options["total_users"] == 4
    assert options["user_types"] == [{"value": "Member", "count": 3}, {"value": "Guest", "count": 1}]
    assert options["departments"] == [{"value": "Sales", "count": 2}, {"value": "Support", "count": 1}]
    assert options["office_locations"] == [{"value": "Oslo", "count": 2}, {"value": "Paris", "count": 1}]
    assert options["domains"] == [{"value": "contoso.com", "count": 3}, {"value": "fabrikam.com", "count": 1},
                                  {"value": "tailspin.com", "count": 1}]
    assert options["groups"] == [
        {"id": "g-all", "name": "All staff", "count": 3}, {"id": "g-sales", "name": "Sales team", "count": 2},
        {"id": "g-emea", "name": "EMEA sales", "count": 1}, {"id": "g-empty", "name": "Empty", "count": 0}]


async def test_options_and_preview_need_a_mapped_tenant(api: Api) -> None:
    world = await api.world(mapped=False)
    assert (await api.call("GET", f"/organizations/{world.org_id}/user-sync/options")).status == 409
    resp = await api.call("POST", f"/organizations/{world.org_id}/user-sync/preview", {"filters": ALL_FILTERS})
    assert resp.status == 409
    assert (await api.call("GET", f"/organizations/{uuid.uuid4()}/user-sync/options")).status == 404


async def test_preview_counts_create_update_stop_and_review(api: Api) -> None:
    world = await _seeded(api)
    linked = await insert_end_user(api.pool, world.org_id, tenant_id=world.tenant_id, object_id="u1")
    gone = await insert_end_user(api.pool, world.org_id, tenant_id=world.tenant_id, object_id="u4",
                                 first_name="Dan", last_name="D")
    adopt = await insert_end_user(api.pool, world.org_id, state="manual", email="BOB@fabrikam.com")
    path = f"/organizations/{world.org_id}/user-sync/preview"
    sales = {**ALL_FILTERS, "groups": ["G-SALES"]}  # u1 directly, u2 through g-emea; u5 is removed
    preview = await api.ok("POST", path, {"filters": sales})
    assert (preview["matching"], preview["would_create"], preview["would_update"],
            preview["would_stop_updating"], preview["would_review"]) == (2, 0, 2, 1, 0)
    assert {s["end_user_id"] for s in preview["samples"]["would_update"]} == {linked, adopt}
    assert [s["end_user_id"] for s in preview["samples"]["would_stop_updating"]] == [gone]
    everyone = await api.ok("POST", path, {"filters": ALL_FILTERS})
    assert (everyone["would_create"], everyone["would_update"], everyone["would_stop_updating"]) == (1, 3, 0)
    assert [s["entra_object_id"] for s in everyone["samples"]["would_create"]] == ["u3"]
    assert everyone["samples"]["would_create"][0]["email"] is None  # a guest UPN is not an email
    nobody = await api.ok("POST", path, {"filters": {**ALL_FILTERS, "departments": ["Nobody"]}})
    assert nobody["matching"] == 0 and nobody["warnings"] == ["these filters select nobody"]
    assert nobody["would_stop_updating"] == 2


async def test_preview_neither_creates_disabled_accounts_nor_a_taken_email(api: Api) -> None:
    """The two disagreements of issue 12: a disabled account is no create, a taken email is a review."""
    world = await api.world()
    await seed_mirror(api.pool, world.tenant_id, [
        {"id": "off", "display_name": "Off", "mail": "off@contoso.com", "user_principal_name": "off@contoso.com",
         "account_enabled": False},
        {"id": "dup", "display_name": "Dup", "mail": "held@contoso.com", "user_principal_name": "dup@contoso.com"},
        {"id": "new", "display_name": "New", "mail": "new@contoso.com", "user_principal_name": "new@contoso.com"},
    ])
    holder = await insert_end_user(api.pool, world.org_id, tenant_id=world.tenant_id, object_id="elsewhere",
                                   email="held@contoso.com")
    preview = await api.ok("POST", f"/organizations/{world.org_id}/user-sync/preview", {"filters": ALL_FILTERS})
    assert (preview["would_create"], preview["would_review"], preview["would_update"]) == (1, 1, 0)
    assert [s["entra_object_id"] for s in preview["samples"]["would_create"]] == ["new"]
    [review] = preview["samples"]["would_review"]
    assert review["entra_object_id"] == "dup" and "already used" in review["reason"]
    assert holder not in {s["end_user_id"] for s in preview["samples"]["would_update"]}


EDGE_USERS: list[dict[str, Any]] = [  # odd addresses: the options' domains must be what the filters compare
    {"id": "e1", "mail": "a@b@Fabrikam.COM ", "user_principal_name": " A@Contoso.com"},
    {"id": "e2", "mail": "no-at-sign", "user_principal_name": "x_y_tailspin.com#EXT#@contoso.com"},
    {"id": "e3", "mail": "", "user_principal_name": "guest#EXT#@contoso.com"},
    {"id": "e4", "mail": "trailing@", "user_principal_name": "p@contoso.com"},
    {"id": "e5", "mail": None, "user_principal_name": None},
    {"id": "e6", "mail": "q@CONTOSO.com", "user_principal_name": "q@contoso.COM"},
    {"id": "e7", "mail": "r@litware.com", "user_principal_name": "R_LITWARE.COM#ext#@contoso.com"},
]
# A diamond: g-top reaches e1 through two nested groups, and e1 is a direct member too.
EDGE_GROUPS = {"g-top": "Top", "g-left": "Left", "g-right": "Right"}
EDGE_MEMBERS = [("g-top", "g-left", "group"), ("g-top", "g-right", "group"), ("g-left", "e1", "user"),
                ("g-right", "e1", "user"), ("g-top", "e1", "user"), ("g-right", "e2", "user")]


async def test_options_domains_are_the_filters_domains_and_each_user_counts_once(api: Api) -> None:
    from collections import Counter

    from worker.core.filters import user_domains
    from worker.core.model import MirrorUser

    world = await api.world()
    await seed_mirror(api.pool, world.tenant_id, [{**u, "display_name": u["id"]} for u in EDGE_USERS],
                      groups=EDGE_GROUPS, members=EDGE_MEMBERS)
    options = await api.ok("GET", f"/organizations/{world.org_id}/user-sync/options")
    expected = Counter(d for u in EDGE_USERS for d in user_domains(MirrorUser(
        tenant_id=world.tenant_id, id=u["id"], mail=u["mail"], user_principal_name=u["user_principal_name"])))
    assert {d["value"]: d["count"] for d in options["domains"]} == dict(expected)
    assert expected["contoso.com"] == 3 and expected["litware.com"] == 1  # the cases above, as intended
    assert options["groups"] == [{"id": "g-right", "name": "Right", "count": 2},
                                 {"id": "g-top", "name": "Top", "count": 2},
                                 {"id": "g-left", "name": "Left", "count": 1}]
