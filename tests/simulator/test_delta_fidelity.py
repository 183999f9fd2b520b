"""Delta query details Graph clients must survive: empty pages, repeats, latest, minimal, expiry, 410, filters."""

from __future__ import annotations

from msgraph.generated.models.user import User

from tests.simulator.conftest import Graph
from tests.simulator.test_delta import SELECT, walk


def tenant_of(graph: Graph):  # type: ignore[no-untyped-def]
    return graph.sim.state.tenants[graph.tenant["tenant_id"]]


async def fault(graph: Graph, **settings: object) -> None:
    await graph.sim_call("POST", "/_sim/faults", json={"tenant_id": graph.tenant["tenant_id"], **settings})


async def test_pages_hold_about_200_users_and_select_travels_in_the_token(shared_graph: Graph) -> None:
    status, page, _ = await shared_graph.call("GET", f"/users/delta?$select={SELECT}")
    assert status == 200 and len(page["value"]) == 200
    assert "select" not in page["@odata.nextLink"].lower()
    _, second, _ = await shared_graph.call("GET", page["@odata.nextLink"])
    assert second["value"] and all(set(u) == set(SELECT.split(",")) for u in second["value"])
    assert "@odata.deltaLink" in second and "@odata.nextLink" not in second


async def test_expand_and_orderby_are_unsupported(shared_graph: Graph) -> None:
    for option in ("$expand=manager", "$orderby=displayName"):
        status, error, _ = await shared_graph.call("GET", f"/users/delta?$select=id&{option}")
        assert status == 400 and error["error"]["code"] == "Request_UnsupportedQuery"


async def test_top_is_silently_ignored(shared_graph: Graph) -> None:
    status, page, _ = await shared_graph.call("GET", "/users/delta?$select=id&$top=5")
    assert status == 200 and len(page["value"]) == 200


async def test_empty_page_with_next_link(graph: Graph) -> None:
    graph.sim.state.tunables.delta_page_size = 50
    await fault(graph, delta_empty_page_every=2)
    pages: list[dict[str, object]] = []
    url = f"/users/delta?$select={SELECT}"
    while True:
        _, page, _ = await graph.call("GET", url)
        pages.append(page)
        if "@odata.deltaLink" in page:
            break
        url = page["@odata.nextLink"]
    assert any(p["value"] == [] and "@odata.nextLink" in p for p in pages)
    seen = {u["id"] for p in pages for u in p["value"]}  # type: ignore[attr-defined]
    assert seen == {r.id for r in tenant_of(graph).live_users()}


async def test_same_object_can_appear_twice(graph: Graph) -> None:
    graph.sim.state.tunables.delta_page_size = 50
    await fault(graph, delta_repeat=True)
    items, _ = await walk(graph, f"/users/delta?$select={SELECT}")
    ids = [i["id"] for i in items]
    assert len(ids) > len(set(ids)) and set(ids) == {r.id for r in tenant_of(graph).live_users()}


async def test_a_change_during_the_full_walk_is_reported_again_next_round(graph: Graph) -> None:
    graph.sim.state.tunables.delta_page_size = 50
    _, first, _ = await graph.call("GET", f"/users/delta?$select={SELECT}")
    seen = first["value"][0]["id"]
    await graph.sdk.users.by_user_id(seen).patch(User(department="HR"))
    _, delta_link = await walk(graph, first["@odata.nextLink"])
    items, _ = await walk(graph, delta_link)
    assert [i["id"] for i in items] == [seen] and items[0]["department"] == "HR"


async def test_deltatoken_latest_returns_only_a_delta_link(graph: Graph) -> None:
    status, page, _ = await graph.call("GET", "/users/delta?$select=id,displayName&$deltatoken=latest")
    assert status == 200 and page["value"] == [] and "@odata.deltaLink" in page and "@odata.nextLink" not in page
    user = next(tenant_of(graph).live_users())
    await graph.sdk.users.by_user_id(user.id).patch(User(display_name="From Now On"))
    items, _ = await walk(graph, page["@odata.deltaLink"])
    assert items == [{"id": user.id, "displayName": "From Now On"}]


