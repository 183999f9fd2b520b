"""Sync runs (confirm or dismiss a held run, undo a run after its dry run) and the review queue."""

from __future__ import annotations

import uuid

from aiohttp import web

from worker.admin.errors import ApiError
from worker.store.records import Conflict

from ..forms import FormErrors
from ..plumbing import View, action, back_to, page
from .common import notice, path_uuid, run_duration


async def _org_names(v: View) -> dict[str, str]:
    return {o["id"]: o["name"] for o in await v.store.list_organizations()}


@page
async def runs_page(v: View) -> web.Response:
    org_id = v.request.query.get("organization_id") or None
    if org_id is not None:
        try:
            org_id = str(uuid.UUID(org_id))
        except ValueError:
            raise FormErrors({"organization_id": "must be an Organization's id"}) from None
    runs = await v.store.list_runs(organization_id=org_id, limit=200)
    for run in runs:
        run["duration"] = run_duration(run)
    return v.render("runs.html", nav="runs", runs=runs, names=await _org_names(v), notice=notice(v),
                    organization_id=org_id)


@action
async def confirm_run(v: View) -> web.Response:
    await v.operations.confirm_run(path_uuid(v))
    return back_to("/sync-runs", done="confirmed")


@action
async def dismiss_run(v: View) -> web.Response:
    await v.operations.dismiss_held_run(path_uuid(v))
    return back_to("/sync-runs", done="dismissed")


@page
async def undo_preview(v: View) -> web.Response:
    """The undo's dry run (nothing written): what would be removed, unlinked, restored or skipped."""
    run_id = path_uuid(v)
    run = await v.store.get_run(run_id)
    try:
        report = await v.end_users.undo_run(run_id, dry_run=True)
    except Conflict as exc:  # e.g. its cause is in force: the next sync would redo it
        return v.render("undo.html", status=409, nav="runs", run=run, report=None, refused=str(exc), names={},
                        org_names=await _org_names(v))
    ids = {*report["removed"], *(s["end_user_id"] for k in ("unlinked", "restored", "skipped") for s in report[k])}
    names = await v.pages.end_user_names(sorted(ids))
    return v.render("undo.html", nav="runs", run=run, report=report, names=names, refused=None,
                    org_names=await _org_names(v))


@action
async def undo_run(v: View) -> web.Response:
    run_id = path_uuid(v)
    try:
        await v.end_users.undo_run(run_id, dry_run=False)
    except Conflict as exc:  # its cause came into force since the dry run
        return v.render("undo.html", status=409, nav="runs", run=await v.store.get_run(run_id), report=None,
                        refused=str(exc), names={}, org_names=await _org_names(v))
    return back_to("/sync-runs", done="undone")


@page
async def review_page(v: View) -> web.Response:
    items = await v.store.list_review_items(status="open")
    return v.render("review.html", nav="review", items=items, names=await _org_names(v), notice=notice(v),
                    errors={})


@action
async def resolve_review(v: View) -> web.Response:
    review_id = path_uuid(v)
    form = await v.form()
    choice = form.get("resolution")
    if not isinstance(choice, str) or not choice:
        items = await v.store.list_review_items(status="open")
        return v.render("review.html", status=400, nav="review", items=items, names=await _org_names(v),
                        notice=None, errors={review_id: "Choose an End User to link, or create a new one."})
    if choice == "create":
        await v.operations.resolve_review(review_id, create=True)
    else:
        try:
            end_user_id = str(uuid.UUID(choice))
        except ValueError:
            raise ApiError(400, "resolution: not an End User of this review item") from None
        await v.operations.resolve_review(review_id, end_user_id=end_user_id)
    return back_to("/review", done="resolved")
