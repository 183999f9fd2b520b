"""User-sync filters: validate the API JSON, and decide whether an Entra user is in scope.

A user is in scope when they match every section (AND); inside a section any listed value matches (OR);
a section set to "all" matches everyone, including users with the property missing and values that appear
later. Values compare case-insensitively and ignore surrounding whitespace.

Domains: a user's domains are the domain part of `mail` and of `userPrincipalName`. A guest's UPN
(`jane_fabrikam.com#EXT#@contoso.onmicrosoft.com`) ends in the *host* tenant's domain, which says nothing
about the guest, so for `#EXT#` UPNs the guest's home domain encoded before `#EXT#` (`fabrikam.com`) is used
instead. A filter on `contoso.onmicrosoft.com` therefore selects the tenant's own accounts, not every guest.

`compile_filters` is the form to use in loops (a resync checks 100,000 users); `matches` is a convenience;
`explain` says, section by section, why a user is in scope or not.
Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final, Protocol

import msgspec

from worker.core.model import FILTER_SECTIONS, Filters, FilterSection, MirrorUser

SECTIONS: Final[tuple[str, ...]] = FILTER_SECTIONS
ALL: Final = "all"
GUEST_MARK: Final = "#ext#"  # compared lower-cased

class Scoped(Protocol):
    """What the filters read of a user: a `MirrorUser`, or a `ScopedUser` read with only that."""

    @property
    def user_type(self) -> str | None: ...
    @property
    def department(self) -> str | None: ...
    @property
    def office_location(self) -> str | None: ...
    @property
    def mail(self) -> str | None: ...
    @property
    def user_principal_name(self) -> str | None: ...
    @property
    def group_ids(self) -> frozenset[str]: ...


Predicate = Callable[[Scoped], bool]


class FilterError(ValueError):
    """Bad filters JSON; `field` names the offending part, e.g. `filters.departments[1]`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# ---- Parsing and serialising -----------------------------------------------------------------------------

def parse_filters(obj: object) -> Filters:
    """Validate the API's filters object: exactly the five sections, each "all" or a non-empty list."""
    if not isinstance(obj, Mapping):
        raise FilterError("filters", "must be an object with the sections " + ", ".join(SECTIONS))
    unknown = sorted(str(key) for key in obj if key not in SECTIONS)
    if unknown:
        raise FilterError(f"filters.{unknown[0]}", "unknown section; expected one of " + ", ".join(SECTIONS))
    for name in SECTIONS:
        if name not in obj:
            raise FilterError(f"filters.{name}", 'is required: "all" or a non-empty list of values')
    sections = {name: _parse_section(f"filters.{name}", obj[name]) for name in SECTIONS}
    return Filters(**sections)


def _parse_section(field: str, value: object) -> FilterSection:
    if value == ALL:
        return ALL
    if not isinstance(value, list | tuple):
        raise FilterError(field, 'must be "all" or a non-empty list of strings')
    if not value:
        raise FilterError(field, 'must not be empty; use "all" to match everyone')
    values = tuple(_parse_value(f"{field}[{i}]", item) for i, item in enumerate(value))
    if field == "filters.domains":
        _check_domains(field, values)
    return _dedupe(values)


def _parse_value(field: str, item: object) -> str:
    if not isinstance(item, str):
        raise FilterError(field, "must be a string")
    stripped = item.strip()
    if not stripped:
        raise FilterError(field, "must not be empty")
    return stripped


def _check_domains(field: str, values: tuple[str, ...]) -> None:
    for i, value in enumerate(values):
        if "@" in value or any(c.isspace() for c in value):
            raise FilterError(f"{field}[{i}]", "must be a domain such as contoso.com (no @, no spaces)")


def _dedupe(values: Iterable[str]) -> tuple[str, ...]:
    """Drop case-insensitive repeats, keeping the first spelling (the one the operator sees)."""
    seen: dict[str, str] = {}
    for value in values:
        seen.setdefault(value.lower(), value)
    return tuple(seen.values())


def filters_to_json(f: Filters) -> dict[str, str | list[str]]:
    """The API/JSON form of `f` (the inverse of `parse_filters`)."""
    return {name: _section_to_json(getattr(f, name)) for name in SECTIONS}


def _section_to_json(section: FilterSection) -> str | list[str]:
    return ALL if section == ALL else list(section)


