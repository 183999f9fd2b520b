"""Admin API handlers for End Users and Assets: listing, reading and creating them, and what an operator
decides about one End User (edits and locks, delete and exclusions, the change journal, leavers). SQL lives
in `worker.store.end_user_queries` and `worker.store.end_user_actions`; these handlers parse input (a 400
names the field) and shape output.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from worker.admin import inputs
from worker.admin.errors import BadRequest
from worker.core.macs import normalize_mac
from worker.core.model import END_USER_FIELDS, SYNC_STATES

from .context import Routes, end_users, items, store


async def list_end_users(request: web.Request) -> web.Response:
    result = await store(request).list_end_users(
        inputs.path_id(request),
        email=inputs.query_text(request, "email"),
        sync_state=inputs.query_text(request, "sync_state", choices=SYNC_STATES),
        q=inputs.query_text(request, "q"),
        limit=inputs.query_int(request, "limit", default=100, maximum=1000),
        offset=inputs.query_int(request, "offset", default=0, maximum=10_000_000),
    )
    return web.json_response(result)


async def create_end_user(request: web.Request) -> web.Response:
    org_id = inputs.path_id(request)
    body = await inputs.json_body(request, allowed=END_USER_FIELDS)
    fields = {name: inputs.optional_text(body, name) for name in END_USER_FIELDS if name != "email"}
    fields["email"] = inputs.email(body)
    if not (fields["first_name"] or fields["last_name"] or fields["email"]):
        raise BadRequest("first_name", "an End User needs a first name, a last name or an email")
    return web.json_response(await store(request).create_manual_end_user(org_id, fields), status=201)


async def get_end_user(request: web.Request) -> web.Response:
    return web.json_response(await store(request).get_end_user(inputs.path_id(request)))


async def list_assets(request: web.Request) -> web.Response:
    return items(await store(request).list_assets(inputs.path_id(request)))


async def create_asset(request: web.Request) -> web.Response:
    org_id = inputs.path_id(request)
    body = await inputs.json_body(request, allowed=("name", "mac_addresses"))
    name = inputs.text(body, "name")
    macs = _macs(body.get("mac_addresses", []))
    return web.json_response(await store(request).create_asset(org_id, name=name, macs=macs), status=201)


def _macs(raw: Any) -> list[str]:
    if not isinstance(raw, list):
        raise BadRequest("mac_addresses", "must be a list of MAC addresses")
    macs: dict[str, None] = {}
    for i, value in enumerate(raw):
        mac = normalize_mac(value) if isinstance(value, str) else None
        if mac is None:
            raise BadRequest(f"mac_addresses[{i}]", "must be a MAC address such as AA:BB:CC:DD:EE:FF")
        macs[mac] = None
    return list(macs)


async def _answer_end_user(request: web.Request, end_user_id: str) -> web.Response:
    return web.json_response(await store(request).get_end_user(end_user_id))


async def patch_end_user(request: web.Request) -> web.Response:
    end_user_id = inputs.path_id(request)
    values = inputs.end_user_edit(await inputs.json_body(request, allowed=END_USER_FIELDS))
    await end_users(request).edit(end_user_id, values)
    return await _answer_end_user(request, end_user_id)


async def delete_end_user(request: web.Request) -> web.Response:
    await end_users(request).delete(inputs.path_id(request))
    return web.Response(status=204)


async def unlock_field(request: web.Request) -> web.Response:
    end_user_id = inputs.path_id(request)
    field = request.match_info["field"]
    if field not in END_USER_FIELDS:
        raise BadRequest("field", "must be one of " + ", ".join(END_USER_FIELDS))
    await end_users(request).unlock(end_user_id, field)
    return await _answer_end_user(request, end_user_id)


async def exclude_end_user(request: web.Request) -> web.Response:
    end_user_id = inputs.path_id(request)
    await end_users(request).exclude(end_user_id)
    return await _answer_end_user(request, end_user_id)


async def end_user_changes(request: web.Request) -> web.Response:
    return web.json_response(await end_users(request).changes(
        inputs.path_id(request), limit=inputs.query_int(request, "limit", default=50, maximum=1000),
        offset=inputs.query_int(request, "offset", default=0, maximum=10_000_000)))


async def list_exclusions(request: web.Request) -> web.Response:
    return web.json_response({"items": await end_users(request).list_exclusions(inputs.path_id(request))})


async def include(request: web.Request) -> web.Response:
    object_id = request.match_info["entra_object_id"].strip()
    if not object_id or len(object_id) > inputs.MAX_TEXT:
        raise BadRequest("entra_object_id", "must be an Entra object id")
    await end_users(request).include(inputs.path_id(request), object_id)
    return web.Response(status=204)


def _since(request: web.Request) -> datetime | None:
    raw = inputs.query_text(request, "since")
    if raw is None:
        return None
    try:
        since = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest("since", "must be an ISO 8601 date or time such as 2026-12-01T00:00:00Z") from None
    if since.tzinfo is None:
        raise BadRequest("since", "must carry a time zone (…Z or …+01:00)")
    return since


async def list_leavers(request: web.Request) -> web.Response:
    leavers = await end_users(request).list_leavers(inputs.path_id(request), since=_since(request))
    return web.json_response({"items": leavers})


ROUTES: Routes = (
    ("GET", "/organizations/{id}/end-users", list_end_users),
    ("POST", "/organizations/{id}/end-users", create_end_user),
    ("GET", "/end-users/{id}", get_end_user),
    ("GET", "/organizations/{id}/assets", list_assets),
    ("POST", "/organizations/{id}/assets", create_asset),
    ("PATCH", "/end-users/{id}", patch_end_user),
    ("DELETE", "/end-users/{id}", delete_end_user),
    ("DELETE", "/end-users/{id}/locks/{field}", unlock_field),
    ("POST", "/end-users/{id}/exclude", exclude_end_user),
    ("GET", "/end-users/{id}/changes", end_user_changes),
    ("GET", "/organizations/{id}/exclusions", list_exclusions),
    ("DELETE", "/organizations/{id}/exclusions/{entra_object_id}", include),
    ("GET", "/organizations/{id}/leavers", list_leavers),
)
