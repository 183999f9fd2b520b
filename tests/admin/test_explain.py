"""`GET /organizations/{id}/user-sync/explain`: by object id or email, per section, in scope, the End User's
state and why, what the next sync would do; 400 / 404 / 409 for bad questions."""

from __future__ import annotations

import uuid
from typing import Any

from .conftest import ALL_FILTERS, Api, World, insert_end_user, seed_mirror

SALES = {**ALL_FILTERS, "departments": ["Sales"]}
USERS = [
    {"id": "in", "display_name": "Ann In", "mail": "ann@contoso.com", "user_principal_name": "ann@contoso.com",
     "department": "Sales", "user_type": "Member"},
    {"id": "out", "display_name": "Bob Out", "mail": "bob@contoso.com", "user_principal_name": "bob@contoso.com",
     "department": "Finance", "user_type": "Member"},
    {"id": "off", "display_name": "Cat Off", "mail": "cat@contoso.com", "user_principal_name": "cat@contoso.com",
     "department": "Sales", "user_type": "Member", "account_enabled": False},
    {"id": "twin-1", "display_name": "Twin", "mail": "twin@contoso.com", "user_principal_name": "t1@contoso.com",
     "department": "Sales"},
    {"id": "twin-2", "display_name": "Twin", "mail": "twin@contoso.com", "user_principal_name": "t2@contoso.com",
     "department": "Sales"},
]


async def _world(api: Api) -> World:
    world = await api.world()
    await api.enable(world.org_id, SALES)
    await seed_mirror(api.pool, world.tenant_id, USERS)
    return world


async def _explain(api: Api, world: World, **query: str) -> Any:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    return await api.ok("GET", f"/organizations/{world.org_id}/user-sync/explain?{qs}")


def _section(answer: Any, name: str) -> Any:
    return next(s for s in answer["sections"] if s["section"] == name)


async def test_a_newcomer_in_scope_would_be_created(api: Api) -> None:
    world = await _world(api)
    answer = await _explain(api, world, entra_object_id="in")
    assert (answer["in_scope"], answer["end_user"], answer["next_sync"]) == (True, None, {"action": "create"})
    assert _section(answer, "departments") == {"section": "departments", "user_values": ["Sales"],
                                               "filter": ["Sales"], "matched": True}
    assert answer["entra_user"]["display_name"] == "Ann In" and answer["sync_status"] == "enabled"


async def test_out_of_scope_names_the_section_and_the_end_users_state(api: Api) -> None:
    world = await _world(api)
    linked = await insert_end_user(api.pool, world.org_id, tenant_id=world.tenant_id, object_id="out",
                                   state="out_of_scope", email="bob@contoso.com")
    answer = await _explain(api, world, email="BOB@contoso.com")
    assert answer["entra_object_id"] == "out" and answer["in_scope"] is False
    assert _section(answer, "departments") == {"section": "departments", "user_values": ["Finance"],
                                               "filter": ["Sales"], "matched": False}
    assert answer["end_user"]["id"] == linked and answer["end_user"]["sync_state"] == "out_of_scope"
    assert "out of scope: no match in departments" in answer["notes"]
    assert answer["next_sync"] == {"action": "nothing"}


async def test_leaver_evidence_a_pending_review_and_a_held_deactivation(api: Api) -> None:
    world = await _world(api)
    await insert_end_user(api.pool, world.org_id, tenant_id=world.tenant_id, object_id="off", state="synced",
                          email="cat@contoso.com")
    held = await api.pool.fetchval(
        "INSERT INTO sync_runs (kind, organization_id, tenant_id, status, held_object_ids)"
        " VALUES ('delta', $1, $2, 'held', '{off}') RETURNING id::text", world.org_id, world.tenant_id)
    answer = await _explain(api, world, entra_object_id="off")
    assert answer["leaver"] == "disabled in Entra ID" and answer["next_sync"]["action"] == "deactivate"
    assert f"its deactivation is held in run {held}: confirm or dismiss that run" in answer["notes"]
    review = await api.pool.fetchval(
        "INSERT INTO review_items (organization_id, entra_tenant_id, entra_object_id, reason)"
        " VALUES ($1, $2, 'in', 'several End Users share this email') RETURNING id::text",
        world.org_id, world.tenant_id)
    answer = await _explain(api, world, entra_object_id="in")
    assert any(n.startswith("review pending (several End Users share this email)") and review in n
               for n in answer["notes"]), answer["notes"]


async def test_a_manual_end_user_asked_by_email(api: Api) -> None:
    world = await _world(api)
    manual = await insert_end_user(api.pool, world.org_id, state="manual", email="desk@contoso.com")
    answer = await _explain(api, world, email="desk@contoso.com")
    assert (answer["entra_object_id"], answer["entra_user"], answer["end_user"]["id"]) == (None, None, manual)
    assert "a manual End User: the sync never changes it" in answer["notes"]


async def test_bad_questions(api: Api) -> None:
    world = await _world(api)
    path = f"/organizations/{world.org_id}/user-sync/explain"
    for query in ("", "?entra_object_id=in&email=ann@contoso.com", "?email="):
        resp = await api.call("GET", path + query)
        assert resp.status == 400 and resp.body["error"]["field"] == "entra_object_id", (query, resp.body)
    assert (await api.call("GET", path + "?entra_object_id=nobody")).status == 404
    assert (await api.call("GET", path + "?email=nobody@contoso.com")).status == 404
    resp = await api.call("GET", path + "?email=twin@contoso.com")
    assert resp.status == 409 and "twin-1" in resp.body["error"]["message"]
    assert (await api.call("GET", f"/organizations/{uuid.uuid4()}/user-sync/explain?email=x@y.z")).status == 404
    unmapped = await api.world(mapped=False)
    resp = await api.call("GET", f"/organizations/{unmapped.org_id}/user-sync/explain?entra_object_id=in")
    assert resp.status == 409
