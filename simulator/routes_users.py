"""`/v1.0/users…` and `/v1.0/directory/deletedItems…`: listing, reading, writing and delta of users."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from simulator.clock import iso
from simulator.context import graph_base, services, tenant_of
from simulator.delta import Cursor, project
from simulator.errors import bad_request, json_response, not_found, raw_json_response
from simulator.gates import require_premium
from simulator.model import USER_DEFAULT_PROPS, USER_PROPS, Tenant, UserRecord, new_id
from simulator.odata import compile_filter, page_body, parse_id_filter, parse_select, parse_top, query, read_json_object
from simulator.routes_delta import delta_response
from simulator.tokens import seal, unseal

WRITABLE = USER_PROPS - {"id", "createdDateTime", "deletedDateTime", "signInActivity", "assignedLicenses",
                         "userType", "creationType", "externalUserState", "assignedPlans", "provisionedPlans",
                         "onPremisesSyncEnabled", "onPremisesImmutableId"}  # fmt: skip
WRITABLE_EXTRA = {"passwordProfile", "passwordPolicies", "userType"}
USER_ODATA = "#microsoft.graph.user"


class ListCursor(msgspec.Struct, array_like=True):
    t: str
    s: tuple[str, ...]
    q: str | None
    top: int
    o: int


def _select(request: web.Request) -> tuple[str, ...]:
    return parse_select(query(request.query, "select"), known=USER_PROPS, default=USER_DEFAULT_PROPS, entity="user")


def _user_view(tenant: Tenant, rec: UserRecord, select: tuple[str, ...]) -> dict[str, Any]:
    view = project(rec.data, [p for p in select if p != "signInActivity"])
    if "signInActivity" in select and rec.sign_in is not None:
        view["signInActivity"] = rec.sign_in  # absent for users who never signed in
    return view


async def list_users(request: web.Request) -> web.Response:
    tenant, key = tenant_of(request), services(request).state.key
    token = query(request.query, "skiptoken")
    if token:
        cursor = unseal(token, key, ListCursor)
        if cursor is None or cursor.t != tenant.tenant_id:
            raise bad_request("The skip token is invalid or was issued for another tenant.", "Request_BadRequest")
    else:
        select = _select(request)
        premium = "signInActivity" in select
        if premium:
            require_premium(tenant)
        limits = services(request).state.tunables
        maximum = limits.sign_in_page_max if premium else limits.users_page_max
        top = parse_top(query(request.query, "top"), default=limits.users_page_default, maximum=maximum)
        cursor = ListCursor(tenant.tenant_id, select, query(request.query, "filter"), top, 0)
    return raw_json_response(_users_page(request, tenant, cursor, key))


def _users_page(request: web.Request, tenant: Tenant, cursor: ListCursor, key: bytes) -> bytes:
    predicate = compile_filter(cursor.q)
    order, users = tenant.user_order, tenant.users
    fragments: list[bytes] = []
    position = cursor.o
    encode = msgspec.json.encode
    while position < len(order) and len(fragments) < cursor.top:
        rec = users.get(order[position])
        position += 1
        if rec is None or rec.deleted_at is not None or (predicate is not None and not predicate(rec.data)):
            continue
        fragments.append(encode(_user_view(tenant, rec, cursor.s)))
    base = graph_base(request)
    links = {}
    if position < len(order):
        nxt = seal(msgspec.structs.replace(cursor, o=position), key)
        links["@odata.nextLink"] = f"{base}/users?$skiptoken={nxt}"
    return page_body(f"{base}/$metadata#users({','.join(cursor.s)})", fragments, links)


def _find(request: web.Request) -> UserRecord:
    tenant = tenant_of(request)
    user_id = request.match_info["id"]
    rec = tenant.live_user(user_id)
    if rec is None:
        raise not_found(user_id)
    return rec


async def get_user(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    select = _select(request)
    if "signInActivity" in select:
        require_premium(tenant)
    rec = _find(request)
    body = {"@odata.context": f"{graph_base(request)}/$metadata#users/$entity", **_user_view(tenant, rec, select)}
    return json_response(body)


def _check_writable(body: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for name, value in body.items():
        if name.startswith("@odata"):
            continue
        if name not in WRITABLE and name not in WRITABLE_EXTRA:
            raise bad_request(f"Property '{name}' is read-only or does not exist on type 'microsoft.graph.user'.")
        if name not in ("passwordProfile", "passwordPolicies"):
            changes[name] = value
    return changes


def _check_upn(tenant: Tenant, upn: Any, *, current: str | None = None) -> None:
    if not isinstance(upn, str) or "@" not in upn:
        raise bad_request("Invalid value specified for property 'userPrincipalName' of resource 'User'.",
                          "Request_BadRequest")  # fmt: skip
    domain = upn.rsplit("@", 1)[1].lower()
    if domain not in {d["name"].lower() for d in tenant.domains}:
        raise bad_request("The domain portion of the userPrincipalName property is invalid. You must use one of "
                          "the verified domain names in your organization.", "Request_BadRequest")  # fmt: skip
    owner = tenant.upn_index.get(upn.lower())
    if owner is not None and owner != current:
        raise bad_request("Another object with the same value for property userPrincipalName already exists.",
                          "Request_BadRequest")  # fmt: skip


async def create_user(request: web.Request) -> web.Response:
    tenant, now = tenant_of(request), services(request).state.clock
    body = await read_json_object(request)
    for required in ("accountEnabled", "displayName", "mailNickname", "userPrincipalName", "passwordProfile"):
        if required not in body:
            raise bad_request(f"Invalid value specified for property '{required}' of resource 'User'.",
                              "Request_BadRequest")  # fmt: skip
    changes = _check_writable(body)
    _check_upn(tenant, changes["userPrincipalName"])
    data: dict[str, Any] = dict.fromkeys(USER_PROPS - {"signInActivity"})
    data.update(businessPhones=[], assignedLicenses=[], otherMails=[], proxyAddresses=[], imAddresses=[],
                assignedPlans=[], provisionedPlans=[], userType="Member", createdDateTime=now.iso())  # fmt: skip
    data.update(changes)
    data["id"] = new_id()
    rec = tenant.add_user(data)
    view = {"@odata.context": f"{graph_base(request)}/$metadata#users/$entity",
            **_user_view(tenant, rec, USER_DEFAULT_PROPS)}  # fmt: skip
    return json_response(view, status=201, headers={"Location": f"{graph_base(request)}/users/{rec.id}"})


async def update_user(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    rec = _find(request)
    changes = _check_writable(await read_json_object(request))
    if "userPrincipalName" in changes:
        _check_upn(tenant, changes["userPrincipalName"], current=rec.id)
    tenant.update_user(rec, changes)
    return web.Response(status=204)


async def delete_user(request: web.Request) -> web.Response:
    rec = _find(request)
    tenant_of(request).soft_delete_user(rec, services(request).state.clock.now())
    return web.Response(status=204)


def _deleted(request: web.Request) -> tuple[Tenant, UserRecord | None, Any]:
    tenant = tenant_of(request)
    obj_id = request.match_info["id"]
    rec = tenant.users.get(obj_id)
    group = tenant.groups.get(obj_id)
    if rec is not None and rec.deleted_at is not None:
        return tenant, rec, None
    if group is not None and group.deleted_at is not None:
        return tenant, None, group
    raise not_found(obj_id)


def _deleted_view(request: web.Request, data: dict[str, Any], odata_type: str, deleted_at: float) -> dict[str, Any]:
    return {"@odata.context": f"{graph_base(request)}/$metadata#directoryObjects/$entity",
            "@odata.type": odata_type, **data, "deletedDateTime": iso(deleted_at)}  # fmt: skip


async def get_deleted_item(request: web.Request) -> web.Response:
    _, rec, group = _deleted(request)
    if rec is not None:
        return json_response(_deleted_view(request, rec.data, USER_ODATA, rec.deleted_at or 0.0))
    return json_response(_deleted_view(request, group.data, "#microsoft.graph.group", group.deleted_at))


async def list_deleted_users(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    value = [{**project(r.data, USER_DEFAULT_PROPS), "deletedDateTime": services(request).state.clock.iso(r.deleted_at)}
             for r in tenant.users.values() if r.deleted_at is not None]  # fmt: skip
    context = f"{graph_base(request)}/$metadata#directory/deletedItems/microsoft.graph.user"
    return json_response({"@odata.context": context, "value": value})


async def restore_deleted_item(request: web.Request) -> web.Response:
    tenant, rec, group = _deleted(request)
    if rec is not None:
        if rec.data["userPrincipalName"].lower() in tenant.upn_index:
            raise bad_request("Another object with the same value for property userPrincipalName already exists.",
                              "Request_BadRequest")  # fmt: skip
        tenant.restore_user(rec)
        body = {"@odata.context": f"{graph_base(request)}/$metadata#directoryObjects/$entity",
                "@odata.type": USER_ODATA, **project(rec.data, USER_DEFAULT_PROPS)}  # fmt: skip
        return json_response(body)
    tenant.restore_group(group)
    return json_response({"@odata.type": "#microsoft.graph.group", **group.data})


async def purge_deleted_item(request: web.Request) -> web.Response:
    tenant, rec, group = _deleted(request)
    if rec is not None:
        tenant.purge_user(rec)
    else:
        tenant.purge_group(group)
    return web.Response(status=204)


async def users_delta(request: web.Request) -> web.Response:
    select_raw = query(request.query, "select")
    if select_raw and "signinactivity" in select_raw.lower():
        raise bad_request("Invalid request for delta query: for this entity set, $expand/$select is not supported "
                          "for the following properties: signInActivity")  # fmt: skip
    return await delta_response(request, "users", _new_users_cursor)


def _new_users_cursor(request: web.Request, tenant: Tenant, issued: float) -> Cursor:
    select = _select(request)
    ids = parse_id_filter(query(request.query, "filter"))
    return Cursor(tenant.tenant_id, "users", select, ids, full=True, b=tenant.user_log.seq, i=issued)


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/v1.0/users/delta", users_delta)
    router.add_get("/v1.0/users/delta()", users_delta)
    router.add_get("/v1.0/users", list_users)
    router.add_post("/v1.0/users", create_user)
    router.add_get("/v1.0/users/{id}", get_user)
    router.add_patch("/v1.0/users/{id}", update_user)
    router.add_delete("/v1.0/users/{id}", delete_user)
    router.add_get("/v1.0/directory/deletedItems/microsoft.graph.user", list_deleted_users)
    router.add_get("/v1.0/directory/deletedItems/{id}", get_deleted_item)
    router.add_delete("/v1.0/directory/deletedItems/{id}", purge_deleted_item)
    router.add_post("/v1.0/directory/deletedItems/{id}/restore", restore_deleted_item)
