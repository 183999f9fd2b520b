"""The shared HTTP side of `/users/delta` and `/groups/delta`: tokens, expiry, faults and page bodies."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from aiohttp import web

from simulator.context import graph_base, services, tenant_of
from simulator.delta import Cursor
from simulator.errors import GraphError, bad_request, raw_json_response
from simulator.model import Tenant
from simulator.odata import page_body, query
from simulator.tokens import seal, unseal

NewCursor = Callable[[web.Request, Tenant, float], Cursor]


def sync_state_not_found() -> GraphError:
    return GraphError(400, "syncStateNotFound", "The sync state generation is not found; the delta token has "
                      "expired. Restart the synchronization with a full sync.")  # fmt: skip


def _from_token(request: web.Request, tenant: Tenant, token: str, now: float) -> Cursor:
    state = services(request).state
    cursor = unseal(token, state.key, Cursor)
    if cursor is None:
        raise bad_request("Invalid delta token or skip token.", "badRequest")
    if cursor.t != tenant.tenant_id:
        raise GraphError(403, "Authorization_RequestDenied", "The delta token was issued for another tenant.")
    if now - cursor.i > state.tunables.delta_token_lifetime_s:
        raise sync_state_not_found()
    return cursor


def _token_faults(request: web.Request, tenant: Tenant, kind: str, cursor: Cursor) -> None:
    faults = tenant.faults
    if faults.delta_expired > 0:
        faults.delta_expired -= 1
        raise sync_state_not_found()
    if faults.delta_gone > 0:
        faults.delta_gone -= 1
        select = ",".join(p for p in cursor.s if p != "id") or "id"
        location = f"{graph_base(request)}/{kind}/delta()?$select={quote(select, safe=',')}"
        raise GraphError(410, "resyncRequired", "The delta token is no longer valid: resync from Location.",
                         headers={"Location": location})  # fmt: skip


def _reject_unsupported_options(request: web.Request) -> None:
    for option in ("expand", "orderby"):
        if query(request.query, option) is not None:
            raise GraphError(400, "Request_UnsupportedQuery", f"Unsupported query option '${option}' for delta query.")


async def delta_response(request: web.Request, kind: str, new_cursor: NewCursor) -> web.Response:
    _reject_unsupported_options(request)
    svc, tenant = services(request), tenant_of(request)
    now = svc.state.clock.now()
    skip, delta = query(request.query, "skiptoken"), query(request.query, "deltatoken")
    if delta == "latest":
        cursor = new_cursor(request, tenant, now)
        log = tenant.user_log if kind == "users" else tenant.group_log
        return _respond(request, kind, [], Cursor(cursor.t, kind, cursor.s, cursor.f, full=False, b=log.seq, i=now),
                        last=True, minimal=False)  # fmt: skip
    token = skip or delta
    if token:
        cursor = _from_token(request, tenant, token, now)
        _token_faults(request, tenant, kind, cursor)
    else:
        cursor = new_cursor(request, tenant, now)
    minimal = "return=minimal" in request.headers.get("Prefer", "").replace(" ", "").lower()
    page = svc.delta.page(tenant, cursor, minimal=minimal and not cursor.full, now=now)
    return _respond(request, kind, page.fragments, page.next, last=page.last, minimal=minimal)


def _respond(request: web.Request, kind: str, fragments: list[bytes], cursor: Cursor, *, last: bool,
             minimal: bool) -> web.Response:  # fmt: skip
    base = graph_base(request)
    token = seal(cursor, services(request).state.key)
    link = (
        {"@odata.deltaLink": f"{base}/{kind}/delta()?$deltatoken={token}"}
        if last
        else {"@odata.nextLink": f"{base}/{kind}/delta()?$skiptoken={token}"}
    )
    context = f"{base}/$metadata#{kind}({','.join(cursor.s)})"
    headers = {"Preference-Applied": "return=minimal"} if minimal else None
    return raw_json_response(page_body(context, fragments, link), headers=headers)
