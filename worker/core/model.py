"""Data the pure core decides on, and the plan it returns.

These types are the seam between the core (`filters`, `projection`, `reconcile`) and the store, which loads
them from PostgreSQL and applies a `Plan` set-based. Everything is immutable.
"""

from __future__ import annotations

from typing import Literal, get_args

import msgspec

SyncState = Literal["manual", "synced", "out_of_scope", "sync_disabled", "deactivated", "excluded"]
SYNC_STATES: tuple[SyncState, ...] = get_args(SyncState)  # the one list of them
RemovedReason = Literal["changed", "deleted", "absent"]  # absent: missing from a complete listing

# The End User fields the sync owns, in a fixed order (journal and hashing rely on it).
END_USER_FIELDS: tuple[str, ...] = (
    "first_name", "last_name", "email", "phone", "mobile", "street", "city", "state", "postal_code",
    "job_title",
)


class Mfa(msgspec.Struct, frozen=True, kw_only=True):
    registered: bool
    capable: bool
    methods: tuple[str, ...] = ()
    preferred_method: str | None = None


class UserProperties(msgspec.Struct, kw_only=True, rename="camel"):
    """The Entra user properties the sync reads from Graph and keeps verbatim in the tenant mirror: the one
    declaration of them. Graph's `$select` (`worker.graph.USER_SELECT`), the decoding of Graph's pages
    (`GraphUser`), the mirror's columns and rows (`worker.store.mirror.MIRROR_COLUMNS`) and `MirrorUser` all
    derive from these fields, in this order. Adding a synced property: a field here, the `entra_users` column
    of the same name (a migration), and its test (tests/unit/test_user_properties.py shows how).

    Encoded names are Graph's (`rename="camel"`: `jobTitle`); the mirror's columns are the field names."""

    id: str
    display_name: str | None = None
    given_name: str | None = None
    surname: str | None = None
    mail: str | None = None
    user_principal_name: str | None = None
    business_phones: tuple[str, ...] = ()
    mobile_phone: str | None = None
    street_address: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None
    job_title: str | None = None
    department: str | None = None
    office_location: str | None = None
    user_type: str | None = None
    account_enabled: bool | None = None


# The names of the properties above but `id` (the key), in declaration order.
USER_PROPERTIES: tuple[str, ...] = UserProperties.__struct_fields__[1:]


# mypy's dataclass rules refuse a frozen subclass of a mutable base; msgspec allows it (the Graph-side subclass
# stays mutable for scrubbing in place), and MirrorUser's instances are immutable.
class MirrorUser(UserProperties, frozen=True, kw_only=True, array_like=True):  # type: ignore[misc]
    """One Entra user as held in the tenant mirror (`entra_users`), with derived group membership: its
    `UserProperties`, then what the mirror derives or adds.

    Its JSON form is an array in field order (`array_like`): the store reads a batch of mirror users as one
    array of arrays, which PostgreSQL builds and msgspec decodes far faster than objects with 25 keys each.
    """

    tenant_id: str
    license_sku_ids: tuple[str, ...] = ()
    removed: RemovedReason | None = None          # soft-deleted ("changed") or permanently ("deleted")
    last_sign_in_at: str | None = None            # ISO 8601, UTC
    mfa: Mfa | None = None
    device_macs: tuple[str, ...] = ()             # normalised: 12 lowercase hex digits
    group_ids: frozenset[str] = frozenset()       # transitive membership
    # The mirror's fingerprint of everything `project` reads of this user (`worker.store.mirror.INPUTS_HASH`,
    # base64): with the Organization's (`projection.org_inputs_hash`) it says whether a stored End User already
    # holds this user's projection without projecting it (`projection.input_hash`). None: not known.
    input_hash: str | None = None


class ScopedUser(msgspec.Struct, kw_only=True, array_like=True):
    """What the filters (`worker.core.filters`) read of an Entra user, and whether it left: the filter preview
    reads only this of a user whose End User needs nothing from it (`worker.core.preview.Tally.settle`), and
    of a user without an End User until the filters keep it (`Tally.leave`). `group_ids` is filled in
    afterwards, with the filters' groups the user is in."""

    id: str
    user_type: str | None = None
    department: str | None = None
    office_location: str | None = None
    mail: str | None = None
    user_principal_name: str | None = None
    removed: RemovedReason | None = None          # read only where it may be set (`MirrorUser.removed`)
    account_enabled: bool | None = None           # likewise
    group_ids: frozenset[str] = frozenset()

    def active(self) -> bool:
        """Not a leaver (`reconcile.leaver_reason` says None): neither removed nor disabled."""
        return self.removed is None and self.account_enabled is not False


FilterSection = Literal["all"] | tuple[str, ...]


