"""Configuration routes: Microsoft tenants, PSA tenants and their mapping, Organizations."""

from __future__ import annotations

import uuid

from .conftest import Api, unique


async def test_microsoft_tenant_is_listed_without_its_secret(api: Api) -> None:
    tenant_id = await api.microsoft_tenant()
    secret, client_id = await api.pool.fetchrow(
        "SELECT client_secret, client_id FROM microsoft_tenants WHERE tenant_id = $1", tenant_id)
    listed = (await api.ok("GET", "/microsoft-tenants"))["items"]
    mine = next(t for t in listed if t["tenant_id"] == tenant_id)
    assert "client_secret" not in mine and secret not in str(listed)
    assert mine["client_id"] == client_id and mine["psa_tenant_id"] is None


async def test_tenant_sync_status_shows_subscriptions_and_last_work(api: Api) -> None:
    tenant_id = await api.microsoft_tenant()
    empty = await api.ok("GET", f"/microsoft-tenants/{tenant_id}/sync-status")
    assert empty["subscriptions"] == [] and empty["last_notification_at"] is None

    await api.pool.execute(
        "INSERT INTO graph_subscriptions (id, tenant_id, resource, change_type, notification_url, expires_at,"
        " last_notification_at) VALUES ($1, $2, 'users', 'updated,deleted', 'https://x/notifications',"
        " now() + interval '20 days', now())", f"sub-{tenant_id}", tenant_id)
    await api.pool.execute(
        "INSERT INTO tenant_sync_status (tenant_id, last_delta_at, last_notification_at, last_error)"
        " VALUES ($1, now(), now(), '401 authentication: AADSTS7000215')", tenant_id)
    status = await api.ok("GET", f"/microsoft-tenants/{tenant_id}/sync-status")
    [sub] = status["subscriptions"]
    assert sub["id"] == f"sub-{tenant_id}" and sub["resource"] == "users" and sub["expires_at"]
    assert sub["last_notification_at"] and status["last_delta_at"] and status["last_full_resync_at"] is None
    assert status["last_error"].startswith("401")
    assert (await api.call("GET", "/microsoft-tenants/nope/sync-status")).status == 404


async def test_microsoft_tenant_registered_twice_is_a_conflict(api: Api) -> None:
    tenant_id = await api.microsoft_tenant()
    body = {"tenant_id": tenant_id, "display_name": "x", "client_id": "c", "client_secret": "s"}
    resp = await api.call("POST", "/microsoft-tenants", body)
    assert resp.status == 409 and resp.body["error"]["code"] == "conflict"
    assert tenant_id in resp.body["error"]["message"]


async def test_microsoft_tenant_bad_input_names_the_field_and_writes_nothing(api: Api) -> None:
    tenant_id = str(uuid.uuid4())
    cases = [
        ({"tenant_id": tenant_id, "display_name": "x", "client_id": "c"}, "client_secret"),
        ({"tenant_id": tenant_id, "display_name": 3, "client_id": "c", "client_secret": "s"}, "display_name"),
        ({"tenant_id": tenant_id, "display_name": "x", "client_id": "c", "client_secret": "s", "colour": 1},
         "colour"),
        ({"tenant_id": "a b", "display_name": "x", "client_id": "c", "client_secret": "s"}, "tenant_id"),
        ({"tenant_id": "contoso.onmicrosoft.com", "display_name": "x", "client_id": "c", "client_secret": "s"},
         "tenant_id"),
        ({"tenant_id": tenant_id[:-1], "display_name": "x", "client_id": "c", "client_secret": "s"}, "tenant_id"),
        ({"tenant_id": 7, "display_name": "x", "client_id": "c", "client_secret": "s"}, "tenant_id"),
    ]
    for body, field in cases:
        resp = await api.call("POST", "/microsoft-tenants", body)
        assert resp.status == 400, body
        assert resp.body["error"]["field"] == field and resp.body["error"]["message"].startswith(field)
    resp = await api.call("POST", "/microsoft-tenants", raw=b"{not json")
    assert resp.status == 400 and resp.body["error"]["field"] == "body"
    resp = await api.call("POST", "/microsoft-tenants", [1, 2])
    assert resp.status == 400 and resp.body["error"]["field"] == "body"
    assert not await api.pool.fetchval("SELECT count(*) FROM microsoft_tenants WHERE tenant_id = $1", tenant_id)


async def test_psa_tenant_create_list_and_duplicate_name(api: Api) -> None:
    name = unique("PSA")
    psa = await api.ok("POST", "/psa-tenants", {"name": name}, status=201)
    assert psa["name"] == name and psa["microsoft_tenant_id"] is None and psa["organizations"] == 0
    assert psa["id"] in {p["id"] for p in (await api.ok("GET", "/psa-tenants"))["items"]}
    resp = await api.call("POST", "/psa-tenants", {"name": name})
    assert resp.status == 409 and name in resp.body["error"]["message"]
    resp = await api.call("POST", "/psa-tenants", {"name": "  "})
    assert resp.status == 400 and resp.body["error"]["field"] == "name"


