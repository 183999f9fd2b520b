"""Paged listings (groups, memberships, reports, devices) whose skip token holds a position in the source.

A `rows(cursor, start)` function yields `(position, row)` pairs from `start` on, already filtered; the next
page starts at the position of the first row not sent. A page therefore costs O(page), however deep it is.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from simulator.context import graph_base, services, tenant_of
from simulator.errors import bad_request, raw_json_response
from simulator.odata import page_body, parse_top, query
from simulator.tokens import seal, unseal

T = TypeVar("T")


class OffsetCursor(msgspec.Struct, array_like=True):
    t: str  # tenant
    p: str  # path the token belongs to
    s: str | None  # raw $select
    q: str | None  # raw $filter
    top: int
    o: int  # position in the source of the first row of this page


Render = Callable[[Any], dict[str, Any]]
Rows = Callable[[OffsetCursor, int], Iterator[tuple[int, Any]]]


def from_position(items: Sequence[T], start: int) -> Iterator[tuple[int, T]]:
    """`(position, item)` for `items[start:]`, without copying the sequence."""
    return ((i, items[i]) for i in range(start, len(items)))


def paged(
    request: web.Request, *, rows: Rows, render: Callable[[OffsetCursor], Render], context: str,
    default_top: int = 100, max_top: int = 999,
) -> web.Response:  # fmt: skip
    """One page of `rows(cursor, cursor.o)`, each row turned into JSON by `render(cursor)`."""
    tenant, key = tenant_of(request), services(request).state.key
    token = query(request.query, "skiptoken")
    if token:
        cursor = unseal(token, key, OffsetCursor)
        if cursor is None or cursor.t != tenant.tenant_id or cursor.p != request.path:
            raise bad_request("The skip token is invalid.", "Request_BadRequest")
    else:
        top = parse_top(query(request.query, "top"), default=default_top, maximum=max_top)
        cursor = OffsetCursor(tenant.tenant_id, request.path, query(request.query, "select"),
                              query(request.query, "filter"), top, 0)  # fmt: skip
    window = list(itertools.islice(rows(cursor, cursor.o), cursor.top + 1))
    chunk = [row for _, row in window[: cursor.top]]
    links = {}
    if len(window) > cursor.top:
        nxt = seal(msgspec.structs.replace(cursor, o=window[cursor.top][0]), key)
        links["@odata.nextLink"] = f"https://{request.host}{request.path}?$skiptoken={nxt}"
    encode, draw = msgspec.json.encode, render(cursor)
    body = page_body(f"{graph_base(request)}/$metadata#{context}", [encode(draw(row)) for row in chunk], links)
    return raw_json_response(body)
