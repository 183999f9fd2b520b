"""The user-sync filters: parsing the API JSON, and the scope decision (`matches` and its compiled form)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from worker.core.filters import (
    FilterError,
    compile_filters,
    filters_to_json,
    matches,
    parse_filters,
    user_domains,
)
from worker.core.model import Filters, MirrorUser

ALL_SECTIONS = {"user_types": "all", "domains": "all", "office_locations": "all", "departments": "all",
                "groups": "all"}

GUEST_UPN = "jane_fabrikam.com#EXT#@contoso.onmicrosoft.com"


def table(rows: list[tuple[Any, ...]]) -> list[Any]:
    """Matrix rows `(id, *values)` as named pytest params."""
    return [pytest.param(*row[1:], id=row[0]) for row in rows]


def user(**kw: Any) -> MirrorUser:
    return MirrorUser(tenant_id="t1", id="u1", **kw)


def via_compiled(u: MirrorUser, f: Filters) -> bool:
    return compile_filters(f)(u)


# ---- matches -------------------------------------------------------------------------------------------

MATCH_CASES = [
    # id, filters, user, expected
    ("all-matches-everyone", {}, {"user_type": "Member", "department": "Sales"}, True),
    ("all-matches-missing-properties", {}, {}, True),
    ("user-type-listed", {"user_types": ("Member",)}, {"user_type": "Member"}, True),
    ("user-type-not-listed", {"user_types": ("Member",)}, {"user_type": "Guest"}, False),
    ("user-type-case-insensitive", {"user_types": ("member",)}, {"user_type": "MEMBER"}, True),
    ("restricted-section-missing-property", {"user_types": ("Member",)}, {}, False),
    ("department-or-inside-section", {"departments": ("Sales", "Support")}, {"department": "Support"}, True),
    ("department-none-of-list", {"departments": ("Sales", "Support")}, {"department": "Finance"}, False),
    ("department-surrounding-spaces", {"departments": ("Sales",)}, {"department": " sales "}, True),
    ("office-location-listed", {"office_locations": ("Paris",)}, {"office_location": "paris"}, True),
    ("office-location-not-listed", {"office_locations": ("Paris",)}, {"office_location": "Lyon"}, False),
    ("and-across-sections-both", {"departments": ("Sales",), "office_locations": ("Paris",)},
     {"department": "Sales", "office_location": "Paris"}, True),
    ("and-across-sections-one-fails", {"departments": ("Sales",), "office_locations": ("Paris",)},
     {"department": "Sales", "office_location": "Lyon"}, False),
    ("and-all-five-sections", {"user_types": ("Member",), "domains": ("contoso.com",),
                               "office_locations": ("Paris",), "departments": ("Sales",), "groups": ("g1",)},
     {"user_type": "Member", "mail": "a@contoso.com", "office_location": "Paris", "department": "Sales",
      "group_ids": frozenset({"g1"})}, True),
    ("and-all-five-sections-group-fails", {"user_types": ("Member",), "domains": ("contoso.com",),
                                           "office_locations": ("Paris",), "departments": ("Sales",),
                                           "groups": ("g1",)},
     {"user_type": "Member", "mail": "a@contoso.com", "office_location": "Paris", "department": "Sales",
      "group_ids": frozenset({"g2"})}, False),
    ("domain-of-mail", {"domains": ("contoso.com",)}, {"mail": "a@contoso.com"}, True),
    ("domain-of-upn", {"domains": ("contoso.com",)},
     {"mail": "a@other.com", "user_principal_name": "a@contoso.com"}, True),
    ("domain-of-neither", {"domains": ("contoso.com",)},
     {"mail": "a@other.com", "user_principal_name": "a@other.org"}, False),
    ("domain-case-insensitive", {"domains": ("Contoso.COM",)}, {"mail": "A@CONTOSO.com"}, True),
    ("domain-is-whole-not-suffix", {"domains": ("contoso.com",)}, {"mail": "a@sub.contoso.com"}, False),
    ("domain-missing-mail-and-upn", {"domains": ("contoso.com",)}, {}, False),
    ("domain-mail-without-at", {"domains": ("contoso.com",)}, {"mail": "contoso.com"}, False),
    ("guest-upn-home-domain", {"domains": ("fabrikam.com",)}, {"user_principal_name": GUEST_UPN}, True),
    ("guest-upn-not-tenant-domain", {"domains": ("contoso.onmicrosoft.com",)},
     {"user_principal_name": GUEST_UPN}, False),
    ("guest-mail-domain", {"domains": ("fabrikam.com",)},
     {"mail": "jane@fabrikam.com", "user_principal_name": GUEST_UPN}, True),
    ("member-upn-tenant-domain", {"domains": ("contoso.onmicrosoft.com",)},
     {"user_principal_name": "admin@contoso.onmicrosoft.com"}, True),
    ("group-any-membership", {"groups": ("g1", "g9")}, {"group_ids": frozenset({"g0", "g9"})}, True),
    ("group-no-membership", {"groups": ("g1",)}, {"group_ids": frozenset({"g2", "g3"})}, False),
    ("group-none-at-all", {"groups": ("g1",)}, {}, False),
    ("group-case-insensitive-user-side", {"groups": ("abc-1",)}, {"group_ids": frozenset({"ABC-1"})}, True),
    ("group-case-insensitive-filter-side", {"groups": ("ABC-1",)}, {"group_ids": frozenset({"abc-1"})}, True),
]


@pytest.mark.parametrize("decide", [matches, via_compiled], ids=["matches", "compiled"])
@pytest.mark.parametrize(("sections", "props", "expected"), table(MATCH_CASES))
def test_scope(decide: Callable[[MirrorUser, Filters], bool], sections: dict[str, Any],
               props: dict[str, Any], expected: bool) -> None:
    assert decide(user(**props), Filters(**sections)) is expected


DOMAIN_CASES = [
    ("mail-and-upn", {"mail": "a@Contoso.com", "user_principal_name": "a@contoso.onmicrosoft.com"},
     {"contoso.com", "contoso.onmicrosoft.com"}),
    ("same-domain-once", {"mail": "a@contoso.com", "user_principal_name": "a@contoso.com"}, {"contoso.com"}),
    ("guest-home-domain", {"user_principal_name": GUEST_UPN}, {"fabrikam.com"}),
    ("guest-with-underscore-name", {"user_principal_name": "j_doe_fabrikam.com#EXT#@c.onmicrosoft.com"},
     {"fabrikam.com"}),
    ("guest-unparseable", {"user_principal_name": "weird#EXT#@c.onmicrosoft.com"}, set()),
    ("nothing", {}, set()),
]


@pytest.mark.parametrize(("props", "expected"), table(DOMAIN_CASES))
def test_user_domains(props: dict[str, Any], expected: set[str]) -> None:
    assert user_domains(user(**props)) == expected


# ---- parse_filters ---------------------------------------------------------------------------------------

VALID_CASES = [
    ("all-everywhere", {}, Filters()),
    ("lists", {"domains": ["contoso.com"], "departments": ["Sales", "Support"]},
     Filters(domains=("contoso.com",), departments=("Sales", "Support"))),
    ("values-stripped", {"departments": ["  Sales "]}, Filters(departments=("Sales",))),
    ("case-insensitive-repeats-dropped", {"departments": ["Sales", "SALES", "Support"]},
     Filters(departments=("Sales", "Support"))),
    ("tuple-accepted", {"groups": ("g1",)}, Filters(groups=("g1",))),
]


@pytest.mark.parametrize(("override", "expected"), table(VALID_CASES))
def test_parse_valid(override: dict[str, Any], expected: Filters) -> None:
    assert parse_filters({**ALL_SECTIONS, **override}) == expected


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in ALL_SECTIONS.items() if k != key}


BAD_CASES = [
    # id, input, field, message fragment
    ("not-an-object", ["all"], "filters", "must be an object"),
    ("null", None, "filters", "must be an object"),
    ("unknown-section", {**ALL_SECTIONS, "countries": "all"}, "filters.countries", "unknown section"),
    ("missing-section", without("groups"), "filters.groups", "is required"),
    ("empty-object", {}, "filters.user_types", "is required"),
    ("empty-list", {**ALL_SECTIONS, "departments": []}, "filters.departments", "must not be empty"),
    ("other-string", {**ALL_SECTIONS, "departments": "Sales"}, "filters.departments", '"all" or'),
    ("all-is-case-sensitive", {**ALL_SECTIONS, "departments": "ALL"}, "filters.departments", '"all" or'),
    ("null-section", {**ALL_SECTIONS, "office_locations": None}, "filters.office_locations", '"all" or'),
    ("object-section", {**ALL_SECTIONS, "groups": {"g1": True}}, "filters.groups", '"all" or'),
    ("non-string-value", {**ALL_SECTIONS, "departments": ["Sales", 3]}, "filters.departments[1]",
     "must be a string"),
    ("null-value", {**ALL_SECTIONS, "groups": [None]}, "filters.groups[0]", "must be a string"),
    ("empty-value", {**ALL_SECTIONS, "user_types": [""]}, "filters.user_types[0]", "must not be empty"),
    ("blank-value", {**ALL_SECTIONS, "user_types": ["Member", "  "]}, "filters.user_types[1]",
     "must not be empty"),
    ("domain-with-at", {**ALL_SECTIONS, "domains": ["@contoso.com"]}, "filters.domains[0]", "no @"),
    ("domain-with-space", {**ALL_SECTIONS, "domains": ["contoso.com", "a b.com"]}, "filters.domains[1]",
     "no spaces"),
]


@pytest.mark.parametrize(("obj", "field", "fragment"), table(BAD_CASES))
def test_parse_rejects(obj: object, field: str, fragment: str) -> None:
    with pytest.raises(FilterError) as caught:
        parse_filters(obj)
    assert caught.value.field == field
    assert fragment in caught.value.message
    assert isinstance(caught.value, ValueError)


ROUND_TRIPS = [
    ("all", ALL_SECTIONS),
    ("mixed", {**ALL_SECTIONS, "domains": ["contoso.com"], "departments": ["Sales", "Support"],
               "groups": ["0f1e2d3c-aaaa-bbbb-cccc-000000000001"]}),
]


@pytest.mark.parametrize("obj", table(ROUND_TRIPS))
def test_json_round_trip(obj: dict[str, Any]) -> None:
    assert filters_to_json(parse_filters(obj)) == obj
