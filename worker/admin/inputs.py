"""Validation of request bodies, query strings and path ids: every failure is a `BadRequest` naming the field.

Only shapes are checked here; whether a referenced row exists is the store's business. Whatever a client
sends, the answer is a 4xx: bytes that are not UTF-8 JSON, numbers too long to convert, nesting deeper than
any of our bodies, and strings PostgreSQL cannot store (NUL, unpaired surrogates) are refused at this door.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Mapping
from typing import Any

from aiohttp import web

from worker.admin.errors import ApiError, BadRequest
from worker.core.model import END_USER_FIELDS
from worker.logs import is_secret_key, redact_value

MAX_TEXT = 256
MAX_DEPTH = 16  # our deepest body (filters) has three levels


async def json_body(request: web.Request, *, allowed: Collection[str]) -> dict[str, Any]:
    """The request's JSON object; unknown keys are rejected so typos never pass silently."""
    try:
        # UTF-8 whatever the Content-Type's charset says (RFC 8259); ValueError covers bad UTF-8, bad JSON and
        # integers too long to convert; RecursionError, nesting deeper than the parser's stack.
        body = json.loads((await request.read()).decode("utf-8"))
    except (ValueError, RecursionError):
        raise BadRequest("body", "must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("body", "must be a JSON object")
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        raise BadRequest(unknown[0], "unknown field; expected one of " + ", ".join(sorted(allowed)))
    _check_storable(body)
    for key, value in body.items():
        if is_secret_key(key) and isinstance(value, str):
            redact_value(value)  # a client secret never reaches a log line, whatever fails with it later
    return body


def _check_storable(body: dict[str, Any]) -> None:
    """Refuse strings PostgreSQL cannot store and absurd nesting, naming the field (iterative: no recursion)."""
    stack: list[tuple[str, Any, int]] = [(str(k), v, 1) for k, v in body.items()]
    while stack:
        path, value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadRequest(path, "is nested too deeply")
        if isinstance(value, dict):
            stack += [(f"{path}.{k}", v, depth + 1) for k, v in value.items()]
            stack += [(f"{path}.{k}", k, depth + 1) for k in value]  # keys are stored too (filters)
        elif isinstance(value, list):
            stack += [(f"{path}[{i}]", v, depth + 1) for i, v in enumerate(value)]
        elif isinstance(value, str):
            _check_text(path, value)


def _check_text(name: str, value: str) -> None:
    if "\x00" in value:
        raise BadRequest(name, "must not contain NUL characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise BadRequest(name, "must be valid Unicode (no unpaired surrogates)") from None


def text(body: Mapping[str, Any], name: str, *, max_len: int = MAX_TEXT) -> str:
    """A required, non-blank string (stripped)."""
    value = optional_text(body, name, max_len=max_len)
    if value is None:
        raise BadRequest(name, "is required")
    return value


def optional_text(body: Mapping[str, Any], name: str, *, max_len: int = MAX_TEXT) -> str | None:
    """An optional string: missing, null or blank is None."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(name, "must be a string")
    value = value.strip()
    if len(value) > max_len:
        raise BadRequest(name, f"must be at most {max_len} characters")
    return value or None


def email(body: Mapping[str, Any], name: str = "email") -> str | None:
    value = optional_text(body, name, max_len=320)
    if value is None:
        return None
    local, at, domain = value.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in value):
        raise BadRequest(name, "must be an email address such as jane@contoso.com")
    return value


def uuid_value(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(name, "must be a UUID string")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise BadRequest(name, "must be a UUID") from None


def tenant_guid(body: Mapping[str, Any], name: str) -> str:
    """A Microsoft tenant (directory) id: a GUID, returned in its canonical lower-case form, which is how Graph
    writes it in notifications and the clientState HMAC reads it. A domain name is refused: it names a tenant
    only until the domain moves, and it is not what Graph's notifications carry."""
    raw = text(body, name, max_len=128)
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise BadRequest(name, "must be the tenant's directory id, a GUID such as"
                               " 72f988bf-86f1-41af-91ab-2d7cd011db47 (a domain name is not accepted)") from None


def tenant_ref(value: str) -> str:
    """A tenant id as an operator names one (path or body): a GUID in any case means its lower-case form;
    anything else is taken as is (it matches nothing but a legacy row registered before ids were checked)."""
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        return value


def flag(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(name, "must be true or false")
    return value


def path_id(request: web.Request, name: str = "id") -> str:
    """A UUID from the path; anything else names nothing, so it is a 404."""
    raw = request.match_info[name]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise ApiError(404, f"no such resource: {raw!r}") from None


def query_uuid(request: web.Request, name: str) -> str | None:
    raw = request.query.get(name)
    return None if raw in (None, "") else uuid_value(raw, name)


def query_text(request: web.Request, name: str, *, choices: Collection[str] | None = None) -> str | None:
    raw = request.query.get(name)
    if raw is None or raw.strip() == "":
        return None
    if choices is not None and raw not in choices:
        raise BadRequest(name, "must be one of " + ", ".join(choices))
    if len(raw) > MAX_TEXT:
        raise BadRequest(name, f"must be at most {MAX_TEXT} characters")
    _check_text(name, raw)
    return raw.strip()


def query_int(request: web.Request, name: str, *, default: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(name, "must be an integer") from None
    if not 0 <= value <= maximum:
        raise BadRequest(name, f"must be between 0 and {maximum}")
    return value


def end_user_edit(body: dict[str, Any]) -> dict[str, str | None]:
    """The fields of an End User's PATCH body, validated: known fields only, strings up to 256 characters (blank
    or null clears), a well-formed email."""
    if not body:
        raise BadRequest("body", "give at least one of " + ", ".join(END_USER_FIELDS))
    return {name: email(body) if name == "email" else optional_text(body, name) for name in body}
