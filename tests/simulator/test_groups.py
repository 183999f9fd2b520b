"""Groups: create, members `$ref` (nested too), transitive membership, and groups delta with members@delta."""

from __future__ import annotations

import uuid
from typing import Any

from msgraph.generated.models.group import Group
from msgraph.generated.models.reference_create import ReferenceCreate

from tests.simulator.conftest import Graph
from tests.simulator.test_delta import walk


async def make_group(graph: Graph, name: str | None = None) -> str:
    nickname = name or f"g{uuid.uuid4().hex[:8]}"
    group = await graph.sdk.groups.post(Group(display_name=nickname, mail_enabled=False, mail_nickname=nickname,
                                              security_enabled=True))  # fmt: skip
    assert group is not None and group.id
    return group.id


async def add(graph: Graph, group_id: str, member_id: str) -> None:
    ref = ReferenceCreate(odata_id=f"https://graph.microsoft.com/v1.0/directoryObjects/{member_id}")
    await graph.sdk.groups.by_group_id(group_id).members.ref.post(ref)


def users(graph: Graph, count: int) -> list[str]:
    tenant = graph.sim.state.tenants[graph.tenant["tenant_id"]]
    return [r.id for r in tenant.live_users()][:count]


async def test_seeded_groups_include_nested_ones(shared_graph: Graph) -> None:
    status, body, _ = await shared_graph.call("GET", "/groups?$select=id,displayName")
    assert status == 200
    names = {g["displayName"] for g in body["value"]}
    assert {"All Staff", "Sales Team"} <= names
    all_staff = next(g["id"] for g in body["value"] if g["displayName"] == "All Staff")
    _, members, _ = await shared_graph.call("GET", f"/groups/{all_staff}/members")
    assert members["value"] and all(m["@odata.type"] == "#microsoft.graph.group" for m in members["value"])


async def test_members_ref_add_remove_and_duplicate(graph: Graph) -> None:
    group_id = await make_group(graph)
    member = users(graph, 1)[0]
    await add(graph, group_id, member)
    status, body, _ = await graph.call("POST", f"/groups/{group_id}/members/$ref",
                                       json={"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{member}"})
    assert status == 400 and "already exist" in body["error"]["message"]
    members = await graph.sdk.groups.by_group_id(group_id).members.get()
    assert members is not None and [m.id for m in members.value or []] == [member]
    await graph.sdk.groups.by_group_id(group_id).members.by_directory_object_id(member).ref.delete()
    _, body, _ = await graph.call("GET", f"/groups/{group_id}/members")
    assert body["value"] == []


async def test_transitive_member_of_follows_nesting(graph: Graph) -> None:
    outer, inner = await make_group(graph), await make_group(graph)
    member = users(graph, 1)[0]
    await add(graph, outer, inner)
    await add(graph, inner, member)
    page = await graph.sdk.users.by_user_id(member).transitive_member_of.get()
    assert page is not None
    ids = {g.id for g in page.value or []}
    assert {outer, inner} <= ids
    _, direct, _ = await graph.call("GET", f"/users/{member}/memberOf")
    assert outer not in {g["id"] for g in direct["value"]}
    _, transitive, _ = await graph.call("GET", f"/groups/{outer}/transitiveMembers")
    assert {inner, member} <= {m["id"] for m in transitive["value"]}


async def test_transitive_member_of_pages_at_most_999(graph: Graph) -> None:
    member = users(graph, 1)[0]
    status, _, _ = await graph.call("GET", f"/users/{member}/transitiveMemberOf?$top=1000")
    assert status == 400
    status, body, _ = await graph.call("GET", f"/users/{member}/transitiveMemberOf?$top=1")
    assert status == 200 and len(body["value"]) == 1 and body["@odata.nextLink"].startswith("https://")


async def test_groups_delta_full_walk_carries_members(graph: Graph) -> None:
    items, _ = await walk(graph, "/groups/delta?$select=id,displayName,members")
    tenant = graph.sim.state.tenants[graph.tenant["tenant_id"]]
    members: dict[str, set[str]] = {}
    for item in items:
        members.setdefault(item["id"], set()).update(m["id"] for m in item.get("members@delta", []))
        assert all("@odata.type" in m for m in item.get("members@delta", []))
    assert members == {g.id: set(g.members) for g in tenant.groups.values() if g.deleted_at is None}


async def test_large_group_repeats_across_pages_with_different_members(graph: Graph) -> None:
    graph.sim.state.tunables.group_members_per_page = 10
    group_id = await make_group(graph)
    for member in users(graph, 25):
        await add(graph, group_id, member)
    items, _ = await walk(graph, "/groups/delta?$select=id,displayName,members")
    chunks = [i["members@delta"] for i in items if i["id"] == group_id]
    assert len(chunks) == 3
    assert sum(len(c) for c in chunks) == 25 and len({m["id"] for c in chunks for m in c}) == 25


async def test_groups_delta_incremental_members_delta_with_removed(graph: Graph) -> None:
    group_id = await make_group(graph)
    stay, leave, join = users(graph, 3)
    await add(graph, group_id, stay)
    await add(graph, group_id, leave)
    _, delta_link = await walk(graph, "/groups/delta?$select=id,displayName,members")
    await add(graph, group_id, join)
    await graph.sdk.groups.by_group_id(group_id).members.by_directory_object_id(leave).ref.delete()
    items, _ = await walk(graph, delta_link)
    item: dict[str, Any] = next(i for i in items if i["id"] == group_id)
    by_member = {m["id"]: m for m in item["members@delta"]}
    assert set(by_member) == {leave, join}
    assert by_member[leave]["@removed"] == {"reason": "deleted"}
    assert "@removed" not in by_member[join]


async def test_groups_delta_reports_deleted_group(graph: Graph) -> None:
    group_id = await make_group(graph)
    _, delta_link = await walk(graph, "/groups/delta?$select=id,displayName")
    await graph.sdk.groups.by_group_id(group_id).delete()
    items, _ = await walk(graph, delta_link)
    assert items == [{"id": group_id, "@removed": {"reason": "changed"}}]


async def test_group_membership_change_notifies_group_subscribers(graph: Graph, receiver: Any) -> None:
    from tests.simulator.test_subscriptions import body

    group_id = await make_group(graph)
    payload = body(receiver, resource=f"groups/{group_id}/members")
    status, _, _ = await graph.call("POST", "/subscriptions", json=payload)
    assert status == 201
    await add(graph, group_id, users(graph, 1)[0])
    items = await receiver.wait_items(1)
    assert items[0]["resource"] == f"Groups/{group_id}"
    assert items[0]["resourceData"]["@odata.type"] == "#Microsoft.Graph.Group"


async def test_restored_user_gets_its_memberships_back(graph: Graph) -> None:
    group_id = await make_group(graph)
    member = users(graph, 1)[0]
    await add(graph, group_id, member)
    await graph.sdk.users.by_user_id(member).delete()
    _, body, _ = await graph.call("GET", f"/groups/{group_id}/members")
    assert body["value"] == []
    await graph.sdk.directory.deleted_items.by_directory_object_id(member).restore.post()
    _, body, _ = await graph.call("GET", f"/groups/{group_id}/members")
    assert [m["id"] for m in body["value"]] == [member]
