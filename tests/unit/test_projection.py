"""Projection of an Entra user into End User fields, Microsoft data, Asset links and a content hash."""

from __future__ import annotations

from typing import Any

import pytest

from worker.core.model import END_USER_FIELDS, Asset, Mfa, MirrorUser
from worker.core.projection import (
    AssetIndex,
    content_hash,
    email_keys,
    linked_asset_ids,
    microsoft_data,
    project,
    project_fields,
)

GUEST_UPN = "jane_fabrikam.com#EXT#@contoso.onmicrosoft.com"


def table(rows: list[tuple[Any, ...]]) -> list[Any]:
    """Matrix rows `(id, *values)` as named pytest params."""
    return [pytest.param(*row[1:], id=row[0]) for row in rows]


def user(**kw: Any) -> MirrorUser:
    return MirrorUser(tenant_id="t1", id="u1", **kw)


# ---- fields --------------------------------------------------------------------------------------------

FIELD_CASES = [
    # id, user properties, expected subset of the projected fields
    ("names-from-given-and-surname", {"given_name": "Jane", "surname": "Doe", "display_name": "J. Doe"},
     {"first_name": "Jane", "last_name": "Doe"}),
    ("names-from-display-name", {"display_name": "Jane van der Berg"},
     {"first_name": "Jane", "last_name": "van der Berg"}),
    ("first-name-only-from-display", {"surname": "Doe", "display_name": "Janet Doe"},
     {"first_name": "Janet", "last_name": "Doe"}),
    ("last-name-only-from-display", {"given_name": "Jane", "display_name": "Jane  Doe "},
     {"first_name": "Jane", "last_name": "Doe"}),
    ("one-word-display-name", {"display_name": "Reception"}, {"first_name": "Reception", "last_name": None}),
    ("blank-given-name-falls-back", {"given_name": "  ", "display_name": "Jane Doe"},
     {"first_name": "Jane", "last_name": "Doe"}),
    ("no-names", {}, {"first_name": None, "last_name": None}),
    ("email-is-mail", {"mail": "jane@contoso.com", "user_principal_name": "jdoe@contoso.onmicrosoft.com"},
     {"email": "jane@contoso.com"}),
    ("email-falls-back-to-upn", {"user_principal_name": "jdoe@contoso.com"}, {"email": "jdoe@contoso.com"}),
    ("email-never-guest-upn", {"user_principal_name": GUEST_UPN}, {"email": None}),
    ("email-guest-uses-mail", {"mail": "jane@fabrikam.com", "user_principal_name": GUEST_UPN},
     {"email": "jane@fabrikam.com"}),
    ("email-blank-mail-falls-back", {"mail": " ", "user_principal_name": "jdoe@contoso.com"},
     {"email": "jdoe@contoso.com"}),
    ("phone-is-first-business-phone", {"business_phones": ("+1 555 0100", "+1 555 0199")},
     {"phone": "+1 555 0100"}),
    ("phone-skips-blank", {"business_phones": ("", "+1 555 0199")}, {"phone": "+1 555 0199"}),
    ("no-phone", {}, {"phone": None}),
    ("address-and-job", {"mobile_phone": "+33 6", "street_address": "1 rue X", "city": "Paris",
                         "state": "IDF", "postal_code": "75001", "job_title": "Engineer"},
     {"mobile": "+33 6", "street": "1 rue X", "city": "Paris", "state": "IDF", "postal_code": "75001",
      "job_title": "Engineer"}),
    ("values-stripped", {"city": " Paris ", "job_title": ""}, {"city": "Paris", "job_title": None}),
]


@pytest.mark.parametrize(("props", "expected"), table(FIELD_CASES))
def test_project_fields(props: dict[str, Any], expected: dict[str, str | None]) -> None:
    fields = project_fields(user(**props))
    assert tuple(fields) == END_USER_FIELDS
    assert {name: fields[name] for name in expected} == expected


