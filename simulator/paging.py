"""Offset-paged listings of small computed collections (memberships, reports, devices, groups)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from aiohttp import web

from simulator.context import graph_base, services, tenant_of
from simulator.errors import bad_request, raw_json_response
from simulator.odata import page_body, parse_top, query
from simulator.tokens import seal, unseal


class OffsetCursor(msgspec.Struct, array_like=True):
    t: str  # tenant
    p: str  # path the token belongs to
    s: str | None  # raw $select
    q: str | None  # raw $filter
    top: int
    o: int


Render = Callable[[Any], dict[str, Any]]


def paged(
    request: web.Request, *, rows: Callable[[OffsetCursor], Iterable[Any]], render: Callable[[OffsetCursor], Render],
    context: str, default_top: int = 100, max_top: int = 999,
) -> web.Response:  # fmt: skip
    """One page of `rows(cursor)` (a lazy, filtered sequence), each row turned into JSON by `render(cursor)`.

    Only the rows of the page are rendered, so a page costs O(offset) cheap steps plus O(page) rendering.
    """
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
    window = list(itertools.islice(rows(cursor), cursor.o, cursor.o + cursor.top + 1))
    chunk = window[: cursor.top]
    links = {}
    if len(window) > cursor.top:
        nxt = seal(msgspec.structs.replace(cursor, o=cursor.o + cursor.top), key)
        links["@odata.nextLink"] = f"https://{request.host}{request.path}?$skiptoken={nxt}"
    encode, draw = msgspec.json.encode, render(cursor)
    body = page_body(f"{graph_base(request)}/$metadata#{context}", [encode(draw(row)) for row in chunk], links)
    return raw_json_response(body)
