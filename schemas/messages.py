"""Kafka message types, one struct per topic, versioned by the `v` field.

Compatibility rule: a new field must have a default; a consumer ignores fields it does not know (msgspec
does by default). A breaking change gets a new struct and a new `v`, and consumers accept both until every
producer has moved. `tests/unit/test_schemas.py` keeps `schemas/json/*.schema.json` in sync with these.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import msgspec

ObjectType = Literal["user", "group", "unknown"]
CommandName = Literal["resync", "renew-subscriptions", "org-sync"]
T = TypeVar("T", bound=msgspec.Struct)


class ChangeNotification(msgspec.Struct, frozen=True, kw_only=True):
    """One Graph change notification item, as accepted by the webhook (topic entra.notifications)."""

    v: int = 1
    tenant_id: str
    subscription_id: str
    change_type: str
    resource: str
    object_type: ObjectType = "unknown"
    object_id: str | None = None
    subscription_expiration: str | None = None
    received_at: str


class LifecycleNotification(msgspec.Struct, frozen=True, kw_only=True):
    """One Graph lifecycle notification item (topic entra.lifecycle)."""

    v: int = 1
    tenant_id: str
    subscription_id: str
    lifecycle_event: str
    subscription_expiration: str | None = None
    received_at: str


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """Work asked of the worker by the scheduler or an operator (topic entra.commands)."""

    v: int = 1
    command: CommandName
    tenant_id: str
    organization_id: str | None = None
    run_id: str | None = None
    reason: str = ""
    requested_at: str
    confirm_deactivations: bool = False  # org-sync: apply deactivations the guard would hold (operator said so)


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A message that can never succeed, with why (topic entra.dead-letter)."""

    v: int = 1
    topic: str
    partition: int
    offset: int
    key: str | None = None
    value: str
    error: str
    failed_at: str


BY_TOPIC: dict[str, type[msgspec.Struct]] = {
    "entra.notifications": ChangeNotification,
    "entra.lifecycle": LifecycleNotification,
    "entra.commands": Command,
    "entra.dead-letter": DeadLetter,
}

_encoder = msgspec.json.Encoder()


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes, type_: type[T]) -> T:
    """Decode a message; raises msgspec.ValidationError / DecodeError for poison input."""
    return msgspec.json.decode(data, type=type_)


def json_schemas() -> dict[str, dict[str, object]]:
    """JSON Schema of each message type, by file name, as committed under schemas/json/."""
    return {
        f"{topic}.schema.json": msgspec.json.schema(struct) for topic, struct in BY_TOPIC.items()
    }