EMAIL_KEY_CASES = [
    ("mail-and-upn-lowered", {"mail": "Jane@Contoso.com", "user_principal_name": "JDoe@contoso.com"},
     ("jane@contoso.com", "jdoe@contoso.com")),
    ("same-address-once", {"mail": "jane@contoso.com", "user_principal_name": "JANE@contoso.com"},
     ("jane@contoso.com",)),
    ("guest-upn-excluded", {"mail": "jane@fabrikam.com", "user_principal_name": GUEST_UPN},
     ("jane@fabrikam.com",)),
    ("guest-without-mail", {"user_principal_name": GUEST_UPN}, ()),
    ("none", {}, ()),
]


@pytest.mark.parametrize(("props", "expected"), table(EMAIL_KEY_CASES))
def test_email_keys(props: dict[str, Any], expected: tuple[str, ...]) -> None:
    assert email_keys(user(**props)) == expected


# ---- microsoft data --------------------------------------------------------------------------------------

SKUS = {"sku-e3": "ENTERPRISEPACK", "sku-bp": "O365_BUSINESS_PREMIUM"}

MICROSOFT_CASES = [
    ("complete", {"user_principal_name": "jane@contoso.com", "account_enabled": True,
                  "license_sku_ids": ("sku-bp", "sku-e3"), "last_sign_in_at": "2026-01-02T03:04:05Z",
                  "mfa": Mfa(registered=True, capable=True, methods=("softwareOneTimePasscode",
                                                                     "microsoftAuthenticatorPush"),
                             preferred_method="microsoftAuthenticatorPush")},
     {"object_id": "u1", "user_principal_name": "jane@contoso.com", "account_enabled": True,
      "licenses": [{"sku_id": "sku-e3", "sku_part_number": "ENTERPRISEPACK"},
                   {"sku_id": "sku-bp", "sku_part_number": "O365_BUSINESS_PREMIUM"}],
      "last_sign_in_at": "2026-01-02T03:04:05Z",
      "mfa": {"registered": True, "capable": True,
              "methods": ["microsoftAuthenticatorPush", "softwareOneTimePasscode"],
              "preferred_method": "microsoftAuthenticatorPush"}}),
    ("nothing-known", {},
     {"object_id": "u1", "user_principal_name": None, "account_enabled": None, "licenses": [],
      "last_sign_in_at": None, "mfa": None}),
    ("unknown-sku-last-and-unnamed", {"license_sku_ids": ("sku-zz", "sku-e3", "sku-e3")},
     {"licenses": [{"sku_id": "sku-e3", "sku_part_number": "ENTERPRISEPACK"},
                   {"sku_id": "sku-zz", "sku_part_number": None}]}),
    ("sku-id-case-insensitive", {"license_sku_ids": ("SKU-E3",)},
     {"licenses": [{"sku_id": "SKU-E3", "sku_part_number": "ENTERPRISEPACK"}]}),
    ("mfa-not-registered", {"mfa": Mfa(registered=False, capable=False)},
     {"mfa": {"registered": False, "capable": False, "methods": [], "preferred_method": None}}),
    ("disabled-account", {"account_enabled": False}, {"account_enabled": False}),
]


@pytest.mark.parametrize(("props", "expected"), table(MICROSOFT_CASES))
def test_microsoft_data(props: dict[str, Any], expected: dict[str, object]) -> None:
    data = microsoft_data(user(**props), SKUS)
    assert set(data) == {"object_id", "user_principal_name", "account_enabled", "licenses", "last_sign_in_at",
                         "mfa"}
    assert {key: data[key] for key in expected} == expected


# ---- assets ----------------------------------------------------------------------------------------------

ASSETS = (
    Asset(id="laptop", macs=("AA:BB:CC:DD:EE:01",)),
    Asset(id="dock", macs=("aa-bb-cc-dd-ee-02", "aabb.ccdd.ee03")),
    Asset(id="phone", macs=("AABBCCDDEE04",)),
    Asset(id="twin", macs=("aabbccddee04",)),
    Asset(id="placeholder", macs=("00:00:00:00:00:00", "junk")),
)

