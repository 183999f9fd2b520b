"""The webhook over real TCP against the real Tansu broker: handshake, batches, errors, health and metrics."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from schemas import topics
from schemas.client_state import client_state_for
from schemas.messages import ChangeNotification, LifecycleNotification, decode
from webhook.app import METRICS
from webhook.sink import Record
from worker.config import KafkaSettings

from .conftest import MAX_BODY, PREVIOUS, SECRET, Client, change_item, make_settings, new_id

TOKEN = ("Validation: Testing client application reachability for subscription "
         "Request-Id: 877cb92e-a60b-483b-8a39-79aa5f64f5a3")


def metric(client: Client, name: str, **labels: str) -> float:
    value = client.app[METRICS].registry.get_sample_value(name, labels)
    return value or 0.0


@pytest.mark.parametrize("encode", [lambda t: quote(t, safe=""), quote_plus], ids=["percent", "plus"])
@pytest.mark.parametrize("path", ["/notifications", "/lifecycle"])
async def test_handshake_echoes_the_decoded_token_exactly(
    client: Client, path: str, encode: Callable[[str], str]
) -> None:
    resp = await client.post(
        f"{path}?validationToken={encode(TOKEN + ' a+b')}",
        headers={"Content-Type": "text/plain; charset=utf-8"},
    )
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    assert await resp.text() == TOKEN + " a+b"


async def test_handshake_counts(client: Client) -> None:
    await client.post("/lifecycle?validationToken=a%20b%3Ac")
    assert metric(client, "webhook_validation_handshakes_total", kind="lifecycle") == 1


async def test_mixed_batch_publishes_only_valid_items(client: Client, tail: Callable[[str], Any]) -> None:
    reader = await tail(topics.NOTIFICATIONS)
    tenant, other = new_id(), new_id()
    good = {name: new_id() for name in ("tenant_id", "organization_id", "lower", "previous", "extra")}
    bad = {name: new_id() for name in ("forged", "other_tenant", "missing", "no_tenant")}
    org_item = change_item(tenant, good["organization_id"])
    org_item["organizationId"] = org_item.pop("tenantId")
    items: list[Any] = [
        change_item(tenant, good["tenant_id"]),
        org_item,
        change_item(tenant, good["lower"], resource=f"users/{good['lower']}"),
        change_item(tenant, good["previous"], secret=PREVIOUS),
        change_item(tenant, good["extra"], sequenceNumber=7, somethingNew={"x": [1, 2]}),
        change_item(tenant, bad["forged"], clientState="0" * 64),
        change_item(tenant, bad["other_tenant"], clientState=client_state_for(other, SECRET)),
        change_item(tenant, bad["missing"], clientState=None),
        {k: v for k, v in change_item(tenant, bad["no_tenant"]).items() if k != "tenantId"},
        42,
        {"tenantId": tenant, "clientState": client_state_for(tenant, SECRET)},
    ]
    resp = await client.post("/notifications", json={"value": items})
    assert resp.status == 202

    published = [r for r in await reader.read_new() if r.key == tenant.encode()]
    messages = [decode(r.value, ChangeNotification) for r in published]
    assert sorted(m.object_id for m in messages) == sorted(good.values())
    assert all(m.tenant_id == tenant and m.object_type == "user" for m in messages)
    assert {m.resource for m in messages} >= {f"Users/{good['tenant_id']}", f"users/{good['lower']}"}
    assert metric(client, "webhook_notifications_received_total", kind="change") == len(items)
    assert metric(client, "webhook_notifications_published_total", kind="change") == len(good)
    dropped = {r: metric(client, "webhook_notifications_dropped_total", kind="change", reason=r)
               for r in ("bad_client_state", "missing_tenant", "malformed")}
    assert dropped == {"bad_client_state": 3, "missing_tenant": 1, "malformed": 2}


async def test_published_message_is_keyed_by_tenant(client: Client, tail: Callable[[str], Any]) -> None:
    reader = await tail(topics.NOTIFICATIONS)
    tenant, user = new_id(), new_id()
    resp = await client.post("/notifications", json={"value": [change_item(tenant, user)]},
                             headers={"Content-Type": "application/json; charset=utf-8"})
    assert resp.status == 202
    [record] = [r for r in await reader.read_new() if r.key == tenant.encode()]
    message = decode(record.value, ChangeNotification)
    assert (message.tenant_id, message.object_id, message.change_type) == (tenant, user, "updated")
    assert metric(client, "webhook_publish_ack_seconds_count", kind="change") >= 1


async def test_lifecycle_goes_to_its_topic(client: Client, tail: Callable[[str], Any]) -> None:
    reader = await tail(topics.LIFECYCLE)
    tenant = new_id()
    item = {"subscriptionId": new_id(), "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
            "organizationId": tenant, "clientState": client_state_for(tenant, SECRET),
            "lifecycleEvent": "reauthorizationRequired"}
    forged = {**item, "clientState": "nope"}
    resp = await client.post("/lifecycle", json={"value": [item, forged], "validationTokens": ["eyJ0..."]})
    assert resp.status == 202
    [record] = [r for r in await reader.read_new() if r.key == tenant.encode()]
    message = decode(record.value, LifecycleNotification)
    assert (message.tenant_id, message.lifecycle_event) == (tenant, "reauthorizationRequired")


async def test_lifecycle_body_with_only_validation_tokens_is_accepted(client: Client) -> None:
    resp = await client.post("/lifecycle", json={"validationTokens": ["eyJ0eXAiOiJKV1Qi"]})
    assert resp.status == 202


@pytest.mark.parametrize("body", [b"[]", b'"value"', b"{}", b'{"value": 3}', b"{not json", b""])
async def test_not_a_collection_is_400(client: Client, body: bytes) -> None:
    resp = await client.post("/notifications", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "not_a_notification_collection"


async def test_oversize_is_413(client: Client) -> None:
    body = json.dumps({"value": [], "pad": "x" * MAX_BODY}).encode()
    resp = await client.post("/notifications", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "body_too_large"


async def test_oversize_chunked_is_413(client: Client) -> None:
    async def chunks() -> Any:
        for _ in range(MAX_BODY // 1024 + 2):
            yield b" " * 1024

    resp = await client.post("/notifications", data=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status == 413


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_non_json_is_415(client: Client, content_type: str) -> None:
    resp = await client.post("/notifications", data=b'{"value": []}', headers={"Content-Type": content_type})
    assert resp.status == 415
    assert (await resp.json())["error"]["code"] == "unsupported_media_type"


async def test_unknown_path_and_method_answer_json_errors(client: Client) -> None:
    for resp in (await client.get("/nope"), await client.get("/notifications")):
        assert resp.status in (404, 405)
        assert set((await resp.json())["error"]) == {"code", "message"}


async def test_health_ready_and_metrics(client: Client) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    resp = await client.get("/metrics")
    text = await resp.text()
    assert resp.status == 200
    assert 'webhook_notifications_dropped_total{kind="change",reason="bad_client_state"}' in text
    assert "webhook_publish_ack_seconds_bucket" in text


class SlowSink:
    """A broker that never acknowledges (the seam the 503 path depends on)."""

    async def publish(self, records: Sequence[Record]) -> None:
        await asyncio.Event().wait()

    async def ready(self) -> bool:
        return False


async def test_slow_broker_answers_503_before_the_deadline(
    make_client: Callable[..., Any], kafka_settings: KafkaSettings
) -> None:
    client = await make_client(make_settings(kafka_settings, publish_timeout_s=0.3), sink=SlowSink())
    tenant = new_id()
    started = time.monotonic()
    resp = await client.post("/notifications", json={"value": [change_item(tenant, new_id())]})
    assert resp.status == 503
    assert time.monotonic() - started < 1.0
    assert (await resp.json())["error"]["code"] == "broker_unavailable"
    assert (await client.get("/readyz")).status == 503
    assert metric(client, "webhook_publish_failures_total", kind="change") == 1
