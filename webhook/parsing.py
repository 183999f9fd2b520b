"""Decode a Graph notification body into typed Kafka messages: pure, no I/O, no clock, no logging.

Graph's items vary (`tenantId` or `organizationId`, `Users/` or `users/`, extra fields), so the wire structs
are tolerant: every field optional, unknown fields ignored. The whole body is decoded in one typed pass; only
when that fails (one malformed item) is it decoded again item by item, so one bad item costs only itself.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec

from schemas.messages import ChangeNotification, LifecycleNotification, ObjectType


class Kind(enum.Enum):
    """Which endpoint a body arrived on; decides the message type and the topic."""

    CHANGE = "change"
    LIFECYCLE = "lifecycle"


class DropReason(enum.StrEnum):
    """Why an item was dropped (the `reason` label of the dropped counter)."""

    MALFORMED = "malformed"
    MISSING_TENANT = "missing_tenant"
    BAD_CLIENT_STATE = "bad_client_state"


class NotACollection(ValueError):
    """The body is not a `{"value": [...]}` notification collection at all (→ 400)."""


class ResourceData(msgspec.Struct, frozen=True):
    id: str | None = None


class Item(msgspec.Struct, frozen=True, rename="camel"):
    """One item of `value`, as Graph sends it (change or lifecycle). Unknown fields are ignored."""

    subscription_id: str | None = None
    subscription_expiration_date_time: str | None = None
    change_type: str | None = None
    lifecycle_event: str | None = None
    resource: str | None = None
    tenant_id: str | None = None
    organization_id: str | None = None
    client_state: str | None = None
    resource_data: ResourceData | None = None


class Collection(msgspec.Struct, frozen=True, rename="camel"):
    """The body. Lifecycle bodies may carry `validationTokens` (rich notifications); they are accepted."""

    value: list[Item] | None = None
    validation_tokens: list[str] | None = None


class RawCollection(msgspec.Struct, frozen=True, rename="camel"):
    value: list[msgspec.Raw] | None = None
    validation_tokens: list[str] | None = None


_collection = msgspec.json.Decoder(Collection)
_raw_collection = msgspec.json.Decoder(RawCollection)
_item = msgspec.json.Decoder(Item)

_T = TypeVar("_T")
Message = ChangeNotification | LifecycleNotification
Verifier = Callable[[str, str | None], bool]


@dataclass
class Parsed:
    """The outcome of one body: messages to publish (with their tenant key) and drop counts by reason."""

    messages: list[tuple[str, Message]] = field(default_factory=list)
    dropped: dict[DropReason, int] = field(default_factory=dict)
    received: int = 0

    def drop(self, reason: DropReason) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


def decode_items(body: bytes) -> Sequence[Item | None]:
    """The items of a body; None for an item that is malformed. Raises NotACollection."""
    try:
        collection = _collection.decode(body)
    except msgspec.ValidationError:
        return _decode_items_one_by_one(body)
    except msgspec.DecodeError as exc:
        raise NotACollection("body is not JSON") from exc
    except RecursionError:  # msgspec's guard against nesting deeper than any notification is
        raise NotACollection("body is nested too deeply") from None
    return _items_of(collection.value, collection.validation_tokens)


def _decode_items_one_by_one(body: bytes) -> list[Item | None]:
    try:
        raw = _raw_collection.decode(body)
    except msgspec.MsgspecError as exc:
        raise NotACollection("body is not a notification collection") from exc
    except RecursionError:
        raise NotACollection("body is nested too deeply") from None
    items: list[Item | None] = []
    for one in _items_of(raw.value, raw.validation_tokens):
        try:
            items.append(_item.decode(one))
        except (msgspec.MsgspecError, RecursionError):
            items.append(None)
    return items


def _items_of(value: list[_T] | None, validation_tokens: list[str] | None) -> list[_T]:
    if value is None:
        if validation_tokens is not None:
            return []  # a lifecycle body with only validationTokens: nothing to publish, still accepted
        raise NotACollection("body has no 'value' array")
    return value


def parse(body: bytes, *, kind: Kind, verify: Verifier, received_at: str) -> Parsed:
    """Decode, validate and verify every item of `body`; raises NotACollection for a body that is not one."""
    items = decode_items(body)
    parsed = Parsed(received=len(items))
    build = _change if kind is Kind.CHANGE else _lifecycle
    for item in items:
        tenant = _tenant_of(item)
        if item is None or tenant is None:
            parsed.drop(DropReason.MALFORMED if item is None else DropReason.MISSING_TENANT)
        elif not verify(tenant, item.client_state):
            parsed.drop(DropReason.BAD_CLIENT_STATE)
        elif (message := build(item, tenant, received_at)) is None:
            parsed.drop(DropReason.MALFORMED)
        else:
            parsed.messages.append((tenant, message))
    return parsed


def _tenant_of(item: Item | None) -> str | None:
    if item is None:
        return None
    return item.tenant_id or item.organization_id or None


def _change(item: Item, tenant: str, received_at: str) -> ChangeNotification | None:
    if not (item.subscription_id and item.change_type and item.resource):
        return None
    object_type, object_id = object_of(item.resource, item.resource_data)
    return ChangeNotification(
        tenant_id=tenant,
        subscription_id=item.subscription_id,
        change_type=item.change_type,
        resource=item.resource,
        object_type=object_type,
        object_id=object_id,
        subscription_expiration=item.subscription_expiration_date_time,
        received_at=received_at,
    )


def _lifecycle(item: Item, tenant: str, received_at: str) -> LifecycleNotification | None:
    if not (item.subscription_id and item.lifecycle_event):
        return None
    return LifecycleNotification(
        tenant_id=tenant,
        subscription_id=item.subscription_id,
        lifecycle_event=item.lifecycle_event,
        subscription_expiration=item.subscription_expiration_date_time,
        received_at=received_at,
    )


_OBJECT_TYPES: dict[str, ObjectType] = {"users": "user", "groups": "group"}


def object_of(resource: str, data: ResourceData | None) -> tuple[ObjectType, str | None]:
    """`Users/<id>` or `users/<id>` → ("user", id); the id comes from resourceData, else from the path."""
    head, _, tail = resource.strip("/").partition("/")
    object_type = _OBJECT_TYPES.get(head.lower(), "unknown")
    object_id = (data.id if data else None) or tail.partition("/")[0] or None
    return object_type, object_id