async def test_map_and_unmap_a_psa_tenant(api: Api) -> None:
    tenant_id = await api.microsoft_tenant()
    psa = await api.psa_tenant()
    path = f"/psa-tenants/{psa['id']}/microsoft-tenant"
    mapped = await api.ok("PUT", path, {"microsoft_tenant_id": tenant_id})
    assert mapped["microsoft_tenant_id"] == tenant_id
    assert (await api.ok("PUT", path, {"microsoft_tenant_id": tenant_id}))["microsoft_tenant_id"] == tenant_id
    tenants = (await api.ok("GET", "/microsoft-tenants"))["items"]
    assert next(t for t in tenants if t["tenant_id"] == tenant_id)["psa_tenant_id"] == psa["id"]
    assert (await api.ok("DELETE", path))["microsoft_tenant_id"] is None
    assert (await api.ok("DELETE", path))["microsoft_tenant_id"] is None


async def test_mapping_errors(api: Api) -> None:
    tenant_id = await api.microsoft_tenant()
    taken = await api.psa_tenant(tenant_id)
    other = await api.psa_tenant()
    path = f"/psa-tenants/{other['id']}/microsoft-tenant"
    resp = await api.call("PUT", path, {"microsoft_tenant_id": tenant_id})
    assert resp.status == 409 and taken["name"] in resp.body["error"]["message"]
    resp = await api.call("PUT", path, {"microsoft_tenant_id": "no-such-tenant"})
    assert resp.status == 400 and resp.body["error"]["field"] == "microsoft_tenant_id"
    resp = await api.call("PUT", path, {})
    assert resp.status == 400 and resp.body["error"]["field"] == "microsoft_tenant_id"
    resp = await api.call("PUT", f"/psa-tenants/{uuid.uuid4()}/microsoft-tenant", {"microsoft_tenant_id": tenant_id})
    assert resp.status == 404 and resp.body["error"]["code"] == "not_found"
    resp = await api.call("DELETE", "/psa-tenants/not-a-uuid/microsoft-tenant")
    assert resp.status == 404
    assert (await api.ok("GET", f"/organizations?psa_tenant_id={other['id']}"))["items"] == []
    assert await api.pool.fetchval("SELECT microsoft_tenant_id FROM psa_tenants WHERE id = $1", other["id"]) is None


async def test_organizations_create_list_and_filter(api: Api) -> None:
    world = await api.world()
    org = await api.ok("GET", f"/organizations/{world.org_id}/user-sync")
    assert org["status"] == "not_set_up" and org["microsoft_tenant_id"] == world.tenant_id
    listed = (await api.ok("GET", f"/organizations?psa_tenant_id={world.psa_id}"))["items"]
    assert [o["id"] for o in listed] == [world.org_id]
    assert listed[0]["microsoft_tenant_id"] == world.tenant_id and listed[0]["user_sync_status"] == "not_set_up"
    assert world.org_id in {o["id"] for o in (await api.ok("GET", "/organizations"))["items"]}
    resp = await api.call("GET", "/organizations?psa_tenant_id=nope")
    assert resp.status == 400 and resp.body["error"]["field"] == "psa_tenant_id"


async def test_organization_bad_input_writes_nothing(api: Api) -> None:
    name = unique("Org")
    for body, field in [({"name": name}, "psa_tenant_id"), ({"name": name, "psa_tenant_id": "x"}, "psa_tenant_id"),
                        ({"name": name, "psa_tenant_id": str(uuid.uuid4())}, "psa_tenant_id"),
                        ({"psa_tenant_id": str(uuid.uuid4())}, "name")]:
        resp = await api.call("POST", "/organizations", body)
        assert resp.status == 400 and resp.body["error"]["field"] == field, (body, resp.body)
    assert not await api.pool.fetchval("SELECT count(*) FROM organizations WHERE name = $1", name)


async def test_reassign_organization(api: Api) -> None:
    world = await api.world()
    target = await api.psa_tenant()
    moved = await api.ok("PUT", f"/organizations/{world.org_id}/psa-tenant", {"psa_tenant_id": target["id"]})
    assert moved["psa_tenant_id"] == target["id"] and moved["microsoft_tenant_id"] is None
    resp = await api.call("PUT", f"/organizations/{world.org_id}/psa-tenant", {"psa_tenant_id": str(uuid.uuid4())})
    assert resp.status == 400 and resp.body["error"]["field"] == "psa_tenant_id"
    resp = await api.call("PUT", f"/organizations/{uuid.uuid4()}/psa-tenant", {"psa_tenant_id": target["id"]})
    assert resp.status == 404
