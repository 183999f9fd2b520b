"""OData query options as Graph reads them (`$select`, `$filter`, `$top`) and page bodies as bytes."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from aiohttp import web

from simulator.errors import GraphError, bad_request

_ID_EQ = re.compile(r"^\s*id\s+eq\s+'([^']*)'\s*$", re.IGNORECASE)
_ID_IN = re.compile(r"^\s*id\s+in\s+\((.*)\)\s*$", re.IGNORECASE)
_COMPARISON = re.compile(r"^\s*(\w+)\s+eq\s+('(?:[^']|'')*'|true|false|null)\s*$", re.IGNORECASE)
_STARTSWITH = re.compile(r"^\s*startswith\(\s*(\w+)\s*,\s*'((?:[^']|'')*)'\s*\)\s*$", re.IGNORECASE)


def query(params: Mapping[str, str], name: str) -> str | None:
    """A query option with or without its `$` (Graph accepts both)."""
    value = params.get(f"${name}")
    return value if value is not None else params.get(name)


def parse_select(
    raw: str | None, *, known: frozenset[str], default: tuple[str, ...], entity: str
) -> tuple[str, ...]:
    """The selected properties, `id` first; Graph's 400 for an unknown property."""
    if not raw:
        return default
    names: list[str] = ["id"]
    for part in raw.split(","):
        name = part.strip()
        if not name:
            continue
        canonical = _canonical(name, known)
        if canonical is None:
            raise bad_request(f"Could not find a property named '{name}' on type 'microsoft.graph.{entity}'.")
        if canonical not in names:
            names.append(canonical)
    return tuple(names)


def _canonical(name: str, known: frozenset[str]) -> str | None:
    if name in known:
        return name
    lowered = name.lower()
    return next((k for k in known if k.lower() == lowered), None)


def parse_id_filter(raw: str | None, *, limit: int = 50) -> tuple[str, ...] | None:
    """`$filter` of a delta query: only `id eq '…'` joined by `or`, or `id in (…)`, at most 50 ids."""
    if not raw:
        return None
    ids: list[str] = []
    match_in = _ID_IN.match(raw)
    if match_in:
        ids = [part.strip().strip("'") for part in match_in.group(1).split(",") if part.strip()]
    else:
        for clause in re.split(r"\s+or\s+", raw, flags=re.IGNORECASE):
            match = _ID_EQ.match(clause)
            if match is None:
                raise bad_request("Unsupported filter for delta query: only 'id eq' clauses joined by 'or'.")
            ids.append(match.group(1))
    if len(ids) > limit:
        raise bad_request(f"Too many ids in filter: at most {limit}.")
    return tuple(dict.fromkeys(ids))


def compile_filter(raw: str | None) -> Any:
    """A predicate over an object's data for a simple `$filter` (eq, startswith, joined by and)."""
    if not raw:
        return None
    tests = [_clause(clause) for clause in re.split(r"\s+and\s+", raw, flags=re.IGNORECASE)]
    return lambda data: all(test(data) for test in tests)


def _clause(clause: str) -> Any:
    match = _COMPARISON.match(clause)
    if match:
        prop, literal = match.group(1), match.group(2)
        value = _literal(literal)
        if isinstance(value, str):
            lowered = value.lower()
            return lambda data: isinstance(data.get(prop), str) and data[prop].lower() == lowered
        return lambda data: data.get(prop) == value
    match = _STARTSWITH.match(clause)
    if match:
        prop, prefix = match.group(1), match.group(2).replace("''", "'").lower()
        return lambda data: str(data.get(prop) or "").lower().startswith(prefix)
    raise GraphError(400, "Request_UnsupportedQuery", f"Unsupported or invalid query filter clause: {clause}")


def _literal(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    return text[1:-1].replace("''", "'")


def parse_top(raw: str | None, *, default: int, maximum: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"Invalid page size: '{raw}'.") from None
    if value < 1 or value > maximum:
        raise GraphError(400, "Request_UnsupportedQuery", f"Invalid page size specified: '{value}'. Must be "
                         f"between 1 and {maximum} inclusive.")  # fmt: skip
    return value


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or Graph's 400."""
    try:
        body = msgspec.json.decode(await request.read())
    except msgspec.DecodeError:
        raise bad_request("Unable to read JSON request payload. Please ensure Content-Type header is set and "
                          "payload is of valid JSON format.") from None  # fmt: skip
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def page_body(context: str, fragments: Iterable[bytes], links: Mapping[str, str] | None = None) -> bytes:
    """`{"@odata.context", "value": [...], "@odata.nextLink"|"@odata.deltaLink"}` from encoded items."""
    head = b'{"@odata.context":' + msgspec.json.encode(context) + b',"value":['
    tail = b"]"
    for name, link in (links or {}).items():
        tail += b"," + msgspec.json.encode(name) + b":" + msgspec.json.encode(link)
    return head + b",".join(fragments) + tail + b"}"
