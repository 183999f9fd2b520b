"""Form input of the console: every check names its field, so a page can show the error beside it.

Pure: no I/O. Each parser takes the posted form (a multi-valued mapping) and returns clean values or raises
`FormErrors` with one message per field; nothing is written until a form parses.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from worker.core.filters import SECTIONS, FilterError, parse_filters
from worker.core.model import Filters

MAX_TEXT = 256
SECTION_TITLES = {
    "user_types": "User Type", "domains": "Domain", "office_locations": "Office Location",
    "departments": "Department", "groups": "Group",
}


class MultiForm(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...
    def getall(self, key: str, default: Any = ...) -> list[Any]: ...
    def __contains__(self, key: object) -> bool: ...


class FormErrors(Exception):
    """Bad form input: {field: message}. The page re-shows the form with these and the values given."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = dict(errors)


def text(form: MultiForm, name: str, *, required: bool = True, max_len: int = MAX_TEXT) -> str | None:
    value = form.get(name)
    value = value.strip() if isinstance(value, str) else ""
    if not value:
        if required:
            raise FormErrors({name: "is required"})
        return None
    if len(value) > max_len:
        raise FormErrors({name: f"must be at most {max_len} characters"})
    return value


def collect(form: MultiForm, *parsers: tuple[str, Any]) -> dict[str, Any]:
    """Run several field parsers, gathering every field's error instead of stopping at the first."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, parse in parsers:
        try:
            values[name] = parse(form)
        except FormErrors as exc:
            errors.update(exc.errors)
    if errors:
        raise FormErrors(errors)
    return values


def guid(form: MultiForm, name: str) -> str:
    raw = text(form, name, max_len=64)
    try:
        return str(uuid.UUID(str(raw)))
    except ValueError:
        raise FormErrors({name: "must be a GUID such as 72f988bf-86f1-41af-91ab-2d7cd011db47"}) from None


def register_tenant(form: MultiForm) -> dict[str, Any]:
    return collect(
        form,
        ("tenant_id", lambda f: guid(f, "tenant_id")),
        ("display_name", lambda f: text(f, "display_name")),
        ("client_id", lambda f: text(f, "client_id")),
        ("client_secret", lambda f: text(f, "client_secret", max_len=1024)),
    )


def selection(form: MultiForm) -> dict[str, Any]:
    """The set-up dialog's ticks as the page shows them: per section "all" or the list of values ticked."""
    out: dict[str, Any] = {}
    for name in SECTIONS:
        if form.get(f"{name}_all"):
            out[name] = "all"
        else:
            out[name] = [v.strip() for v in form.getall(name, []) if isinstance(v, str) and v.strip()]
    return out


def filters(form: MultiForm) -> Filters:
    """The dialog's ticks as filters; a section with nothing ticked is an error on that section."""
    return filters_of(selection(form))


def filters_of(chosen: Mapping[str, Any]) -> Filters:
    """A selection (per section "all" or a list of values) as filters, or FormErrors per section."""
    empty = {name: f"tick All or at least one {SECTION_TITLES[name].lower()}"
             for name, value in chosen.items() if value == []}
    if empty:
        raise FormErrors(empty)
    try:
        return parse_filters(dict(chosen))
    except FilterError as exc:
        section = exc.field.removeprefix("filters.").split("[")[0]
        raise FormErrors({section: exc.message}) from None
