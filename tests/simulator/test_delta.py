"""Users delta: full walk, incremental rounds, @removed reasons, $select tracking, opaque absolute links."""

from __future__ import annotations

from typing import Any

from msgraph.generated.models.user import User
from msgraph.generated.users.delta.delta_request_builder import DeltaRequestBuilder

from tests.simulator.conftest import Graph
from tests.simulator.test_users import new_user

SELECT = "id,displayName,mail,department,accountEnabled"


async def walk(graph: Graph, url: str, headers: dict[str, str] | None = None) -> tuple[list[dict[str, Any]], str]:
    """Follow nextLinks to the deltaLink; returns every item and the deltaLink."""
    items: list[dict[str, Any]] = []
    while True:
        status, page, _ = await graph.call("GET", url, headers=headers)
        assert status == 200, page
        assert not ("@odata.nextLink" in page and "@odata.deltaLink" in page)
        items.extend(page["value"])
        if "@odata.deltaLink" in page:
            return items, page["@odata.deltaLink"]
        url = page["@odata.nextLink"]


async def test_full_walk_returns_every_live_user_with_selected_properties(graph: Graph) -> None:
    items, delta_link = await walk(graph, f"/users/delta?$select={SELECT}")
    tenant = graph.sim.state.tenants[graph.tenant["tenant_id"]]
    assert {i["id"] for i in items} == {r.id for r in tenant.live_users()}
    assert all(set(i) == set(SELECT.split(",")) for i in items)
    assert delta_link.startswith(graph.base + "/users/delta()?$deltatoken=")


async def test_sdk_delta_builder_path_with_parentheses(graph: Graph) -> None:
    wanted = [r.id for r in graph.sim.state.tenants[graph.tenant["tenant_id"]].live_users()][:2]
    query = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
        select=["id", "displayName"], filter=" or ".join(f"id eq '{i}'" for i in wanted)
    )
    config = DeltaRequestBuilder.DeltaRequestBuilderGetRequestConfiguration(query_parameters=query)
    page = await graph.sdk.users.delta.get(request_configuration=config)
    assert page is not None and page.value and page.odata_delta_link
    assert sorted(str(u.id) for u in page.value) == sorted(wanted)
    assert "/users/delta()?$deltatoken=" in page.odata_delta_link


async def test_incremental_round_reports_changes_and_removals(graph: Graph) -> None:
    _, delta_link = await walk(graph, f"/users/delta?$select={SELECT}")
    created = await graph.sdk.users.post(new_user(graph.tenant["default_domain"]))
    assert created is not None and created.id
    tenant = graph.sim.state.tenants[graph.tenant["tenant_id"]]
    victims = [r.id for r in tenant.live_users()][:3]
    await graph.sdk.users.by_user_id(victims[0]).patch(User(department="Legal"))
    await graph.sdk.users.by_user_id(victims[1]).delete()
    await graph.sdk.users.by_user_id(victims[2]).delete()
    await graph.sdk.directory.deleted_items.by_directory_object_id(victims[2]).delete()
    items, _ = await walk(graph, delta_link)
    by_id = {i["id"]: i for i in items}
    assert by_id[created.id]["displayName"] == created.display_name
    assert by_id[victims[0]]["department"] == "Legal"
    assert by_id[victims[1]]["@removed"] == {"reason": "changed"}
    assert by_id[victims[2]]["@removed"] == {"reason": "deleted"}
    assert len(items) == 4


async def test_restored_user_comes_back_without_annotation(graph: Graph) -> None:
    tenant = graph.sim.state.tenants[graph.tenant["tenant_id"]]
    victim = next(tenant.live_users()).id
    await graph.sdk.users.by_user_id(victim).delete()
    _, delta_link = await walk(graph, f"/users/delta?$select={SELECT}")
    await graph.sdk.directory.deleted_items.by_directory_object_id(victim).restore.post()
    items, _ = await walk(graph, delta_link)
    assert items == [next(i for i in items if i["id"] == victim)]
    assert "@removed" not in items[0] and items[0]["displayName"]


async def test_only_selected_properties_are_tracked(graph: Graph) -> None:
    _, delta_link = await walk(graph, "/users/delta?$select=id,displayName")
    tenant = graph.sim.state.tenants[graph.tenant["tenant_id"]]
    victim = next(tenant.live_users()).id
    await graph.sdk.users.by_user_id(victim).patch(User(job_title="Untracked change"))
    items, delta_link = await walk(graph, delta_link)
    assert items == []
    await graph.sdk.users.by_user_id(victim).patch(User(display_name="Tracked Change"))
    items, _ = await walk(graph, delta_link)
    assert items == [{"id": victim, "displayName": "Tracked Change"}]


async def test_two_walks_with_different_selects_see_their_own_changes(graph: Graph) -> None:
    _, names = await walk(graph, "/users/delta?$select=id,displayName")
    _, titles = await walk(graph, "/users/delta?$select=id,jobTitle")
    victim = next(graph.sim.state.tenants[graph.tenant["tenant_id"]].live_users()).id
    await graph.sdk.users.by_user_id(victim).patch(User(job_title="Only Titles See This"))
    assert (await walk(graph, names))[0] == []
    assert (await walk(graph, titles))[0] == [{"id": victim, "jobTitle": "Only Titles See This"}]
