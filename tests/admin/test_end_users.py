"""End Users (list, filters, pagination, one with microsoft and assets, manual create, delete, the journal of
operator changes) and Assets."""

from __future__ import annotations

import uuid

from .conftest import Api, end_user_states, insert_end_user, seed_mirror

MICROSOFT = {"object_id": "obj-1", "user_principal_name": "jane@contoso.com", "account_enabled": True,
             "licenses": [{"sku_id": "s1", "sku_part_number": "ENTERPRISEPACK"}], "last_sign_in_at": None,
             "mfa": {"registered": True, "capable": True, "methods": ["microsoftAuthenticatorPush"],
                     "preferred_method": "push"}}


async def test_manual_end_user_create_and_get(api: Api) -> None:
    world = await api.world()
    body = {"first_name": " Ann ", "last_name": "Lee", "email": "Ann.Lee@Contoso.com", "phone": "+1 555",
            "city": "Oslo"}
    created = await api.ok("POST", f"/organizations/{world.org_id}/end-users", body, status=201)
    assert created["first_name"] == "Ann" and created["sync_state"] == "manual"
    assert created["entra_object_id"] is None and created["microsoft"] is None and created["assets"] == []
    assert created["locked_fields"] == [] and created["leaver"] is None
    assert await api.ok("GET", f"/end-users/{created['id']}") == created
    (entry,) = (await api.ok("GET", f"/end-users/{created['id']}/changes"))["items"]
    assert (entry["action"], entry["actor"], entry["sync_state"]) == ("create", {"kind": "operator"}, [None, "manual"])
    assert entry["fields"] == {"first_name": [None, "Ann"], "last_name": [None, "Lee"], "phone": [None, "+1 555"],
                               "email": [None, "Ann.Lee@Contoso.com"], "city": [None, "Oslo"]}


async def test_manual_end_user_duplicate_email_is_a_conflict(api: Api) -> None:
    world = await api.world()
    path = f"/organizations/{world.org_id}/end-users"
    await api.ok("POST", path, {"first_name": "A", "email": "dup@contoso.com"}, status=201)
    resp = await api.call("POST", path, {"first_name": "B", "email": "DUP@contoso.com"})
    assert resp.status == 409 and "DUP@contoso.com" in resp.body["error"]["message"]
    other = await api.world()
    await api.ok("POST", f"/organizations/{other.org_id}/end-users", {"email": "dup@contoso.com"}, status=201)


async def test_manual_end_user_bad_input_writes_nothing(api: Api) -> None:
    world = await api.world()
    path = f"/organizations/{world.org_id}/end-users"
    for body, field in [({"first_name": "A", "email": "not-an-email"}, "email"),
                        ({"first_name": "A", "sync_state": "synced"}, "sync_state"),
                        ({"first_name": 5}, "first_name"), ({"phone": "1"}, "first_name"),
                        ({"first_name": "x" * 300}, "first_name")]:
        resp = await api.call("POST", path, body)
        assert resp.status == 400 and resp.body["error"]["field"] == field, (body, resp.body)
    assert (await api.call("POST", f"/organizations/{uuid.uuid4()}/end-users", {"first_name": "A"})).status == 404
    assert not await api.pool.fetchval("SELECT count(*) FROM end_users WHERE organization_id = $1", world.org_id)


async def test_list_filters_and_pagination(api: Api) -> None:
    world = await api.world()
    path = f"/organizations/{world.org_id}/end-users"
    for i in range(5):
        await insert_end_user(api.pool, world.org_id, tenant_id=world.tenant_id, object_id=f"o{i}",
                              first_name=f"User{i}", last_name=f"Last{i}", email=f"u{i}@contoso.com")
    await insert_end_user(api.pool, world.org_id, state="manual", first_name="Zed", last_name="Zulu",
                          email="zed_1@fabrikam.com")
    everyone = await api.ok("GET", path)
    assert everyone["total"] == 6 and len(everyone["items"]) == 6
    assert [u["email"] for u in (await api.ok("GET", path + "?email=U3@CONTOSO.COM"))["items"]] == ["u3@contoso.com"]
    manual = (await api.ok("GET", path + "?sync_state=manual"))["items"]
    assert [u["first_name"] for u in manual] == ["Zed"]
    assert [u["last_name"] for u in (await api.ok("GET", path + "?q=zed_"))["items"]] == ["Zulu"]
    assert (await api.ok("GET", path + "?q=user2 last"))["total"] == 1
    assert (await api.ok("GET", path + "?q=%25"))["total"] == 0
    page = await api.ok("GET", path + "?limit=2&offset=2")
    assert page["total"] == 6 and [u["last_name"] for u in page["items"]] == ["Last2", "Last3"]
    for query, field in [("sync_state=happy", "sync_state"), ("limit=-1", "limit"), ("limit=x", "limit"),
                         ("limit=5000", "limit")]:
        resp = await api.call("GET", f"{path}?{query}")
        assert resp.status == 400 and resp.body["error"]["field"] == field
    assert (await api.call("GET", f"/organizations/{uuid.uuid4()}/end-users")).status == 404


