"""Admin API handlers for sync runs and review items: listing and reading runs, confirming or dismissing a
held run, undoing a run, listing review items and resolving one.
"""

from __future__ import annotations

from aiohttp import web

from worker.admin import inputs
from worker.admin.errors import BadRequest

from .context import Routes, end_users, items, operations, run_accepted, store


async def list_runs(request: web.Request) -> web.Response:
    runs = await store(request).list_runs(
        organization_id=inputs.query_uuid(request, "organization_id"),
        tenant_id=inputs.tenant_ref(inputs.query_text(request, "tenant_id") or "") or None,
        limit=inputs.query_int(request, "limit", default=100, maximum=1000),
        offset=inputs.query_int(request, "offset", default=0, maximum=10_000_000),
    )
    return items(runs)


async def get_run(request: web.Request) -> web.Response:
    return web.json_response(await store(request).get_run(inputs.path_id(request)))


async def confirm_run(request: web.Request) -> web.Response:
    run_id = await operations(request).confirm_run(inputs.path_id(request))
    return run_accepted(run_id)


async def dismiss_run(request: web.Request) -> web.Response:
    """Keep everyone a held run would deactivate, and end its hold."""
    run_id = inputs.path_id(request)
    await operations(request).dismiss_held_run(run_id)
    return web.json_response(await store(request).get_run(run_id))


async def undo_run(request: web.Request) -> web.Response:
    dry_run = inputs.query_text(request, "dry_run", choices=("true", "false")) == "true"
    return web.json_response(await end_users(request).undo_run(inputs.path_id(request), dry_run=dry_run))


async def list_review_items(request: web.Request) -> web.Response:
    status = inputs.query_text(request, "status", choices=("open", "resolved", "all")) or "open"
    found = await store(request).list_review_items(
        organization_id=inputs.query_uuid(request, "organization_id"),
        status=None if status == "all" else status,
    )
    return items(found)


async def resolve_review_item(request: web.Request) -> web.Response:
    review_id = inputs.path_id(request)
    body = await inputs.json_body(request, allowed=("end_user_id", "create"))
    create = inputs.flag(body, "create")
    has_link = body.get("end_user_id") is not None
    if create == has_link:
        raise BadRequest("end_user_id", 'give either {"end_user_id": …} or {"create": true}')
    end_user_id = inputs.uuid_value(body["end_user_id"], "end_user_id") if has_link else None
    result = await operations(request).resolve_review(review_id, end_user_id=end_user_id, create=create)
    return web.json_response(result)


ROUTES: Routes = (
    ("GET", "/sync-runs", list_runs),
    ("GET", "/sync-runs/{id}", get_run),
    ("POST", "/sync-runs/{id}/confirm", confirm_run),
    ("POST", "/sync-runs/{id}/dismiss", dismiss_run),
    ("POST", "/sync-runs/{id}/undo", undo_run),
    ("GET", "/review-items", list_review_items),
    ("POST", "/review-items/{id}/resolve", resolve_review_item),
)
