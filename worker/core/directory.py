"""Entra's directory objects as Graph's pages carry them: the Graph adapter (`worker.graph`) decodes its pages
into these, and the store writes them into the tenant mirror. Plain data, so neither of the two needs the
other: the store never imports the Graph adapter.

Field names are Python's; `rename="camel"` and the explicit names are Graph's spelling on the wire.
"""

from __future__ import annotations

import msgspec

from worker.core.model import UserProperties


class Removed(msgspec.Struct):
    reason: str = "deleted"


class AssignedLicense(msgspec.Struct, rename="camel"):
    sku_id: str = ""


class GraphUser(UserProperties, kw_only=True, rename="camel"):
    """A user of a `/users` or `/users/delta` page: `UserProperties`, then what the mirror derives from."""

    # A list, not the declaration's tuple: unstorable text is scrubbed in place (`worker.core.text.scrub`).
    business_phones: list[str] = []  # type: ignore[assignment]
    assigned_licenses: list[AssignedLicense] = []
    removed: Removed | None = msgspec.field(default=None, name="@removed")


class MemberDelta(msgspec.Struct):
    id: str
    odata_type: str = msgspec.field(default="", name="@odata.type")
    removed: Removed | None = msgspec.field(default=None, name="@removed")


class GraphGroup(msgspec.Struct):
    id: str
    display_name: str | None = msgspec.field(default=None, name="displayName")
    members: list[MemberDelta] = msgspec.field(default_factory=list, name="members@delta")
    removed: Removed | None = msgspec.field(default=None, name="@removed")