class Filters(msgspec.Struct, frozen=True, kw_only=True):
    """An Organization's user-sync filters: AND across sections, OR inside one; "all" matches everyone."""

    user_types: FilterSection = "all"
    domains: FilterSection = "all"
    office_locations: FilterSection = "all"
    departments: FilterSection = "all"
    groups: FilterSection = "all"


# The filter sections, in the order operators see them: the fields of `Filters`.
FILTER_SECTIONS: tuple[str, ...] = Filters.__struct_fields__


class Asset(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    macs: tuple[str, ...]                         # normalised


class StoredEndUser(msgspec.Struct, frozen=True, kw_only=True):
    """An End User as stored, with what the core needs to decide."""

    id: str
    organization_id: str
    fields: dict[str, str | None]                 # keys: END_USER_FIELDS
    sync_state: SyncState
    sync_state_reason: str | None = None
    entra_tenant_id: str | None = None
    entra_object_id: str | None = None
    microsoft: dict[str, object] | None = None
    content_hash: bytes | None = None
    asset_ids: frozenset[str] = frozenset()
    entra_fields: frozenset[str] = frozenset()    # fields Entra supplied a value for at the last sync
    locked_fields: frozenset[str] = frozenset()   # fields an operator edited: the sync never overwrites them
    # `projection.input_hash` of the user and Organization the sync last wrote this End User from: equal to
    # the current one, a `synced` End User holds that projection already. Any other write clears it.
    input_hash: bytes | None = None


class OrgContext(msgspec.Struct, frozen=True, kw_only=True):
    """One Organization's side of a reconcile: its filters and what the projection needs."""

    organization_id: str
    tenant_id: str
    filters: Filters
    sku_names: dict[str, str] = {}                # skuId -> skuPartNumber
    assets: tuple[Asset, ...] = ()
    excluded: frozenset[str] = frozenset()        # Entra object ids an operator excluded: never created nor updated


# ---- The plan --------------------------------------------------------------------------------------------

class FieldChange(msgspec.Struct, frozen=True):
    field: str
    old: str | None
    new: str | None


class Create(msgspec.Struct, frozen=True, kw_only=True):
    """A new End User linked to `entra_object_id`."""

    entra_object_id: str
    fields: dict[str, str | None]
    microsoft: dict[str, object]
    content_hash: bytes
    asset_ids: frozenset[str]
    entra_fields: tuple[str, ...] = ()            # the fields Entra supplied
    input_hash: bytes | None = None               # what it was projected from (`StoredEndUser.input_hash`)


class Update(msgspec.Struct, frozen=True, kw_only=True):
    """Changes to an existing End User (also used to adopt a manual one: `link` is then set)."""

    end_user_id: str
    entra_object_id: str
    changes: tuple[FieldChange, ...]              # sync-owned fields that differ; journalled
    fields: dict[str, str | None]                 # the complete new values of END_USER_FIELDS
    microsoft: dict[str, object]
    sync_state: SyncState
    sync_state_reason: str | None
    content_hash: bytes
    asset_ids: frozenset[str]
    link: bool = False                            # adopting an unlinked End User (same email)
    old_state: SyncState | None = None            # the state before (journalled when it moves)
    entra_fields: tuple[str, ...] = ()            # the fields Entra supplied
    input_hash: bytes | None = None               # what it was projected from (`StoredEndUser.input_hash`)


class StateChange(msgspec.Struct, frozen=True, kw_only=True):
    """Only the sync state moves (out of scope, deactivated): the record's fields are left as they are."""

    end_user_id: str
    entra_object_id: str
    old_state: SyncState
    sync_state: SyncState
    sync_state_reason: str | None
    leaver: dict[str, object] | None = None       # to deactivated: the leaver card's Entra side (ownership.py)


class Review(msgspec.Struct, frozen=True, kw_only=True):
    """An ambiguous match: no record is created until an operator resolves it."""

    entra_object_id: str
    reason: str
    candidate_ids: tuple[str, ...]


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    creates: tuple[Create, ...] = ()
    updates: tuple[Update, ...] = ()
    state_changes: tuple[StateChange, ...] = ()   # out_of_scope, and reactivation without field changes
    deactivations: tuple[StateChange, ...] = ()   # kept apart: the accidental-deletion guard may hold them
    reviews: tuple[Review, ...] = ()
    unchanged: int = 0
    out_of_scope: int = 0                         # observed users left alone: out of scope, or unlinked leavers
    excluded: int = 0                             # observed users an operator excluded: left alone
    # Unchanged End Users whose stored `input_hash` is not the current one: (End User id, input hash) to store,
    # so the next reconcile of an unchanged user skips its projection. Changes nothing an operator sees.
    input_hashes: tuple[tuple[str, bytes], ...] = ()
