"""Delivery semantics: client timeout, slow-endpoint throttling, duplicates and reordering on demand,
the organizationId form, and lifecycle notifications (both documented forms)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.simulator.conftest import Graph, Receiver, wait_until
from tests.simulator.test_notifications import subscribe
from tests.simulator.test_subscriptions import body


def touch(graph: Graph, count: int, city: str) -> list[str]:
    tenant = graph.sim.state.tenants[graph.tenant["tenant_id"]]
    users = list(tenant.live_users())[:count]
    for rec in users:
        tenant.update_user(rec, {"city": f"{city}-{rec.id[:4]}"})
    return [r.id for r in users]


async def fault(graph: Graph, **settings: object) -> None:
    await graph.sim_call("POST", "/_sim/faults", json={"tenant_id": graph.tenant["tenant_id"], **settings})


async def test_late_response_counts_as_failed_and_is_retried(graph: Graph, receiver: Receiver) -> None:
    await subscribe(graph, receiver)
    graph.sim.state.tunables.delivery_timeout_s = 0.2  # stands for Graph's 3 s
    receiver.delay_s = 0.4
    touch(graph, 1, "Slow")
    stats = graph.sim.notifier.stats
    await wait_until(lambda: stats.failed_attempts == 1)
    receiver.delay_s = 0
    await graph.sim_call("POST", "/_sim/clock", json={"seconds": 10})
    await wait_until(lambda: stats.delivered == 1)


async def test_slow_endpoint_is_delayed_at_10_percent_and_dropped_at_15(graph: Graph, receiver: Receiver) -> None:
    await subscribe(graph, receiver)
    tunables = graph.sim.state.tunables
    tunables.slow_response_s, tunables.batch_window_s = 0.05, 0.05  # stand for Graph's 2.9 s
    stats = graph.sim.notifier.stats
    touch(graph, 90, "Fast")  # 90 fast notifications
    await wait_until(lambda: stats.delivered == 90)
    receiver.delay_s = 0.1
    touch(graph, 11, "Slow")  # 11 slow of 101: 10.9 %
    await wait_until(lambda: stats.delivered == 101)
    receiver.delay_s = 0
    touch(graph, 1, "Delayed")
    await wait_until(lambda: stats.delayed_slow == 1)
    assert stats.delivered == 101
    await graph.sim_call("POST", "/_sim/clock", json={"minutes": 10, "seconds": 1})
    await wait_until(lambda: stats.delivered == 102)  # sent after 10 minutes; the 10-minute window restarts
    touch(graph, 85, "Fast again")
    await wait_until(lambda: stats.delivered == 187)
    receiver.delay_s = 0.1
    touch(graph, 16, "Slow again")  # 16 slow of 102 in the window: 15.7 %
    await wait_until(lambda: stats.delivered == 203)
    receiver.delay_s = 0
    touch(graph, 1, "Dropped")
    await wait_until(lambda: stats.dropped_slow == 1)


async def test_duplicates_on_demand(graph: Graph, receiver: Receiver) -> None:
    await subscribe(graph, receiver)
    await fault(graph, duplicate_notifications=1.0)
    (user,) = touch(graph, 1, "Twice")
    items = await receiver.wait_items(2)
    assert [i["resourceData"]["id"] for i in items] == [user, user]


async def test_reordering_on_demand(graph: Graph, receiver: Receiver) -> None:
    await subscribe(graph, receiver)
    await fault(graph, reorder_notifications=True)
    graph.sim.state.tunables.batch_window_s = 0.2
    changed = touch(graph, 30, "Shuffled")
    items = await receiver.wait_items(30)
    delivered = [i["resourceData"]["id"] for i in items]
    assert sorted(delivered) == sorted(changed) and delivered != changed


async def test_organization_id_instead_of_tenant_id_on_demand(graph: Graph, receiver: Receiver) -> None:
    await subscribe(graph, receiver)
    await fault(graph, organization_id_form=True)
    touch(graph, 1, "Org")
    (item,) = await receiver.wait_items(1)
    assert "tenantId" not in item and item["organizationId"] == graph.tenant["tenant_id"]


async def test_optional_and_unknown_item_fields_on_demand(graph: Graph, receiver: Receiver) -> None:
    await subscribe(graph, receiver)
    await fault(graph, notification_extras=True)
    (user,) = touch(graph, 1, "Extras")
    (item,) = await receiver.wait_items(1)
    assert item["resource"] == f"users/{user}" and item["encryptedContent"] is None
    assert isinstance(item["sequenceNumber"], int) and item["@odata.type"]
    assert item["resourceData"]["id"] == user


async def test_reauthorization_required_before_expiry_tenant_id_form(graph: Graph, receiver: Receiver) -> None:
    expiry = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
    sub = await subscribe(graph, receiver, expirationDateTime=expiry)
    await graph.sim_call("POST", "/_sim/clock", json={"hours": 2, "minutes": 5})
    (item,) = await receiver.wait_items(1)
    assert receiver.bodies[0].keys() == {"value"}
    assert item == item | {"subscriptionId": sub["id"], "lifecycleEvent": "reauthorizationRequired",
                           "tenantId": graph.tenant["tenant_id"], "clientState": "s3cret"}  # fmt: skip
    assert item["subscriptionExpirationDateTime"]


async def test_lifecycle_organization_id_form_with_validation_tokens(graph: Graph, receiver: Receiver) -> None:
    sub = await subscribe(graph, receiver)
    await graph.sim_call("POST", "/_sim/lifecycle", json={"subscription_id": sub["id"], "form": "organizationId"})
    (item,) = await receiver.wait_items(1)
    assert item["organizationId"] == graph.tenant["tenant_id"] and "tenantId" not in item
    assert item["lifecycleEvent"] == "reauthorizationRequired"
    tokens = receiver.bodies[0]["validationTokens"]
    assert len(tokens) == 1 and tokens[0].count(".") == 2


async def test_subscription_removed_and_missed_on_demand(graph: Graph, receiver: Receiver) -> None:
    sub = await subscribe(graph, receiver)
    await graph.sim_call("POST", "/_sim/lifecycle", json={"subscription_id": sub["id"], "event": "missed"})
    removed = {"subscription_id": sub["id"], "event": "subscriptionRemoved"}
    await graph.sim_call("POST", "/_sim/lifecycle", json=removed)
    items = await receiver.wait_items(2)
    assert [i["lifecycleEvent"] for i in items] == ["missed", "subscriptionRemoved"]
    status, _, _ = await graph.call("GET", f"/subscriptions/{sub['id']}")
    assert status == 404


async def test_lifecycle_goes_to_the_lifecycle_url(graph: Graph, receiver: Receiver) -> None:
    status, sub, _ = await graph.call("POST", "/subscriptions", json=body(receiver))
    assert status == 201
    await graph.sim_call("POST", "/_sim/lifecycle", json={"subscription_id": sub["id"]})
    paths: list[str] = []
    original = graph.sim.notifier._post

    async def spy(url: str, data: bytes) -> bool:
        paths.append(url)
        return await original(url, data)

    graph.sim.notifier._post = spy  # type: ignore[method-assign,assignment]
    await receiver.wait_items(1)
    assert paths == [f"{receiver.url}/lifecycle"]