async def test_prefer_return_minimal_sends_only_changed_properties(graph: Graph) -> None:
    _, delta_link = await walk(graph, f"/users/delta?$select={SELECT}")
    user = next(tenant_of(graph).live_users())
    await graph.sdk.users.by_user_id(user.id).patch(User(department="Legal"))
    status, page, headers = await graph.call("GET", delta_link, headers={"Prefer": "return=minimal"})
    assert status == 200 and page["value"] == [{"id": user.id, "department": "Legal"}]
    assert headers.get("Preference-Applied") == "return=minimal"


async def test_delta_token_expires_after_7_days_of_simulated_time(graph: Graph) -> None:
    _, delta_link = await walk(graph, f"/users/delta?$select={SELECT}")
    await graph.sim_call("POST", "/_sim/clock", json={"days": 6, "hours": 23})
    status, _, _ = await graph.call("GET", delta_link)
    assert status == 200
    await graph.sim_call("POST", "/_sim/clock", json={"hours": 2})
    status, error, _ = await graph.call("GET", delta_link)
    assert status == 400 and error["error"]["code"] == "syncStateNotFound"


async def test_expired_token_on_demand(graph: Graph) -> None:
    _, delta_link = await walk(graph, f"/users/delta?$select={SELECT}")
    await fault(graph, delta_expired=1)
    status, error, _ = await graph.call("GET", delta_link)
    assert status == 400 and error["error"]["code"] == "syncStateNotFound"
    status, _, _ = await graph.call("GET", delta_link)
    assert status == 200


async def test_410_gone_with_location_on_demand(graph: Graph) -> None:
    _, delta_link = await walk(graph, f"/users/delta?$select={SELECT}")
    await fault(graph, delta_gone=1)
    status, _, headers = await graph.call("GET", delta_link)
    assert status == 410
    location = headers["Location"]
    assert location.startswith(graph.base + "/users/delta") and "displayName" in location
    items, _ = await walk(graph, location)
    assert len(items) == sum(1 for _ in tenant_of(graph).live_users())


async def test_filter_by_ids_limits_the_walk_and_allows_at_most_50(graph: Graph) -> None:
    ids = [r.id for r in tenant_of(graph).live_users()][:3]
    clause = " or ".join(f"id eq '{i}'" for i in ids)
    items, delta_link = await walk(graph, f"/users/delta?$select=id,displayName&$filter={clause}")
    assert sorted(i["id"] for i in items) == sorted(ids)
    other = [r.id for r in tenant_of(graph).live_users()][5]
    await graph.sdk.users.by_user_id(other).patch(User(display_name="Not Watched"))
    assert (await walk(graph, delta_link))[0] == []
    many = " or ".join(f"id eq '{i}'" for i in [r.id for r in tenant_of(graph).live_users()][:51])
    status, _, _ = await graph.call("GET", f"/users/delta?$select=id&$filter={many}")
    assert status == 400


async def test_tampered_token_is_400(graph: Graph) -> None:
    _, delta_link = await walk(graph, "/users/delta?$select=id")
    status, _, _ = await graph.call("GET", delta_link[:-3] + "AAA")
    assert status == 400


async def test_sdk_parses_delta_pages_with_removed_entries(graph: Graph) -> None:
    _, delta_link = await walk(graph, f"/users/delta?$select={SELECT}")
    victim = next(tenant_of(graph).live_users()).id
    await graph.sdk.users.by_user_id(victim).delete()
    page = await graph.sdk.users.delta.with_url(delta_link).get()
    assert page is not None and page.value and page.odata_delta_link
    assert page.value[0].id == victim
    assert page.value[0].additional_data["@removed"] == {"reason": "changed"}
