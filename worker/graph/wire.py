"""Graph's pages as the adapter decodes them: the `$select` lists, small msgspec structs parsed in one pass, and
`decode_page`, where text PostgreSQL cannot store is removed. Users and groups are decoded into the directory's
types of `worker.core.directory`."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, Generic, TypeVar

import msgspec
import structlog

from worker.core.directory import GraphGroup, GraphUser
from worker.core.model import USER_PROPERTIES
from worker.core.text import json_without_lone_surrogates, may_hold_unstorable, scrub

log = structlog.get_logger(__name__)

T = TypeVar("T")


def _user_select() -> str:
    """`$select` of user pages: the declared user properties (`UserProperties`) and licences, as Graph spells them."""
    wire = dict(zip(GraphUser.__struct_fields__, GraphUser.__struct_encode_fields__, strict=True))
    return ",".join(wire[f] for f in ("id", *USER_PROPERTIES, "assigned_licenses"))


USER_SELECT = _user_select()
REGISTRATION_SELECT = (  # what an End User's MFA data needs: a sixth of the report's row
    "id,isMfaRegistered,isMfaCapable,methodsRegistered,userPreferredMethodForSecondaryAuthentication,"
    "systemPreferredAuthenticationMethods"
)


class UserPage(msgspec.Struct):
    value: list[GraphUser] = []
    next_link: str | None = msgspec.field(default=None, name="@odata.nextLink")
    delta_link: str | None = msgspec.field(default=None, name="@odata.deltaLink")
    # Not Graph's: values of this page stored without characters PostgreSQL cannot store ("<id> jobTitle").
    scrubbed: list[str] = msgspec.field(default_factory=list, name="@entra-sync.scrubbed")


USER_PAGES = msgspec.json.Decoder(UserPage)


class GroupPage(msgspec.Struct):
    value: list[GraphGroup] = []
    next_link: str | None = msgspec.field(default=None, name="@odata.nextLink")
    delta_link: str | None = msgspec.field(default=None, name="@odata.deltaLink")


GROUP_PAGES = msgspec.json.Decoder(GroupPage)


class Sku(msgspec.Struct, rename="camel"):
    sku_id: str
    sku_part_number: str = ""


class SignIn(msgspec.Struct, rename="camel"):
    """Parsed as datetimes while the page is decoded; Graph writes 0001-01-01T00:00:00Z for "never"."""

    last_sign_in_date_time: datetime | None = None
    last_successful_sign_in_date_time: datetime | None = None
    last_non_interactive_sign_in_date_time: datetime | None = None


class UserSignIn(msgspec.Struct, rename="camel"):
    id: str
    sign_in_activity: SignIn | None = None


class RegistrationDetail(msgspec.Struct, rename="camel"):
    id: str
    is_mfa_registered: bool = False
    is_mfa_capable: bool = False
    methods_registered: list[str] = []
    user_preferred_method_for_secondary_authentication: str | None = None
    system_preferred_authentication_methods: list[str] = []


class ManagedDevice(msgspec.Struct, rename="camel"):
    id: str
    user_id: str | None = None
    wi_fi_mac_address: str | None = None
    ethernet_mac_address: str | None = None


class Listing(msgspec.Struct, Generic[T]):
    value: list[T] = []
    next_link: str | None = msgspec.field(default=None, name="@odata.nextLink")


@functools.cache
def listing_decoder(item: type[T]) -> msgspec.json.Decoder[Listing[T]]:
    """A decoder for pages of `item`: the whole page is parsed in one pass, items typed as it goes."""
    return msgspec.json.Decoder(Listing[item])  # type: ignore[valid-type]


class Subscription(msgspec.Struct, rename="camel"):
    id: str
    resource: str = ""
    change_type: str = ""
    notification_url: str = ""
    expiration_date_time: str = ""
    client_state: str | None = None


class Organization(msgspec.Struct):
    id: str


class SubscriptionList(msgspec.Struct):
    value: list[Subscription] = []


def decode_page(decoder: msgspec.json.Decoder[Any], content: bytes, what: str) -> tuple[Any, list[str]]:
    """Decode a page whose `value` items have an `id`; text PostgreSQL cannot store (U+0000, lone surrogates)
    is removed at this boundary and named ("<id> <field>"), so one odd value never fails a tenant's work."""
    if not may_hold_unstorable(content):
        return decoder.decode(content), []
    page = decoder.decode(json_without_lone_surrogates(content))
    changed = [f"{getattr(item, 'id', '?')} {path}" for item in page.value for path in scrub(item)]
    if changed:
        log.warning("graph.unstorable_text", what=what, values=len(changed), first=changed[:5])
    return page, changed

