"""Organizations and their End Users: the list (a keyset page, search, state), Assets, one End User with its
journal and explanation, and what an operator decides about it (edit and lock, unlock, exclude)."""

from __future__ import annotations

import urllib.parse
from typing import Any

from aiohttp import web

from worker.admin.errors import ApiError
from worker.admin.inputs import end_user_edit
from worker.core.model import END_USER_FIELDS, SYNC_STATES
from worker.engine.explain import explain_user
from worker.store.console import Cursor
from worker.store.records import Conflict, StoreError

from .. import forms
from ..forms import FormErrors
from ..plumbing import View, action, back_to, page
from .common import STATE_LABELS, notice, path_uuid


@page
async def organizations_page(v: View) -> web.Response:
    orgs = await v.store.list_organizations()
    return v.render("organizations.html", nav="organizations", orgs=orgs)


async def _org_header(v: View, org_id: str) -> dict[str, Any]:
    org = await v.store.get_organization(org_id)
    sync = await v.store.get_user_sync(org_id)
    return {"org": org, "sync": sync}


@page
async def organization_page(v: View) -> web.Response:
    org_id = path_uuid(v)
    ctx = await _org_header(v, org_id)
    query = v.request.query
    errors: dict[str, str] = {}
    q = (query.get("q") or "").strip()
    if len(q) > forms.MAX_TEXT:
        errors["q"] = f"must be at most {forms.MAX_TEXT} characters"
    state = query.get("sync_state") or None
    if state is not None and state not in SYNC_STATES:
        errors["sync_state"] = "choose one of the listed states"
    after = Cursor.decode(query["after"]) if query.get("after") else None
    before = Cursor.decode(query["before"]) if query.get("before") and after is None else None
    result = None
    if not errors:
        result = await v.pages.end_users_page(org_id, q=q or None, sync_state=state, after=after, before=before)

    def link(**extra: str) -> str:
        params = {"q": q, "sync_state": state or "", **extra}
        return f"/organizations/{org_id}?" + urllib.parse.urlencode({k: x for k, x in params.items() if x})

    return v.render("organization.html", nav="organizations", tab="end-users", q=q, state=state or "",
                    states=SYNC_STATES, state_labels=STATE_LABELS, errors=errors, result=result,
                    next_url=link(after=result["next"]) if result and result["next"] else None,
                    prev_url=link(before=result["prev"]) if result and result["prev"] else None,
                    first_url=link() if (after or before) else None, **ctx)


@page
async def organization_assets(v: View) -> web.Response:
    org_id = path_uuid(v)
    ctx = await _org_header(v, org_id)
    assets = await v.store.list_assets(org_id)
    return v.render("organization.html", nav="organizations", tab="assets", assets=assets, **ctx)


EDIT_LABELS = {
    "first_name": "First name", "last_name": "Last name", "email": "Email", "phone": "Phone", "mobile": "Mobile",
    "street": "Street", "city": "City", "state": "State/Province", "postal_code": "Postal code",
    "job_title": "Job title",
}


async def _end_user_context(v: View, end_user_id: str) -> dict[str, Any]:
    """The End User, its Organization, its journal (newest first) and, when linked, the explain answer."""
    end_user = await v.store.get_end_user(end_user_id)
    org = await v.store.get_organization(end_user["organization_id"])
    changes = (await v.end_users.changes(end_user_id, limit=50, offset=0))["items"]
    why = None
    if end_user["entra_object_id"] and org["microsoft_tenant_id"]:
        try:  # the admin API's `GET …/user-sync/explain`, same code
            tenant_id = await v.store.mapped_tenant(org["id"])
            why = await explain_user(v.console.pool, organization_id=org["id"], tenant_id=tenant_id,
                                     entra_object_id=end_user["entra_object_id"], email=None)
        except StoreError:
            why = None  # the tenant was unmapped meanwhile or the user left the mirror: no explanation
    return {"eu": end_user, "org": org, "changes": changes, "why": why, "state_labels": STATE_LABELS,
            "edit_labels": EDIT_LABELS, "locked": set(end_user.get("locked_fields") or ())}


@page
async def end_user_page(v: View) -> web.Response:
    end_user_id = path_uuid(v)
    ctx = await _end_user_context(v, end_user_id)
    return v.render("end_user.html", nav="organizations", notice=notice(v), edit_errors={}, edit_values=None,
                    confirm_exclude=v.request.query.get("exclude") == "1", **ctx)


def _edited(form: Any, current: dict[str, Any]) -> dict[str, str | None]:
    """The fields the form changed (blank clears), validated as the API's PATCH does; only these get locked."""
    given = {f: form.get(f) for f in END_USER_FIELDS if isinstance(form.get(f), str)}
    changed = {f: x for f, x in given.items() if (x.strip() or None) != current.get(f)}
    if not changed:
        raise FormErrors({"form": "nothing was changed"})
    try:
        return end_user_edit(changed)
    except ApiError as exc:
        field = exc.field or "form"
        raise FormErrors({field: exc.message.removeprefix(f"{field}: ")}) from None


@action
async def edit_end_user(v: View) -> web.Response:
    end_user_id = path_uuid(v)
    form = await v.form()
    current = await v.store.get_end_user(end_user_id)
    try:
        values = _edited(form, current)
        await v.end_users.edit(end_user_id, values)
    except (FormErrors, Conflict) as exc:
        errors = exc.errors if isinstance(exc, FormErrors) else {"email": str(exc)}
        ctx = await _end_user_context(v, end_user_id)
        shown = {f: form.get(f, "") for f in END_USER_FIELDS}
        return v.render("end_user.html", status=400, nav="organizations", notice=None, edit_errors=errors,
                        edit_values=shown, confirm_exclude=False, **ctx)
    return back_to(f"/end-users/{end_user_id}", done="edited")


@action
async def unlock_end_user_field(v: View) -> web.Response:
    end_user_id = path_uuid(v)
    field = v.request.match_info["field"]
    if field not in END_USER_FIELDS:
        raise ApiError(400, "field: must be one of " + ", ".join(END_USER_FIELDS))
    await v.end_users.unlock(end_user_id, field)
    return back_to(f"/end-users/{end_user_id}", done="unlocked")


@action
async def exclude_end_user(v: View) -> web.Response:
    end_user_id = path_uuid(v)
    await v.end_users.exclude(end_user_id)
    return back_to(f"/end-users/{end_user_id}", done="excluded")