async def test_one_end_user_with_microsoft_and_assets(api: Api) -> None:
    world = await api.world()
    end_user = await insert_end_user(api.pool, world.org_id, tenant_id=world.tenant_id, object_id="obj-1",
                                     email="jane@contoso.com", microsoft=MICROSOFT)
    asset = await api.ok("POST", f"/organizations/{world.org_id}/assets",
                         {"name": "Laptop", "mac_addresses": ["AA:BB:CC:DD:EE:01"]}, status=201)
    await api.pool.execute("INSERT INTO end_user_assets VALUES ($1, $2)", end_user, asset["id"])
    got = await api.ok("GET", f"/end-users/{end_user}")
    assert got["microsoft"] == MICROSOFT and got["assets"] == [{"id": asset["id"], "name": "Laptop"}]
    assert got["entra_object_id"] == "obj-1" and got["organization_id"] == world.org_id
    expected_keys = {"id", "organization_id", "first_name", "last_name", "email", "phone", "mobile", "street",
                     "city", "state", "postal_code", "job_title", "sync_state", "sync_state_reason",
                     "entra_object_id", "last_synced_at", "microsoft", "assets", "locked_fields", "leaver"}
    assert expected_keys <= set(got)
    assert (got["locked_fields"], got["leaver"]) == ([], None)


async def test_delete_end_user(api: Api) -> None:
    world = await api.world()
    end_user = await insert_end_user(api.pool, world.org_id, state="manual")
    resp = await api.call("DELETE", f"/end-users/{end_user}")
    assert resp.status == 204 and resp.body is None
    assert (await api.ok("GET", f"/organizations/{world.org_id}/exclusions"))["items"] == []
    # The journal outlives the record.
    assert [c["action"] for c in (await api.ok("GET", f"/end-users/{end_user}/changes"))["items"]] == ["delete"]
    assert (await api.call("DELETE", f"/end-users/{end_user}")).status == 404
    assert (await api.call("GET", f"/end-users/{end_user}")).status == 404
    assert (await api.call("GET", "/end-users/not-a-uuid")).status == 404


async def test_assets_normalise_macs_and_link_synced_users(api: Api) -> None:
    world = await api.world()
    await seed_mirror(api.pool, world.tenant_id, [
        {"id": "dev-user", "display_name": "Dev", "device_macs": ["aabbccddee02"]},
    ])
    linked = await insert_end_user(api.pool, world.org_id, tenant_id=world.tenant_id, object_id="dev-user")
    path = f"/organizations/{world.org_id}/assets"
    asset = await api.ok("POST", path, {"name": "PC", "mac_addresses": [
        "AA-BB-CC-DD-EE-02", "aabb.ccdd.ee03", "AABBCCDDEE02", " aa:bb:cc:dd:ee:04 "]}, status=201)
    assert asset["mac_addresses"] == ["aabbccddee02", "aabbccddee03", "aabbccddee04"]
    assert (await api.ok("GET", path))["items"] == [asset]
    assert (await api.ok("GET", f"/end-users/{linked}"))["assets"] == [{"id": asset["id"], "name": "PC"}]
    bare = await api.ok("POST", path, {"name": "Printer"}, status=201)
    assert bare["mac_addresses"] == []