ASSET_CASES = [
    ("colon-notation", ("aabbccddee01",), {"laptop"}),
    ("dash-notation", ("aabbccddee02",), {"dock"}),
    ("dotted-notation", ("aabbccddee03",), {"dock"}),
    ("user-mac-not-normalised", ("AA-BB-CC-DD-EE-01",), {"laptop"}),
    ("several-devices", ("aabbccddee01", "aabbccddee03"), {"laptop", "dock"}),
    ("one-mac-two-assets", ("aabbccddee04",), {"phone", "twin"}),
    ("no-match", ("aabbccddeeff",), set()),
    ("placeholder-never-links", ("000000000000",), set()),
    ("no-devices", (), set()),
]


@pytest.mark.parametrize("index", [False, True], ids=["assets", "index"])
@pytest.mark.parametrize(("macs", "expected"), table(ASSET_CASES))
def test_linked_asset_ids(index: bool, macs: tuple[str, ...], expected: set[str]) -> None:
    assets = AssetIndex(ASSETS) if index else ASSETS
    assert linked_asset_ids(user(device_macs=macs), assets) == expected


def test_no_assets_links_nothing() -> None:
    assert linked_asset_ids(user(device_macs=("aabbccddee01",)), ()) == frozenset()


# ---- content hash ----------------------------------------------------------------------------------------

BASE_FIELDS = dict.fromkeys(END_USER_FIELDS, None) | {"first_name": "Jane", "email": "jane@contoso.com"}
BASE_MICROSOFT: dict[str, object] = {"object_id": "u1", "licenses": [], "mfa": None}
BASE = {"fields": BASE_FIELDS, "microsoft": BASE_MICROSOFT, "sync_state": "synced", "asset_ids": ("a1", "a2")}

HASH_CASES = [
    # id, changed arguments, same hash?
    ("identical", {}, True),
    ("asset-order-irrelevant", {"asset_ids": ("a2", "a1")}, True),
    ("microsoft-key-order-irrelevant", {"microsoft": {"mfa": None, "licenses": [], "object_id": "u1"}}, True),
    ("field-key-order-irrelevant", {"fields": dict(reversed(BASE_FIELDS.items()))}, True),
    ("field-value", {"fields": BASE_FIELDS | {"city": "Paris"}}, False),
    ("field-moved", {"fields": BASE_FIELDS | {"first_name": None, "last_name": "Jane"}}, False),
    ("microsoft-value", {"microsoft": BASE_MICROSOFT | {"mfa": {"registered": True}}}, False),
    ("sync-state", {"sync_state": "out_of_scope"}, False),
    ("asset-added", {"asset_ids": ("a1", "a2", "a3")}, False),
    ("asset-removed", {"asset_ids": ("a1",)}, False),
]


@pytest.mark.parametrize(("changed", "same"), table(HASH_CASES))
def test_content_hash(changed: dict[str, Any], same: bool) -> None:
    def digest(args: dict[str, Any]) -> bytes:
        return content_hash(args["fields"], args["microsoft"], sync_state=args["sync_state"],
                            asset_ids=args["asset_ids"])

    base, other = digest(BASE), digest(BASE | changed)
    assert len(base) == 16
    assert (base == other) is same


def test_project_bundles_everything() -> None:
    u = user(given_name="Jane", mail="jane@contoso.com", license_sku_ids=("sku-e3",),
             device_macs=("aabbccddee01",))
    projection = project(u, sku_names=SKUS, assets=AssetIndex(ASSETS))
    assert projection.fields == project_fields(u)
    assert projection.microsoft == microsoft_data(u, SKUS)
    assert projection.asset_ids == {"laptop"}
    assert projection.content_hash("synced") == content_hash(
        projection.fields, projection.microsoft, sync_state="synced", asset_ids=["laptop"]
    )
