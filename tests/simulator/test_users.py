"""Users: listing with Graph's default properties and $select, and the write API an administrator uses."""

from __future__ import annotations

import uuid

from msgraph.generated.models.password_profile import PasswordProfile
from msgraph.generated.models.user import User
from msgraph.generated.users.users_request_builder import UsersRequestBuilder

from tests.simulator.conftest import Graph

DEFAULT_PROPS = {"businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone", "officeLocation",
                 "preferredLanguage", "surname", "userPrincipalName", "id"}  # fmt: skip


def new_user(domain: str, name: str | None = None) -> User:
    nickname = name or f"u{uuid.uuid4().hex[:10]}"
    return User(account_enabled=True, display_name=nickname.title(), mail_nickname=nickname,
                user_principal_name=f"{nickname}@{domain}", given_name="Test", surname=nickname.title(),
                department="Sales", password_profile=PasswordProfile(password="P@ssw0rd!x"))  # fmt: skip


async def test_list_users_returns_the_eleven_default_properties(shared_graph: Graph) -> None:
    status, body, _ = await shared_graph.call("GET", "/users")
    assert status == 200
    assert set(body["value"][0]) == DEFAULT_PROPS
    assert len(body["value"]) == 100
    assert body["@odata.nextLink"].startswith(shared_graph.base + "/users?")


async def test_select_is_honoured(shared_graph: Graph) -> None:
    _, body, _ = await shared_graph.call("GET", "/users?$select=id,department,accountEnabled,assignedLicenses&$top=5")
    assert [set(u) for u in body["value"]] == [{"id", "department", "accountEnabled", "assignedLicenses"}] * 5


async def test_unknown_select_property_is_400(shared_graph: Graph) -> None:
    status, body, _ = await shared_graph.call("GET", "/users?$select=id,favouriteColour")
    assert status == 400
    assert "favouriteColour" in body["error"]["message"]


async def test_sdk_pages_through_all_users_with_absolute_next_links(graph: Graph) -> None:
    config = UsersRequestBuilder.UsersRequestBuilderGetRequestConfiguration(
        query_parameters=UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(select=["id", "userType"], top=50)
    )
    page = await graph.sdk.users.get(request_configuration=config)
    seen = 0
    while page is not None:
        seen += len(page.value or [])
        page = await graph.sdk.users.with_url(page.odata_next_link).get() if page.odata_next_link else None
    tenant = graph.sim.state.tenants[graph.tenant["tenant_id"]]
    assert seen == sum(1 for _ in tenant.live_users())


async def test_seeded_users_are_realistic(shared_graph: Graph) -> None:
    tenant = shared_graph.sim.state.tenants[shared_graph.tenant["tenant_id"]]
    users = [r.data for r in tenant.live_users()]
    domains = {u["userPrincipalName"].rsplit("@", 1)[1] for u in users if u["userType"] == "Member"}
    assert domains == {d["name"] for d in tenant.domains}
    assert any(u["userType"] == "Guest" and "#EXT#" in u["userPrincipalName"] for u in users)
    assert any(not u["accountEnabled"] for u in users)
    assert {"Sales", "Support", "Engineering"} <= {u["department"] for u in users}


async def test_seeding_is_deterministic(tmp_path: object) -> None:
    from simulator.state import SimState

    first, second = SimState(seed=11), SimState(seed=11)
    a, b = first.add_tenant(users=50), second.add_tenant(users=50)
    assert a.tenant_id == b.tenant_id and a.client_secret == b.client_secret
    assert [r.data for r in a.users.values()] == [r.data for r in b.users.values()]


async def test_create_read_update_delete_restore_through_the_sdk(graph: Graph) -> None:
    domain = graph.tenant["default_domain"]
    created = await graph.sdk.users.post(new_user(domain))
    assert created is not None and created.id
    await graph.sdk.users.by_user_id(created.id).patch(User(job_title="Director", department="Finance"))
    fetched = await graph.sdk.users.by_user_id(created.id).get()
    assert fetched is not None and fetched.job_title == "Director"
    await graph.sdk.users.by_user_id(created.id).delete()
    status, _, _ = await graph.call("GET", f"/users/{created.id}")
    assert status == 404
    restored = await graph.sdk.directory.deleted_items.by_directory_object_id(created.id).restore.post()
    assert restored is not None and restored.id == created.id
    status, body, _ = await graph.call("GET", f"/users/{created.id}?$select=department")
    assert status == 200 and body["department"] == "Finance"


async def test_permanent_delete_from_deleted_items(graph: Graph) -> None:
    created = await graph.sdk.users.post(new_user(graph.tenant["default_domain"]))
    assert created is not None and created.id
    await graph.sdk.users.by_user_id(created.id).delete()
    await graph.sdk.directory.deleted_items.by_directory_object_id(created.id).delete()
    status, _, _ = await graph.call("POST", f"/directory/deletedItems/{created.id}/restore")
    assert status == 404


async def test_upn_must_use_a_verified_domain(graph: Graph) -> None:
    status, body, _ = await graph.call("POST", "/users", json={
        "accountEnabled": True, "displayName": "X", "mailNickname": "x", "userPrincipalName": "x@unverified.example",
        "passwordProfile": {"password": "P@ssw0rd!x"}})  # fmt: skip
    assert status == 400
    assert "verified domain" in body["error"]["message"]


async def test_user_by_upn(shared_graph: Graph) -> None:
    tenant = shared_graph.sim.state.tenants[shared_graph.tenant["tenant_id"]]
    rec = next(tenant.live_users())
    status, body, _ = await shared_graph.call("GET", f"/users/{rec.data['userPrincipalName']}")
    assert status == 200 and body["id"] == rec.id