# ---- Matching ----------------------------------------------------------------------------------------------

def user_domains(user: MirrorUser) -> frozenset[str]:
    """The lower-cased domains a domain filter compares against (see the module docstring for guests)."""
    domains = {_mail_domain(user.mail), _upn_domain(user.user_principal_name)}
    domains.discard("")
    return frozenset(domains)


def _mail_domain(mail: str | None) -> str:
    if not mail:
        return ""
    _local, at, domain = mail.rpartition("@")
    return domain.strip().lower() if at else ""


def _upn_domain(upn: str | None) -> str:
    if not upn:
        return ""
    lowered = upn.strip().lower()
    local, mark, _host = lowered.partition(GUEST_MARK)
    if not mark:
        return _mail_domain(lowered)
    # Guest: "jane_fabrikam.com#ext#@host" -> "fabrikam.com". Domain names never contain "_".
    return local.rpartition("_")[2] if "_" in local else ""


def matches(user: MirrorUser, f: Filters) -> bool:
    """Whether `user` is in scope of `f`. Compiles `f` on every call: in loops use `compile_filters`."""
    return compile_filters(f)(user)


def compile_filters(f: Filters) -> Predicate:
    """A fast predicate equivalent to `matches(user, f)`: only restricted sections are checked."""
    checks = tuple(_compile_section(name, getattr(f, name)) for name in SECTIONS if getattr(f, name) != ALL)
    if not checks:
        return _everyone
    if len(checks) == 1:
        return checks[0]
    return lambda user: all(check(user) for check in checks)


def _everyone(user: Scoped) -> bool:
    return True


def _compile_section(name: str, section: FilterSection) -> Predicate:
    wanted = frozenset(value.strip().lower() for value in section)
    return _SECTION_COMPILERS[name](wanted)


def _attribute_check(attribute: str) -> Callable[[frozenset[str]], Predicate]:
    def compile_(wanted: frozenset[str]) -> Predicate:
        def check(user: Scoped) -> bool:
            value = getattr(user, attribute)
            return value is not None and value.strip().lower() in wanted

        return check

    return compile_


def _domains_check(wanted: frozenset[str]) -> Predicate:
    def check(user: Scoped) -> bool:
        return _mail_domain(user.mail) in wanted or _upn_domain(user.user_principal_name) in wanted

    return check


def _groups_check(wanted: frozenset[str]) -> Predicate:
    def check(user: Scoped) -> bool:
        # Graph's ids are lower-case already: try them as they are before lower-casing each one.
        groups = user.group_ids
        return not (wanted.isdisjoint(groups) and wanted.isdisjoint(map(str.lower, groups)))

    return check


_SECTION_COMPILERS: Final[dict[str, Callable[[frozenset[str]], Predicate]]] = {
    "user_types": _attribute_check("user_type"),
    "domains": _domains_check,
    "office_locations": _attribute_check("office_location"),
    "departments": _attribute_check("department"),
    "groups": _groups_check,
}


# ---- Explaining ---------------------------------------------------------------------------------------------

class SectionMatch(msgspec.Struct, frozen=True, kw_only=True):
    """One filter section as it applies to one user: the user's values, the filter's, and the verdict."""

    section: str
    user_values: tuple[str, ...]   # what the section compares: the user's value(s), domains, group ids
    filter: FilterSection          # "all" or the filter's values
    matched: bool


def explain(user: MirrorUser, f: Filters) -> tuple[SectionMatch, ...]:
    """Each section of `f` checked against `user`, with the same checks `compile_filters` runs; the user is in
    scope exactly when every section matched."""
    return tuple(
        SectionMatch(
            section=name, user_values=_user_values(name, user), filter=getattr(f, name),
            matched=getattr(f, name) == ALL or _compile_section(name, getattr(f, name))(user),
        )
        for name in SECTIONS
    )


def _user_values(section: str, user: MirrorUser) -> tuple[str, ...]:
    if section == "domains":
        return tuple(sorted(user_domains(user)))
    if section == "groups":
        return tuple(sorted(user.group_ids))
    value = getattr(user, _ATTRIBUTES[section])
    return (value,) if value is not None else ()


_ATTRIBUTES: Final[dict[str, str]] = {
    "user_types": "user_type", "office_locations": "office_location", "departments": "department",
}
