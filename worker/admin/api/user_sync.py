"""Admin API handlers for an Organization's user sync: status, enable or edit with filters, disable, run now,
the filter dialog's options, the preview of proposed filters and the explanation of one Entra user.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from worker.admin import inputs
from worker.admin.errors import BadRequest
from worker.core.filters import FilterError, filters_to_json, parse_filters
from worker.core.model import Filters
from worker.engine.explain import explain_user

from .context import POOL, Routes, operations, run_accepted, store


def _filters(body: dict[str, Any]) -> Filters:
    if "filters" not in body:
        raise BadRequest("filters", "is required")
    try:
        return parse_filters(body["filters"])
    except FilterError as exc:
        raise BadRequest(exc.field, exc.message) from None


async def get_user_sync(request: web.Request) -> web.Response:
    return web.json_response(await store(request).get_user_sync(inputs.path_id(request)))


async def put_user_sync(request: web.Request) -> web.Response:
    org_id = inputs.path_id(request)
    filters = _filters(await inputs.json_body(request, allowed=("filters",)))
    run_id = await operations(request).enable_sync(org_id, filters_to_json(filters))
    return run_accepted(run_id)


async def delete_user_sync(request: web.Request) -> web.Response:
    return web.json_response(await operations(request).disable_sync(inputs.path_id(request)))


async def run_user_sync(request: web.Request) -> web.Response:
    run_id = await operations(request).run_now(inputs.path_id(request))
    return run_accepted(run_id)


async def user_sync_options(request: web.Request) -> web.Response:
    return web.json_response(await store(request).options(inputs.path_id(request)))


async def user_sync_preview(request: web.Request) -> web.Response:
    org_id = inputs.path_id(request)
    filters = _filters(await inputs.json_body(request, allowed=("filters",)))
    return web.json_response(await operations(request).preview(org_id, filters))


async def user_sync_explain(request: web.Request) -> web.Response:
    org_id = inputs.path_id(request)
    object_id = inputs.query_text(request, "entra_object_id")
    email = inputs.query_text(request, "email")
    if (object_id is None) == (email is None):
        raise BadRequest("entra_object_id", "give exactly one of entra_object_id and email")
    tenant_id = await store(request).mapped_tenant(org_id)
    return web.json_response(await explain_user(
        request.app[POOL], organization_id=org_id, tenant_id=tenant_id, entra_object_id=object_id, email=email))


ROUTES: Routes = (
    ("GET", "/organizations/{id}/user-sync", get_user_sync),
    ("PUT", "/organizations/{id}/user-sync", put_user_sync),
    ("DELETE", "/organizations/{id}/user-sync", delete_user_sync),
    ("GET", "/organizations/{id}/user-sync/options", user_sync_options),
    ("POST", "/organizations/{id}/user-sync/preview", user_sync_preview),
    ("GET", "/organizations/{id}/user-sync/explain", user_sync_explain),
    ("POST", "/organizations/{id}/user-sync/runs", run_user_sync),
)
