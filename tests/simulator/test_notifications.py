"""Change notifications: what fires, the item shape, batching across tenants, retries and faults."""

from __future__ import annotations

from msgraph.generated.models.user import User

from tests.simulator.conftest import Graph, Receiver, wait_until
from tests.simulator.test_subscriptions import body
from tests.simulator.test_users import new_user


async def subscribe(graph: Graph, receiver: Receiver, **overrides: object) -> dict[str, object]:
    status, created, _ = await graph.call("POST", "/subscriptions", json=body(receiver, **overrides))
    assert status == 201, created
    return created


async def test_create_update_soft_delete_fire_updated_and_purge_fires_deleted(graph: Graph, receiver: Receiver) -> None:
    sub = await subscribe(graph, receiver)
    user = await graph.sdk.users.post(new_user(graph.tenant["default_domain"]))
    assert user is not None and user.id
    await graph.sdk.users.by_user_id(user.id).patch(User(city="Oslo"))
    await graph.sdk.users.by_user_id(user.id).delete()
    await graph.sdk.directory.deleted_items.by_directory_object_id(user.id).delete()
    items = await receiver.wait_items(4)
    assert [i["changeType"] for i in items] == ["updated", "updated", "updated", "deleted"]
    item = items[0]
    assert item["subscriptionId"] == sub["id"]
    assert item["clientState"] == "s3cret"
    assert item["tenantId"] == graph.tenant["tenant_id"]
    assert item["resource"] == f"Users/{user.id}"
    assert item["resourceData"] == item["resourceData"] | {"@odata.type": "#Microsoft.Graph.User",
                                                           "@odata.id": f"Users/{user.id}", "id": user.id}
    assert item["subscriptionExpirationDateTime"].endswith("Z")


async def test_notification_url_query_parameters_are_kept(graph: Graph, receiver: Receiver) -> None:
    paths: list[str] = []
    await subscribe(graph, receiver)
    tenant = graph.sim.state.tenants[graph.tenant["tenant_id"]]
    original = graph.sim.notifier._post

    async def spy(url: str, data: bytes) -> bool:
        paths.append(url)
        return await original(url, data)

    graph.sim.notifier._post = spy  # type: ignore[method-assign,assignment]
    tenant.update_user(next(tenant.live_users()), {"city": "Bergen"})
    await receiver.wait_items(1)
    assert paths == [f"{receiver.url}/notifications?tenant=a"]


async def test_only_matching_change_types_and_resources_fire(graph: Graph, receiver: Receiver) -> None:
    tenant = graph.sim.state.tenants[graph.tenant["tenant_id"]]
    watched, other = [r for r in tenant.live_users()][:2]
    await subscribe(graph, receiver, resource=f"users/{watched.id}", changeType="updated")
    tenant.update_user(other, {"city": "Nowhere"})
    tenant.update_user(watched, {"city": "Somewhere"})
    items = await receiver.wait_items(1)
    await graph.sim_call("POST", "/_sim/clock", json={"seconds": 1})
    assert [i["resourceData"]["id"] for i in items] == [watched.id]


async def test_one_batch_mixes_subscriptions_and_tenants(graph: Graph, graph2: Graph, receiver: Receiver) -> None:
    await subscribe(graph, receiver)
    await subscribe(graph2, receiver)
    graph.sim.state.tunables.batch_window_s = 0.3
    for client in (graph, graph2):
        tenant = client.sim.state.tenants[client.tenant["tenant_id"]]
        tenant.update_user(next(tenant.live_users()), {"city": "Batchville"})
    items = await receiver.wait_items(2)
    assert len(receiver.bodies) == 1
    assert {i["tenantId"] for i in items} == {graph.tenant["tenant_id"], graph2.tenant["tenant_id"]}


async def test_failed_delivery_is_retried_with_backoff(graph: Graph, receiver: Receiver) -> None:
    await subscribe(graph, receiver)
    receiver.status = 503
    tenant = graph.sim.state.tenants[graph.tenant["tenant_id"]]
    tenant.update_user(next(tenant.live_users()), {"city": "Retry"})
    await receiver.wait_items(1)
    receiver.status = 202
    await graph.sim_call("POST", "/_sim/clock", json={"seconds": 6})
    items = await receiver.wait_items(2)
    assert items[0]["resourceData"]["id"] == items[1]["resourceData"]["id"]
    await wait_until(lambda: graph.sim.notifier.stats.delivered == 1)


async def test_retries_stop_after_four_hours_of_simulated_time(graph: Graph, receiver: Receiver) -> None:
    await subscribe(graph, receiver)
    receiver.status = 500
    tenant = graph.sim.state.tenants[graph.tenant["tenant_id"]]
    tenant.update_user(next(tenant.live_users()), {"city": "Never"})
    stats = graph.sim.notifier.stats
    await wait_until(lambda: stats.failed_attempts >= 1)
    for _ in range(20):
        before = stats.failed_attempts
        await graph.sim_call("POST", "/_sim/clock", json={"minutes": 30})
        await wait_until(lambda: stats.failed_attempts > before)  # noqa: B023
        if stats.dropped_expired:
            break
    assert stats.dropped_expired == 1 and stats.delivered == 0


async def test_dropped_notifications_fault(graph: Graph, receiver: Receiver) -> None:
    await subscribe(graph, receiver)
    fault = {"tenant_id": graph.tenant["tenant_id"], "drop_notifications": 1.0}
    await graph.sim_call("POST", "/_sim/faults", json=fault)
    tenant = graph.sim.state.tenants[graph.tenant["tenant_id"]]
    tenant.update_user(next(tenant.live_users()), {"city": "Lost"})
    assert graph.sim.notifier.stats.dropped_fault == 1
    assert graph.sim.notifier.pending == 0
    assert graph.sim.notifier.stats.lifecycle_sent == 0  # Graph sends no "missed" signal for users
