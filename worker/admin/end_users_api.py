"""Admin API handlers for what an operator decides about End Users: edits and locks, delete and exclusions,
the change journal, leavers, and undoing a run. SQL lives in `worker.store.end_users`; these handlers parse
input (a 400 names the field) and shape output. `ROUTES` is added to the app by `worker.admin.api`.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from worker.core.model import END_USER_FIELDS
from worker.store.admin import AdminStore
from worker.store.end_user_actions import EndUserStore
from worker.store.records import Conflict, NotFound
from worker.store.records import StoreError as EndUserError

from . import inputs
from .errors import ApiError, BadRequest

END_USERS = web.AppKey("end_users", EndUserStore)
ADMIN_STORE = web.AppKey("end_users_admin_store", AdminStore)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def end_user_error(exc: EndUserError) -> ApiError:
    """The End User store's errors as API errors (404, 409); the console shows the same."""
    if isinstance(exc, NotFound):
        return ApiError(404, str(exc))
    if isinstance(exc, Conflict):
        return ApiError(409, str(exc))
    return ApiError(500, "internal error")


def _mapped(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except EndUserError as exc:
            raise end_user_error(exc) from (None if isinstance(exc, NotFound | Conflict) else exc)
    return run


def _end_users(request: web.Request) -> EndUserStore:
    return request.app[END_USERS]


async def _one(request: web.Request, end_user_id: str) -> web.Response:
    return web.json_response(await request.app[ADMIN_STORE].get_end_user(end_user_id))


def edit_values(body: dict[str, Any]) -> dict[str, str | None]:
    """The fields of a PATCH body, validated: known fields only, strings up to 256 characters (blank or null
    clears), a well-formed email."""
    if not body:
        raise BadRequest("body", "give at least one of " + ", ".join(END_USER_FIELDS))
    return {name: inputs.email(body) if name == "email" else inputs.optional_text(body, name) for name in body}


@_mapped
async def patch_end_user(request: web.Request) -> web.Response:
    end_user_id = inputs.path_id(request)
    values = edit_values(await inputs.json_body(request, allowed=END_USER_FIELDS))
    await _end_users(request).edit(end_user_id, values)
    return await _one(request, end_user_id)


@_mapped
async def delete_end_user(request: web.Request) -> web.Response:
    await _end_users(request).delete(inputs.path_id(request))
    return web.Response(status=204)


@_mapped
async def unlock_field(request: web.Request) -> web.Response:
    end_user_id = inputs.path_id(request)
    field = request.match_info["field"]
    if field not in END_USER_FIELDS:
        raise BadRequest("field", "must be one of " + ", ".join(END_USER_FIELDS))
    await _end_users(request).unlock(end_user_id, field)
    return await _one(request, end_user_id)


@_mapped
async def exclude_end_user(request: web.Request) -> web.Response:
    end_user_id = inputs.path_id(request)
    await _end_users(request).exclude(end_user_id)
    return await _one(request, end_user_id)


@_mapped
async def end_user_changes(request: web.Request) -> web.Response:
    return web.json_response(await _end_users(request).changes(
        inputs.path_id(request), limit=inputs.query_int(request, "limit", default=50, maximum=1000),
        offset=inputs.query_int(request, "offset", default=0, maximum=10_000_000)))


@_mapped
async def list_exclusions(request: web.Request) -> web.Response:
    return web.json_response({"items": await _end_users(request).list_exclusions(inputs.path_id(request))})


@_mapped
async def include(request: web.Request) -> web.Response:
    object_id = request.match_info["entra_object_id"].strip()
    if not object_id or len(object_id) > inputs.MAX_TEXT:
        raise BadRequest("entra_object_id", "must be an Entra object id")
    await _end_users(request).include(inputs.path_id(request), object_id)
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


@_mapped
async def list_leavers(request: web.Request) -> web.Response:
    items = await _end_users(request).list_leavers(inputs.path_id(request), since=_since(request))
    return web.json_response({"items": items})


@_mapped
async def undo_run(request: web.Request) -> web.Response:
    dry_run = inputs.query_text(request, "dry_run", choices=("true", "false")) == "true"
    return web.json_response(await _end_users(request).undo_run(inputs.path_id(request), dry_run=dry_run))


ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("PATCH", "/end-users/{id}", patch_end_user),
    ("DELETE", "/end-users/{id}", delete_end_user),
    ("DELETE", "/end-users/{id}/locks/{field}", unlock_field),
    ("POST", "/end-users/{id}/exclude", exclude_end_user),
    ("GET", "/end-users/{id}/changes", end_user_changes),
    ("GET", "/organizations/{id}/exclusions", list_exclusions),
    ("DELETE", "/organizations/{id}/exclusions/{entra_object_id}", include),
    ("GET", "/organizations/{id}/leavers", list_leavers),
    ("POST", "/sync-runs/{id}/undo", undo_run),
)
