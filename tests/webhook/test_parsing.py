"""Pure decoding and verification of notification bodies: named matrices, no broker, no server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas.client_state import client_state_for
from schemas.messages import ChangeNotification
from webhook.parsing import DropReason, Kind, NotACollection, ResourceData, object_of, parse
from webhook.verify import ClientStateVerifier

from .conftest import PREVIOUS, SECRET, change_item

TENANT = "3f1b6c1e-0000-4000-8000-000000000001"
USER = "9a8b7c6d-0000-4000-8000-00000000abcd"
verify = ClientStateVerifier([SECRET, PREVIOUS])


def parse_items(*items: Any, kind: Kind = Kind.CHANGE) -> Any:
    return parse(json.dumps({"value": list(items)}).encode(), kind=kind, verify=verify, received_at="now")


@pytest.mark.parametrize(("resource", "data", "expected"), [
    ("Users/u1", ResourceData("u1"), ("user", "u1")),
    ("users/u1", ResourceData("u1"), ("user", "u1")),
    ("Groups/g1", ResourceData("g1"), ("group", "g1")),
    ("users/u1", None, ("user", "u1")),
    ("users/u1", ResourceData("from-data"), ("user", "from-data")),
    ("directory/x", None, ("unknown", "x")),
])
def test_object_of(resource: str, data: ResourceData | None, expected: tuple[str, str]) -> None:
    assert object_of(resource, data) == expected


@pytest.mark.parametrize("variant", ["tenantId", "organizationId"])
def test_tenant_from_either_field(variant: str) -> None:
    item = change_item(TENANT, USER)
    item[variant] = item.pop("tenantId")
    parsed = parse_items(item)
    [(key, message)] = parsed.messages
    assert key == TENANT
    assert isinstance(message, ChangeNotification)
    assert (message.tenant_id, message.object_id, message.object_type) == (TENANT, USER, "user")


@pytest.mark.parametrize(("name", "item", "reason"), [
    ("forged", change_item(TENANT, USER, clientState="f" * 64), DropReason.BAD_CLIENT_STATE),
    ("other tenant's", change_item(TENANT, USER, clientState=client_state_for("other", SECRET)),
     DropReason.BAD_CLIENT_STATE),
    ("retired secret", change_item(TENANT, USER, secret="older-secret"), DropReason.BAD_CLIENT_STATE),
    ("no clientState", change_item(TENANT, USER, clientState=None), DropReason.BAD_CLIENT_STATE),
    ("no tenant", {**change_item(TENANT, USER), "tenantId": None}, DropReason.MISSING_TENANT),
    ("no resource", {**change_item(TENANT, USER), "resource": None}, DropReason.MALFORMED),
    ("not an object", "Users/x", DropReason.MALFORMED),
    ("wrong field type", {**change_item(TENANT, USER), "changeType": 5}, DropReason.MALFORMED),
])
def test_invalid_items_are_dropped_with_a_reason(name: str, item: Any, reason: DropReason) -> None:
    parsed = parse_items(change_item(TENANT, USER), item)
    assert len(parsed.messages) == 1, name
    assert parsed.dropped == {reason: 1}
    assert parsed.received == 2


def test_previous_secret_and_unknown_fields_are_accepted() -> None:
    parsed = parse_items(change_item(TENANT, USER, secret=PREVIOUS, newField={"a": [1]}, sequenceNumber=3))
    assert len(parsed.messages) == 1 and not parsed.dropped


@pytest.mark.parametrize("body", [b"[]", b"1", b"{}", b'{"value": {}}', b'{"value": "x"}', b"{", b""])
def test_not_a_collection(body: bytes) -> None:
    with pytest.raises(NotACollection):
        parse(body, kind=Kind.CHANGE, verify=verify, received_at="now")


def test_lifecycle_item() -> None:
    item = {"subscriptionId": "s", "tenantId": TENANT, "clientState": client_state_for(TENANT, SECRET),
            "lifecycleEvent": "subscriptionRemoved"}
    [(_, message)] = parse_items(item, kind=Kind.LIFECYCLE).messages
    assert message.lifecycle_event == "subscriptionRemoved"  # type: ignore[union-attr]


def test_verifier_caches_only_successes() -> None:
    v = ClientStateVerifier([SECRET], cache_size=2)
    good = client_state_for(TENANT, SECRET)
    assert v(TENANT, good) and v(TENANT, good)
    assert not v(TENANT, "x") and not v("other", good)
    assert not ClientStateVerifier([])(TENANT, good)
    for i in range(5):
        assert v(f"t{i}", client_state_for(f"t{i}", SECRET))
    assert len(v._cache) == 2
