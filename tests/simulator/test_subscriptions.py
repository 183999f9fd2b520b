"""Subscriptions: creation rules, the validation handshake on both URLs, renewal, deletion, reauthorization."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote_plus

import pytest
from msgraph.generated.models.subscription import Subscription

from tests.simulator.conftest import Graph, Receiver


def body(receiver: Receiver, **overrides: Any) -> dict[str, Any]:
    expiry = datetime.now(UTC) + timedelta(days=2)
    payload = {"changeType": "updated,deleted", "notificationUrl": f"{receiver.url}/notifications?tenant=a",
               "lifecycleNotificationUrl": f"{receiver.url}/lifecycle", "resource": "users",
               "expirationDateTime": expiry.isoformat().replace("+00:00", "Z"), "clientState": "s3cret"}  # fmt: skip
    payload.update(overrides)
    return payload


async def test_create_through_the_sdk_returns_201_with_graph_fields(graph: Graph, receiver: Receiver) -> None:
    expiry = datetime.now(UTC) + timedelta(days=1)
    created = await graph.sdk.subscriptions.post(Subscription(
        change_type="updated,deleted", notification_url=f"{receiver.url}/n", resource="users",
        expiration_date_time=expiry, client_state="abc"))  # fmt: skip
    assert created is not None and created.id
    assert created.application_id == graph.tenant["client_id"]
    assert created.latest_supported_tls_version == "v1_2"
    assert created.client_state == "abc" and created.creator_id


async def test_handshake_hits_both_urls_with_a_realistic_token(graph: Graph, receiver: Receiver) -> None:
    status, created, _ = await graph.call("POST", "/subscriptions", json=body(receiver))
    assert status == 201, created
    assert [v[0] for v in receiver.validations] == ["/notifications", "/lifecycle"]
    for _, token, content_type, raw in receiver.validations:
        assert token.startswith("Validation: Testing client application reachability for subscription Request-Id: ")
        assert content_type.startswith("text/plain")
        assert raw == b""
    assert created["notificationContentType"] == "application/json"


async def test_validation_token_arrives_url_encoded(graph: Graph, receiver: Receiver) -> None:
    await graph.call("POST", "/subscriptions", json=body(receiver))
    raw = receiver.raw_queries[0]
    assert raw.startswith("tenant=a&validationToken=Validation%3a+Testing+client+application+reachability")
    assert unquote_plus(raw.split("validationToken=", 1)[1]) == receiver.validations[0][1]


async def test_event_hubs_notification_url_needs_no_handshake(graph: Graph, receiver: Receiver) -> None:
    url = "EventHub:https://vault.vault.azure.net/secrets/hub?tenantId=contoso.onmicrosoft.com"
    status, created, _ = await graph.call("POST", "/subscriptions", json=body(receiver, notificationUrl=url))
    assert status == 201 and created["notificationUrl"] == url
    assert [v[0] for v in receiver.validations] == ["/lifecycle"]


@pytest.mark.parametrize("answer", ["wrong", "json", "error"])
async def test_bad_handshake_answer_fails_with_validation_error(graph: Graph, receiver: Receiver, answer: str) -> None:
    receiver.handshake = answer
    status, error, _ = await graph.call("POST", "/subscriptions", json=body(receiver))
    assert status == 400
    assert error["error"]["code"] == "ValidationError"
    assert error["error"]["message"].startswith("Subscription validation request failed.")


async def test_handshake_timeout_fails_with_invalid_request(graph: Graph, receiver: Receiver) -> None:
    receiver.handshake = "slow"
    graph.sim.state.tunables.handshake_timeout_s = 0.3  # stands for Graph's 10 s
    status, error, _ = await graph.call("POST", "/subscriptions", json=body(receiver))
    assert status == 400
    assert error["error"] == error["error"] | {"code": "InvalidRequest",
                                               "message": "Subscription validation request timed out."}


async def test_created_change_type_is_rejected(graph: Graph, receiver: Receiver) -> None:
    status, error, _ = await graph.call("POST", "/subscriptions", json=body(receiver, changeType="created,updated"))
    assert status == 400
    assert error["error"]["code"] == "InvalidRequest"
    assert error["error"]["message"] == "Invalid 'changeType' attribute: 'created'."


async def test_lifetime_over_41760_minutes_is_400(graph: Graph, receiver: Receiver) -> None:
    too_far = (datetime.now(UTC) + timedelta(minutes=41_761)).isoformat()
    status, _, _ = await graph.call("POST", "/subscriptions", json=body(receiver, expirationDateTime=too_far))
    assert status == 400
    just_in = (datetime.now(UTC) + timedelta(minutes=41_759)).isoformat()
    status, _, _ = await graph.call("POST", "/subscriptions", json=body(receiver, expirationDateTime=just_in))
    assert status == 201


async def test_client_state_over_128_characters_is_400(graph: Graph, receiver: Receiver) -> None:
    status, _, _ = await graph.call("POST", "/subscriptions", json=body(receiver, clientState="x" * 129))
    assert status == 400
    status, _, _ = await graph.call("POST", "/subscriptions", json=body(receiver, clientState="x" * 128))
    assert status == 201


async def test_http_is_refused_except_on_loopback(graph: Graph, receiver: Receiver) -> None:
    status, error, _ = await graph.call("POST", "/subscriptions",
                                        json=body(receiver, notificationUrl="http://example.com/hook"))  # fmt: skip
    assert status == 400 and "HTTPS" in error["error"]["message"]


@pytest.mark.parametrize(("quota", "words"), [
    ("subscriptions_per_app_tenant", "per application and tenant"),
    ("subscriptions_per_tenant", "per tenant"),
    ("subscriptions_per_app", "per application"),
])  # fmt: skip
async def test_quotas_are_403_naming_the_limit(graph: Graph, receiver: Receiver, quota: str, words: str) -> None:
    setattr(graph.sim.state.tunables, quota, 2)  # stands for 100 / 1,000 / 50,000
    for _ in range(2):
        status, _, _ = await graph.call("POST", "/subscriptions", json=body(receiver))
        assert status == 201
    status, error, _ = await graph.call("POST", "/subscriptions", json=body(receiver))
    assert status == 403
    assert f"{words} has reached its limit of 2" in error["error"]["message"]


async def test_supported_resources(graph: Graph, receiver: Receiver) -> None:
    tenant = graph.sim.state.tenants[graph.tenant["tenant_id"]]
    user_id, group_id = next(iter(tenant.users)), next(iter(tenant.groups))
    for resource in ("users", f"users/{user_id}", "groups", f"groups/{group_id}", f"groups/{group_id}/members"):
        status, _, _ = await graph.call("POST", "/subscriptions", json=body(receiver, resource=resource))
        assert status == 201, resource
    status, _, _ = await graph.call("POST", "/subscriptions", json=body(receiver, resource="me/messages"))
    assert status == 400


async def test_renew_delete_and_reauthorize(graph: Graph, receiver: Receiver) -> None:
    _, created, _ = await graph.call("POST", "/subscriptions", json=body(receiver))
    later = (datetime.now(UTC) + timedelta(days=20)).isoformat()
    path = f"/subscriptions/{created['id']}"
    status, renewed, _ = await graph.call("PATCH", path, json={"expirationDateTime": later})
    assert status == 200 and renewed["expirationDateTime"][:16] == later[:16]
    too_far = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    status, _, _ = await graph.call("PATCH", f"/subscriptions/{created['id']}", json={"expirationDateTime": too_far})
    assert status == 400
    status, _, _ = await graph.call("POST", f"/subscriptions/{created['id']}/reauthorize")
    assert status == 204
    status, _, _ = await graph.call("DELETE", f"/subscriptions/{created['id']}")
    assert status == 204
    status, _, _ = await graph.call("GET", f"/subscriptions/{created['id']}")
    assert status == 404


async def test_expired_subscription_is_deleted(graph: Graph, receiver: Receiver) -> None:
    _, created, _ = await graph.call("POST", "/subscriptions", json=body(receiver))
    await graph.sim_call("POST", "/_sim/clock", json={"days": 3})
    status, _, _ = await graph.call("GET", f"/subscriptions/{created['id']}")
    assert status == 404