async def test_asset_bad_input_names_the_field_and_writes_nothing(api: Api) -> None:
    world = await api.world()
    path = f"/organizations/{world.org_id}/assets"
    for body, field in [({"name": "PC", "mac_addresses": ["aa:bb:cc:dd:ee:01", "zz"]}, "mac_addresses[1]"),
                        ({"name": "PC", "mac_addresses": ["00:00:00:00:00:00"]}, "mac_addresses[0]"),
                        ({"name": "PC", "mac_addresses": "aa:bb:cc:dd:ee:01"}, "mac_addresses"),
                        ({"name": "PC", "mac_addresses": [7]}, "mac_addresses[0]"),
                        ({"mac_addresses": []}, "name")]:
        resp = await api.call("POST", path, body)
        assert resp.status == 400 and resp.body["error"]["field"] == field, (body, resp.body)
    assert (await api.ok("GET", path))["items"] == []
    assert (await api.call("GET", f"/organizations/{uuid.uuid4()}/assets")).status == 404
    assert (await api.call("POST", f"/organizations/{uuid.uuid4()}/assets", {"name": "x"})).status == 404


async def test_deleting_a_synced_or_out_of_scope_end_user_records_an_exclusion(api: Api) -> None:
    world = await api.world()
    synced = await insert_end_user(api.pool, world.org_id, tenant_id=world.tenant_id, object_id="o-synced",
                                   email="s@contoso.com")
    out = await insert_end_user(api.pool, world.org_id, tenant_id=world.tenant_id, object_id="o-out",
                                state="out_of_scope", first_name="Out", last_name="Side")
    for end_user in (synced, out):
        assert (await api.call("DELETE", f"/end-users/{end_user}")).status == 204
    items = (await api.ok("GET", f"/organizations/{world.org_id}/exclusions"))["items"]
    assert {(x["entra_object_id"], x["how"], x["display_name"]) for x in items} == {
        ("o-synced", "deleted", "Jane Doe"), ("o-out", "deleted", "Out Side")}
    assert all(x["entra_tenant_id"] == world.tenant_id and x["created_at"] for x in items)
    assert (await api.call("GET", f"/organizations/{uuid.uuid4()}/exclusions")).status == 404
    assert (await api.call("DELETE", f"/organizations/{world.org_id}/exclusions/o-none")).status == 404
    assert (await api.call("DELETE", f"/organizations/{world.org_id}/exclusions/o-out")).status == 204
    assert [x["entra_object_id"] for x in (await api.ok("GET", f"/organizations/{world.org_id}/exclusions"))[
        "items"]] == ["o-synced"]


async def test_resolving_a_review_by_linking_is_journalled_as_the_operators(api: Api) -> None:
    world = await api.world()
    await api.enable(world.org_id)
    end_user = await insert_end_user(api.pool, world.org_id, state="manual", email="j@contoso.com")
    review = await api.pool.fetchval(
        "INSERT INTO review_items (organization_id, entra_tenant_id, entra_object_id, reason, candidate_ids)"
        " VALUES ($1, $2, 'entra-7', 'several', $3::uuid[]) RETURNING id::text",
        world.org_id, world.tenant_id, [end_user])
    await api.ok("POST", f"/review-items/{review}/resolve", {"end_user_id": end_user})
    entry = (await api.ok("GET", f"/end-users/{end_user}/changes"))["items"][0]
    assert (entry["action"], entry["actor"]) == ("link", {"kind": "operator"})
    assert entry["fields"] == {"entra_object_id": [None, "entra-7"]} and entry["sync_state"] == ["manual", "synced"]


async def test_disabling_user_sync_keeps_leavers_and_excluded_end_users_as_they_are(api: Api) -> None:
    world = await api.world()
    await api.enable(world.org_id)
    ids = {state: await insert_end_user(api.pool, world.org_id, tenant_id=world.tenant_id, object_id=f"o-{state}",
                                        state=state, email=f"{state}@contoso.com")
           for state in ("synced", "out_of_scope", "deactivated", "excluded")}
    manual = await insert_end_user(api.pool, world.org_id, state="manual", email="m@contoso.com")
    body = await api.ok("DELETE", f"/organizations/{world.org_id}/user-sync")
    assert body["end_users_stopped"] == 2
    states = {k: v[0] for k, v in (await end_user_states(api.pool, world.org_id)).items()}
    assert states == {ids["synced"]: "sync_disabled", ids["out_of_scope"]: "sync_disabled",
                      ids["deactivated"]: "deactivated", ids["excluded"]: "excluded", manual: "manual"}
    entry = (await api.ok("GET", f"/end-users/{ids['synced']}/changes"))["items"][0]
    assert (entry["action"], entry["actor"], entry["sync_state"]) == (
        "disable_sync", {"kind": "operator"}, ["synced", "sync_disabled"])
