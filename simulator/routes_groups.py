"""`/v1.0/groups…` and memberships: groups CRUD, members `$ref`, (transitive) memberOf and groups delta."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web

from simulator.context import graph_base, services, tenant_of
from simulator.delta import Cursor, project
from simulator.errors import bad_request, json_response, not_found
from simulator.model import (
    GROUP_DEFAULT_PROPS,
    GROUP_PROPS,
    GROUP_TYPE,
    USER_DEFAULT_PROPS,
    USER_PROPS,
    USER_TYPE,
    GroupRecord,
    Tenant,
    new_id,
)
from simulator.odata import compile_filter, parse_id_filter, parse_select, query, read_json_object
from simulator.paging import OffsetCursor, from_position, paged
from simulator.routes_delta import delta_response

GROUP_WRITABLE = {"displayName", "description", "mailEnabled", "mailNickname", "securityEnabled", "groupTypes",
                  "visibility", "classification", "membershipRule"}  # fmt: skip


def _group_select(raw: str | None) -> tuple[str, ...]:
    select = parse_select(raw, known=GROUP_PROPS, default=GROUP_DEFAULT_PROPS, entity="group")
    return tuple(p for p in select if p != "members")


def _find_group(request: web.Request) -> GroupRecord:
    group = tenant_of(request).live_group(request.match_info["id"])
    if group is None:
        raise not_found(request.match_info["id"])
    return group


def directory_object(tenant: Tenant, obj_id: str, odata_type: str, select_raw: str | None) -> dict[str, Any]:
    """A member or parent as Graph lists it: `@odata.type` plus the selected (or default) properties."""
    if odata_type == GROUP_TYPE:
        group = tenant.groups[obj_id]
        return {"@odata.type": GROUP_TYPE, **project(group.data, _group_select(select_raw))}
    user = tenant.users[obj_id]
    select = parse_select(select_raw, known=USER_PROPS, default=USER_DEFAULT_PROPS, entity="user")
    return {"@odata.type": USER_TYPE, **project(user.data, [p for p in select if p != "signInActivity"])}


async def list_groups(request: web.Request) -> web.Response:
    tenant = tenant_of(request)

    def rows(cursor: OffsetCursor, start: int) -> Iterator[tuple[int, GroupRecord]]:
        predicate = compile_filter(cursor.q)
        for position, group_id in from_position(tenant.group_order, start):
            group = tenant.live_group(group_id)
            if group is not None and (predicate is None or predicate(group.data)):
                yield position, group

    def render(cursor: OffsetCursor) -> Callable[[GroupRecord], dict[str, Any]]:
        select = _group_select(cursor.s)
        return lambda group: project(group.data, select)

    return paged(request, rows=rows, render=render, context="groups")


async def get_group(request: web.Request) -> web.Response:
    group = _find_group(request)
    view = project(group.data, _group_select(query(request.query, "select")))
    return json_response({"@odata.context": f"{graph_base(request)}/$metadata#groups/$entity", **view})


async def create_group(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    body = await read_json_object(request)
    for required in ("displayName", "mailEnabled", "mailNickname", "securityEnabled"):
        if required not in body:
            raise bad_request(f"Invalid value specified for property '{required}' of resource 'Group'.",
                              "Request_BadRequest")  # fmt: skip
    data: dict[str, Any] = dict.fromkeys(GROUP_DEFAULT_PROPS)
    data.update(groupTypes=[], createdDateTime=services(request).state.clock.iso())
    data.update({k: v for k, v in body.items() if k in GROUP_WRITABLE})
    data["id"] = new_id()
    group = tenant.add_group(data)
    for ref in body.get("members@odata.bind", []):
        _add_member(tenant, group, _ref_id(ref))
    view = {"@odata.context": f"{graph_base(request)}/$metadata#groups/$entity", **project(data, GROUP_DEFAULT_PROPS)}
    return json_response(view, status=201)


async def update_group(request: web.Request) -> web.Response:
    group = _find_group(request)
    body = await read_json_object(request)
    unknown = [k for k in body if k not in GROUP_WRITABLE and not k.startswith("@odata")]
    if unknown:
        raise bad_request(f"Property '{unknown[0]}' is read-only or does not exist on type 'microsoft.graph.group'.")
    tenant_of(request).update_group(group, {k: v for k, v in body.items() if k in GROUP_WRITABLE})
    return web.Response(status=204)


async def delete_group(request: web.Request) -> web.Response:
    group = _find_group(request)
    tenant_of(request).soft_delete_group(group, services(request).state.clock.now())
    return web.Response(status=204)


def _ref_id(ref: Any) -> str:
    if not isinstance(ref, str) or "/" not in ref:
        raise bad_request("Invalid object identifier in '@odata.id'.", "Request_BadRequest")
    return ref.rstrip("/").rsplit("/", 1)[1]


def _add_member(tenant: Tenant, group: GroupRecord, member_id: str) -> None:
    if tenant.live_user(member_id) is not None:
        odata_type = USER_TYPE
    elif tenant.live_group(member_id) is not None and member_id != group.id:
        odata_type = GROUP_TYPE
    else:
        raise not_found(member_id)
    if not tenant.add_member(group, member_id, odata_type):
        raise bad_request("One or more added object references already exist for the following modified "
                          "properties: 'members'.", "Request_BadRequest")  # fmt: skip


async def add_member_ref(request: web.Request) -> web.Response:
    group = _find_group(request)
    body = await read_json_object(request)
    _add_member(tenant_of(request), group, _ref_id(body.get("@odata.id")))
    return web.Response(status=204)


async def remove_member_ref(request: web.Request) -> web.Response:
    group = _find_group(request)
    if not tenant_of(request).remove_member(group, request.match_info["member"]):
        raise not_found(request.match_info["member"])
    return web.Response(status=204)


async def list_members(request: web.Request) -> web.Response:
    tenant, group = tenant_of(request), _find_group(request)
    transitive = request.path.endswith("transitiveMembers")
    members = list((tenant.transitive_members(group) if transitive else group.members).items())

    def render(cursor: OffsetCursor) -> Callable[[tuple[str, str]], dict[str, Any]]:
        return lambda member: directory_object(tenant, member[0], member[1], cursor.s)

    return paged(request, rows=lambda _, start: from_position(members, start), render=render,
                 context="directoryObjects")  # fmt: skip


async def list_member_of(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    obj_id = request.match_info["id"]
    user = tenant.live_user(obj_id)
    if user is None:
        raise not_found(obj_id)
    obj_id = user.id
    transitive = request.path.endswith("transitiveMemberOf")
    groups = tenant.transitive_member_of(obj_id) if transitive else tenant.member_of(obj_id)

    def render(cursor: OffsetCursor) -> Callable[[GroupRecord], dict[str, Any]]:
        return lambda group: directory_object(tenant, group.id, GROUP_TYPE, cursor.s)

    limits = services(request).state.tunables
    return paged(request, rows=lambda _, start: from_position(groups, start), render=render,
                 context="directoryObjects", max_top=limits.member_of_page_max)  # fmt: skip


async def groups_delta(request: web.Request) -> web.Response:
    return await delta_response(request, "groups", _new_groups_cursor)


def _new_groups_cursor(request: web.Request, tenant: Tenant, issued: float) -> Cursor:
    select = parse_select(query(request.query, "select"), known=GROUP_PROPS, default=GROUP_DEFAULT_PROPS,
                          entity="group")  # fmt: skip
    ids = parse_id_filter(query(request.query, "filter"))
    return Cursor(tenant.tenant_id, "groups", select, ids, full=True, b=tenant.group_log.seq, i=issued)


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/v1.0/groups/delta", groups_delta)
    router.add_get("/v1.0/groups/delta()", groups_delta)
    router.add_get("/v1.0/groups", list_groups)
    router.add_post("/v1.0/groups", create_group)
    router.add_get("/v1.0/groups/{id}", get_group)
    router.add_patch("/v1.0/groups/{id}", update_group)
    router.add_delete("/v1.0/groups/{id}", delete_group)
    router.add_post("/v1.0/groups/{id}/members/$ref", add_member_ref)
    router.add_delete("/v1.0/groups/{id}/members/{member}/$ref", remove_member_ref)
    router.add_get("/v1.0/groups/{id}/members", list_members)
    router.add_get("/v1.0/groups/{id}/transitiveMembers", list_members)
    router.add_get("/v1.0/users/{id}/memberOf", list_member_of)
    router.add_get("/v1.0/users/{id}/transitiveMemberOf", list_member_of)
