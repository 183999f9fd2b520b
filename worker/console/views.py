"""The console's pages and forms, in the vendor doc's wording (CONTRACTS.md "Operator console").

One handler per page or form. Pages read through `AdminStore` (the admin API's queries) or `ConsoleStore`
(page-shaped reads); forms change state only through `AdminService` / `AdminStore`, the same methods the
admin API calls, so the console can do nothing the API cannot. A form that does not parse is re-shown with
each field's error and nothing is written; a form that worked redirects back with a notice code (fixed text,
never echoed input).

Adding a feature is one handler here, one entry in ROUTES and one template block: e.g. an End User's
"Exclude" is `@action async def exclude_end_user(v)` calling the service, a `<form>` in end_user.html
and a line in NOTICES.
"""

from __future__ import annotations

import time
import urllib.parse
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from worker.admin.api import dismiss_held_run
from worker.admin.end_users_api import edit_values
from worker.admin.errors import ApiError
from worker.admin.inputs import tenant_ref
from worker.core.filters import SECTIONS, filters_to_json
from worker.core.model import END_USER_FIELDS, SYNC_STATES
from worker.engine.explain import explain_user
from worker.store.admin import Conflict, StoreError
from worker.store.console import Cursor
from worker.store.end_users import Conflict as EndUserConflict
from worker.store.end_users import EndUserError

from . import forms, plot
from .app import CONSOLE, View, action, back_to, page, read_form, redirect, render, set_cookie
from .forms import SECTION_TITLES, FormErrors
from .session import SESSION_TTL_S, VISITOR_TTL_S

NOTICES = {
    "registered": "Microsoft tenant registered.",
    "psa-created": "PSA tenant created.",
    "mapped": "PSA tenant mapped. Organizations with user sync enabled are syncing from the new tenant.",
    "unmapped": "PSA tenant unmapped. Its End Users are kept and no longer updated.",
    "enabled": "Microsoft Entra ID User Sync enabled: the sync is in progress.",
    "saved": "User sync filters saved: the sync is in progress. Nobody is deleted.",
    "disabled": "User sync disabled. Existing End Users remain and are no longer updated.",
    "confirmed": "Held run confirmed: a run applying its deactivations is queued.",
    "resolved": "Review item resolved.",
    "signed-out": "Signed out.",
    "rotated": "Client secret changed: Entra accepted it. Workers use it from their next unit of work.",
    "removed": "Microsoft tenant removed, with its subscriptions in Graph.",
    "edited": "End User saved. Edited fields of a synced End User are locked: the sync no longer overwrites them.",
    "unlocked": "Field unlocked: the next sync of this user fills it from Entra.",
    "excluded": "End User excluded: the record is kept and no longer synced.",
    "dismissed": "Held run dismissed: nobody is deactivated.",
    "undone": "Sync run undone: its End User changes are reversed.",
}
STATE_LABELS = {
    "manual": "Manual", "synced": "Synced", "out_of_scope": "Out of scope", "sync_disabled": "Sync disabled",
    "deactivated": "Deactivated", "excluded": "Excluded",
}


def _notice(v: View) -> str | None:
    return NOTICES.get(v.request.query.get("done", ""))


def _path_uuid(v: View, name: str = "id") -> str:
    raw = v.request.match_info[name]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise ApiError(404, "This page does not exist.") from None


# ---- sign in / out ---------------------------------------------------------------------------------------

def _safe_next(raw: str | None) -> str:
    """Only a path of this site (never //host or a scheme): an open redirect would help phishing."""
    # Browsers drop tabs and newlines from URLs, so "/\t/evil.example" would become "//evil.example".
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw \
            or any(c.isspace() or ord(c) < 32 for c in raw):
        return "/tenants"
    return raw


async def sign_in_form(request: web.Request, *, error: str | None = None, status: int = 200) -> web.Response:
    keys = request.app[CONSOLE].keys
    session = keys.read(request.cookies.get("console_session"), now=time.time())
    fresh = None
    if session is None or error is not None:
        session, fresh = keys.new(signed_in=False, now=time.time())
    response = render(request, "sign_in.html", status=status, csrf=keys.csrf(session), error=error,
                      next=_safe_next(request.query.get("next")), signed_in=False, nav="",
                      notice=NOTICES.get(request.query.get("done", "")))
    if fresh is not None:
        set_cookie(response, request, fresh, VISITOR_TTL_S)
    return response


async def sign_in_page(request: web.Request) -> web.Response:
    return await sign_in_form(request)


async def sign_in(request: web.Request) -> web.Response:
    keys = request.app[CONSOLE].keys
    form = await read_form(request)
    session = keys.read(request.cookies.get("console_session"), now=time.time())
    token = form.get("csrf_token")
    if session is None or not keys.csrf_matches(session, token if isinstance(token, str) else None):
        return await sign_in_form(request, error="The sign-in form expired; enter the token again.", status=403)
    given = form.get("admin_token")
    if not isinstance(given, str) or not given.strip():
        return await sign_in_form(request, error="Admin token is required.", status=400)
    if not keys.token_matches(given.strip()):
        return await sign_in_form(request, error="That admin token is not valid.", status=401)
    _, cookie = keys.new(signed_in=True, now=time.time())
    nxt = form.get("next")
    response = redirect(_safe_next(nxt if isinstance(nxt, str) else None))
    set_cookie(response, request, cookie, SESSION_TTL_S)
    return response


@action
async def sign_out(v: View) -> web.Response:
    response = redirect("/sign-in?done=signed-out")
    response.del_cookie("console_session", path="/")
    return response


async def home(request: web.Request) -> web.Response:
    return redirect("/tenants")


# ---- Microsoft tenants and PSA tenants -------------------------------------------------------------------

async def _tenants_context(v: View) -> dict[str, Any]:
    tenants = await v.pages.tenant_health()
    psa_tenants = await v.store.list_psa_tenants()
    return {"tenants": tenants, "psa_tenants": psa_tenants,
            "unmapped_psa": [p for p in psa_tenants if not p["microsoft_tenant_id"]]}


@page
async def tenants_page(v: View) -> web.Response:
    ctx = await _tenants_context(v)
    removing = v.request.query.get("remove")
    confirm_remove = next((t for t in ctx["tenants"] if t["tenant_id"] == removing), None)
    return v.render("tenants.html", nav="tenants", notice=_notice(v), **ctx, confirm_remove=confirm_remove,
                    register={}, register_errors={}, psa_errors={}, psa_name="", rotate_errors={})


async def _register_again(v: View, form: Any, errors: dict[str, str]) -> web.Response:
    shown = {k: form.get(k, "") for k in ("tenant_id", "display_name", "client_id")}  # never the secret
    return v.render("tenants.html", status=400, nav="tenants", notice=None, **await _tenants_context(v),
                    register=shown, register_errors=errors, psa_errors={}, psa_name="", open_register=True,
                    rotate_errors={})


def _credential_error(exc: ApiError, default_field: str) -> dict[str, str]:
    """A refused or untestable credential as a form error: Entra's error code on the field it concerns."""
    field = exc.field if exc.field in ("tenant_id", "client_id", "client_secret") else default_field
    return {field: exc.message.removeprefix(f"{field}: ")}


@action
async def register_tenant(v: View) -> web.Response:
    """The admin API's registration: the credential is tested against Entra and Graph before it is stored."""
    form = await v.form()
    try:
        values = forms.register_tenant(form)
    except FormErrors as exc:
        return await _register_again(v, form, exc.errors)
    try:
        await v.service.register_tenant(default_domain=None, **values)
    except Conflict:  # the form again, the message on the tenant id
        return await _register_again(v, form, {"tenant_id": "is already registered"})
    except ApiError as exc:  # refused (400, Entra's code) or not testable now (503): nothing was stored
        return await _register_again(v, form, _credential_error(exc, "client_secret"))
    return back_to("/tenants", done="registered")


@action
async def rotate_secret(v: View) -> web.Response:
    """A new client secret, tested by the service first; refused → the stored one is kept."""
    tenant_id = tenant_ref(v.request.match_info["tenant_id"])
    form = await v.form()
    try:
        secret = forms.text(form, "client_secret", max_len=1024)
        await v.service.update_tenant(tenant_id, display_name=None, client_id=None, client_secret=secret)
    except FormErrors as exc:
        errors = exc.errors
    except ApiError as exc:
        if exc.status == 404:
            raise
        errors = _credential_error(exc, "client_secret")
    else:
        return back_to("/tenants", done="rotated")
    return v.render("tenants.html", status=400, nav="tenants", notice=None, **await _tenants_context(v),
                    register={}, register_errors={}, psa_errors={}, psa_name="",
                    rotate_errors={tenant_id: errors})


@action
async def remove_tenant(v: View) -> web.Response:
    """Remove an unmapped tenant (the service deletes its Graph subscriptions); mapped → 409, readable."""
    await v.service.remove_tenant(tenant_ref(v.request.match_info["tenant_id"]))
    return back_to("/tenants", done="removed")


@action
async def create_psa_tenant(v: View) -> web.Response:
    form = await v.form()
    try:
        name = forms.text(form, "name")
    except FormErrors as exc:
        return v.render("tenants.html", status=400, nav="tenants", notice=None, **await _tenants_context(v),
                        register={}, register_errors={}, psa_errors=exc.errors, psa_name=form.get("name", ""),
                        rotate_errors={})
    try:
        psa = await v.store.create_psa_tenant(str(name))
    except Conflict:
        return v.render("tenants.html", status=400, nav="tenants", notice=None, **await _tenants_context(v),
                        register={}, register_errors={}, psa_errors={"name": "is taken by another PSA tenant"},
                        psa_name=name, rotate_errors={})
    return back_to(f"/psa-tenants/{psa['id']}", done="psa-created")


@page
async def tenant_page(v: View) -> web.Response:
    tenant_id = v.request.match_info["tenant_id"]
    tenant = (await v.pages.tenant_health(tenant_id))[0]
    sync_status = await v.store.tenant_sync_status(tenant_id)
    now = datetime.now(UTC)
    activity = await v.pages.tenant_activity(tenant_id, since=now - timedelta(hours=24))
    runs = activity["runs"]
    for run in runs:
        run["duration"] = _duration(run)
    notifications = plot.notifications_per_hour(activity["notifications"], now=now)
    return v.render(
        "tenant.html", nav="tenants", tenant=tenant, sync_status=sync_status, runs=runs[-20:][::-1],
        changes=plot.changes_per_hour(runs, now=now, last_notification=tenant["last_notification_at"]),
        notifications=notifications, total_notifications=int(sum(b.value for b in notifications.bars)),
        durations=plot.run_durations(runs),
        total_changes=sum(int(r["changes"] or 0) for r in runs),
    )


@action
async def map_psa(v: View) -> web.Response:
    """Map from the PSA tenant's page (a Microsoft tenant chosen) or a tenant's row (a PSA tenant chosen)."""
    form = await v.form()
    if "tenant_id" in v.request.match_info:
        tenant_id, psa_raw = v.request.match_info["tenant_id"], form.get("psa_tenant_id")
        back = "/tenants"
    else:
        tenant_id, psa_raw = form.get("microsoft_tenant_id"), v.request.match_info["id"]
        back = f"/psa-tenants/{_path_uuid(v)}"
    if not isinstance(tenant_id, str) or not tenant_id or not isinstance(psa_raw, str) or not psa_raw:
        raise ApiError(400, "Choose what to map: a PSA tenant and a Microsoft tenant.")
    try:
        psa_id = str(uuid.UUID(psa_raw))
    except ValueError:
        raise ApiError(400, "psa_tenant_id: not a PSA tenant") from None
    await v.service.map_psa_tenant(psa_id, tenant_id)
    return back_to(back, done="mapped")


@action
async def unmap_psa(v: View) -> web.Response:
    psa_id = _path_uuid(v)
    await v.service.unmap_psa_tenant(psa_id)
    form = await v.form()
    back = form.get("back")
    return back_to(_safe_next(back) if isinstance(back, str) else "/tenants", done="unmapped")


# ---- PSA tenant details: the Microsoft User Sync column and its dialogs ----------------------------------

async def _psa_context(v: View, psa_id: str) -> dict[str, Any]:
    psa = await v.store.get_psa_tenant(psa_id)
    orgs = await v.pages.organizations_sync(psa_id)
    tenants = await v.store.list_microsoft_tenants() if not psa["microsoft_tenant_id"] else []
    mapped = next((t for t in await v.pages.tenant_health(psa["microsoft_tenant_id"])), None) \
        if psa["microsoft_tenant_id"] else None
    return {"psa": psa, "orgs": orgs, "mapped": mapped,
            "free_tenants": [t for t in tenants if not t["psa_tenant_id"]]}


def _org_in(orgs: list[dict[str, Any]], org_id: str | None) -> dict[str, Any] | None:
    return next((o for o in orgs if o["id"] == org_id), None)


async def _sync_dialog(v: View, org: dict[str, Any], *, chosen: dict[str, Any] | None = None,
                       errors: dict[str, str] | None = None) -> dict[str, Any]:
    """The set-up / edit dialog: every section's options with counts, the ticks, and their preview."""
    options = await v.store.options(org["id"])
    editing = org["status"] == "enabled"
    if chosen is None:
        chosen = dict(org["filters"]) if editing and org["filters"] else dict.fromkeys(SECTIONS, "all")
    sections = []
    for name in SECTIONS:
        values = [{"value": o["id"], "label": o["name"] or o["id"], "count": o["count"]} for o in options[name]] \
            if name == "groups" else [{"value": o["value"], "label": o["value"], "count": o["count"]}
                                       for o in options[name]]
        picked = chosen.get(name)
        ticked = set() if picked == "all" or picked is None else {str(x).lower() for x in picked}
        known = {str(o["value"]).lower() for o in values}
        # A value the filters name but the tenant no longer has stays visible (count 0), so a save keeps it.
        values += [{"value": x, "label": x, "count": 0} for x in (picked if isinstance(picked, list) else [])
                   if str(x).lower() not in known]
        for o in values:
            o["checked"] = str(o["value"]).lower() in ticked
        sections.append({"name": name, "title": SECTION_TITLES[name], "all": picked == "all", "options": values,
                         "ticked": len(ticked), "error": (errors or {}).get(name)})
    # The Preview region is filled by the page's script as soon as the dialog opens (the same endpoint the
    # ticks call): over 100,000 users a preview takes a second or more, and the dialog should not wait for it.
    return {"org": org, "editing": editing, "sections": sections, "preview": None,
            "total_users": options["total_users"], "errors": errors or {}}


@page
async def psa_page(v: View) -> web.Response:
    psa_id = _path_uuid(v)
    ctx = await _psa_context(v, psa_id)
    query = v.request.query
    dialog = confirm = None
    target = _org_in(ctx["orgs"], query.get("setup") or query.get("edit"))
    if target is not None:
        dialog = await _sync_dialog(v, target)
    disabling = _org_in(ctx["orgs"], query.get("disable"))
    if disabling is not None and disabling["status"] == "enabled":
        confirm = disabling
    return v.render("psa_tenant.html", nav="tenants", notice=_notice(v), dialog=dialog, confirm=confirm, **ctx)


@action
async def save_user_sync(v: View) -> web.Response:
    org_id = _path_uuid(v)
    org = await v.store.get_organization(org_id)
    form = await v.form()
    try:
        filters = forms.filters(form)
    except FormErrors as exc:
        ctx = await _psa_context(v, org["psa_tenant_id"])
        target = _org_in(ctx["orgs"], org_id)
        assert target is not None
        dialog = await _sync_dialog(v, target, chosen=forms.selection(form), errors=exc.errors)
        return v.render("psa_tenant.html", status=400, nav="tenants", notice=None, dialog=dialog, confirm=None,
                        **ctx)
    was_enabled = org["user_sync_status"] == "enabled"
    await v.service.enable_sync(org_id, filters_to_json(filters))
    return back_to(f"/psa-tenants/{org['psa_tenant_id']}", done="saved" if was_enabled else "enabled")


@action
async def preview_user_sync(v: View) -> web.Response:
    """The dialog's live preview: the Preview region's HTML for the boxes ticked so far."""
    org_id = _path_uuid(v)
    form = await v.form()
    try:
        preview, errors = await v.service.preview(org_id, forms.filters(form)), {}
    except FormErrors as exc:
        preview, errors = None, exc.errors
    return v.render("preview.html", preview=preview, errors=errors, titles=SECTION_TITLES)


@action
async def disable_user_sync(v: View) -> web.Response:
    org_id = _path_uuid(v)
    org = await v.store.get_organization(org_id)
    await v.service.disable_sync(org_id)
    return back_to(f"/psa-tenants/{org['psa_tenant_id']}", done="disabled")


# ---- Organizations and End Users -------------------------------------------------------------------------

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
    org_id = _path_uuid(v)
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
    org_id = _path_uuid(v)
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
        except (StoreError, EndUserError):
            why = None  # the tenant was unmapped meanwhile or the user left the mirror: no explanation
    return {"eu": end_user, "org": org, "changes": changes, "why": why, "state_labels": STATE_LABELS,
            "edit_labels": EDIT_LABELS, "locked": set(end_user.get("locked_fields") or ())}


@page
async def end_user_page(v: View) -> web.Response:
    end_user_id = _path_uuid(v)
    ctx = await _end_user_context(v, end_user_id)
    return v.render("end_user.html", nav="organizations", notice=_notice(v), edit_errors={}, edit_values=None,
                    confirm_exclude=v.request.query.get("exclude") == "1", **ctx)


def _edited(form: Any, current: dict[str, Any]) -> dict[str, str | None]:
    """The fields the form changed (blank clears), validated as the API's PATCH does; only these get locked."""
    given = {f: form.get(f) for f in END_USER_FIELDS if isinstance(form.get(f), str)}
    changed = {f: x for f, x in given.items() if (x.strip() or None) != current.get(f)}
    if not changed:
        raise FormErrors({"form": "nothing was changed"})
    try:
        return edit_values(changed)
    except ApiError as exc:
        field = exc.field or "form"
        raise FormErrors({field: exc.message.removeprefix(f"{field}: ")}) from None


@action
async def edit_end_user(v: View) -> web.Response:
    end_user_id = _path_uuid(v)
    form = await v.form()
    current = await v.store.get_end_user(end_user_id)
    try:
        values = _edited(form, current)
        await v.end_users.edit(end_user_id, values)
    except (FormErrors, EndUserConflict) as exc:
        errors = exc.errors if isinstance(exc, FormErrors) else {"email": str(exc)}
        ctx = await _end_user_context(v, end_user_id)
        shown = {f: form.get(f, "") for f in END_USER_FIELDS}
        return v.render("end_user.html", status=400, nav="organizations", notice=None, edit_errors=errors,
                        edit_values=shown, confirm_exclude=False, **ctx)
    return back_to(f"/end-users/{end_user_id}", done="edited")


@action
async def unlock_end_user_field(v: View) -> web.Response:
    end_user_id = _path_uuid(v)
    field = v.request.match_info["field"]
    if field not in END_USER_FIELDS:
        raise ApiError(400, "field: must be one of " + ", ".join(END_USER_FIELDS))
    await v.end_users.unlock(end_user_id, field)
    return back_to(f"/end-users/{end_user_id}", done="unlocked")


@action
async def exclude_end_user(v: View) -> web.Response:
    end_user_id = _path_uuid(v)
    await v.end_users.exclude(end_user_id)
    return back_to(f"/end-users/{end_user_id}", done="excluded")


# ---- Sync runs and review --------------------------------------------------------------------------------

async def _org_names(v: View) -> dict[str, str]:
    return {o["id"]: o["name"] for o in await v.store.list_organizations()}


def _duration(run: dict[str, Any]) -> str:
    if not run.get("started_at") or not run.get("finished_at"):
        return "—"
    start, end = (v if isinstance(v, datetime) else datetime.fromisoformat(v)
                  for v in (run["started_at"], run["finished_at"]))
    seconds = (end - start).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


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
        run["duration"] = _duration(run)
    return v.render("runs.html", nav="runs", runs=runs, names=await _org_names(v), notice=_notice(v),
                    organization_id=org_id)


@action
async def confirm_run(v: View) -> web.Response:
    await v.service.confirm_run(_path_uuid(v))
    return back_to("/sync-runs", done="confirmed")


@action
async def dismiss_run(v: View) -> web.Response:
    await dismiss_held_run(v.console.pool, _path_uuid(v))
    return back_to("/sync-runs", done="dismissed")


@page
async def undo_preview(v: View) -> web.Response:
    """The undo's dry run (nothing written): what would be removed, unlinked, restored or skipped."""
    run_id = _path_uuid(v)
    run = await v.store.get_run(run_id)
    try:
        report = await v.end_users.undo_run(run_id, dry_run=True)
    except EndUserConflict as exc:  # e.g. its cause is in force: the next sync would redo it
        return v.render("undo.html", status=409, nav="runs", run=run, report=None, refused=str(exc), names={},
                        org_names=await _org_names(v))
    ids = {*report["removed"], *(s["end_user_id"] for k in ("unlinked", "restored", "skipped") for s in report[k])}
    names = await v.pages.end_user_names(sorted(ids))
    return v.render("undo.html", nav="runs", run=run, report=report, names=names, refused=None,
                    org_names=await _org_names(v))


@action
async def undo_run(v: View) -> web.Response:
    run_id = _path_uuid(v)
    try:
        await v.end_users.undo_run(run_id, dry_run=False)
    except EndUserConflict as exc:  # its cause came into force since the dry run
        return v.render("undo.html", status=409, nav="runs", run=await v.store.get_run(run_id), report=None,
                        refused=str(exc), names={}, org_names=await _org_names(v))
    return back_to("/sync-runs", done="undone")


@page
async def review_page(v: View) -> web.Response:
    items = await v.store.list_review_items(status="open")
    return v.render("review.html", nav="review", items=items, names=await _org_names(v), notice=_notice(v),
                    errors={})


@action
async def resolve_review(v: View) -> web.Response:
    review_id = _path_uuid(v)
    form = await v.form()
    choice = form.get("resolution")
    if not isinstance(choice, str) or not choice:
        items = await v.store.list_review_items(status="open")
        return v.render("review.html", status=400, nav="review", items=items, names=await _org_names(v),
                        notice=None, errors={review_id: "Choose an End User to link, or create a new one."})
    if choice == "create":
        await v.service.resolve_review(review_id, create=True)
    else:
        try:
            end_user_id = str(uuid.UUID(choice))
        except ValueError:
            raise ApiError(400, "resolution: not an End User of this review item") from None
        await v.service.resolve_review(review_id, end_user_id=end_user_id)
    return back_to("/review", done="resolved")


ROUTES: tuple[tuple[str, str, Any], ...] = (
    ("GET", "/", home),
    ("GET", "/sign-in", sign_in_page),
    ("POST", "/sign-in", sign_in),
    ("POST", "/sign-out", sign_out),
    ("GET", "/tenants", tenants_page),
    ("POST", "/tenants", register_tenant),
    ("POST", "/tenants/{tenant_id}/secret", rotate_secret),
    ("POST", "/tenants/{tenant_id}/remove", remove_tenant),
    ("GET", "/tenants/{tenant_id}", tenant_page),
    ("POST", "/psa-tenants", create_psa_tenant),
    ("GET", "/psa-tenants/{id}", psa_page),
    ("POST", "/psa-tenants/{id}/map", map_psa),
    ("POST", "/tenants/{tenant_id}/map", map_psa),
    ("POST", "/psa-tenants/{id}/unmap", unmap_psa),
    ("POST", "/organizations/{id}/user-sync", save_user_sync),
    ("POST", "/organizations/{id}/user-sync/preview", preview_user_sync),
    ("POST", "/organizations/{id}/user-sync/disable", disable_user_sync),
    ("GET", "/organizations", organizations_page),
    ("GET", "/organizations/{id}", organization_page),
    ("GET", "/organizations/{id}/assets", organization_assets),
    ("GET", "/end-users/{id}", end_user_page),
    ("POST", "/end-users/{id}/edit", edit_end_user),
    ("POST", "/end-users/{id}/unlock/{field}", unlock_end_user_field),
    ("POST", "/end-users/{id}/exclude", exclude_end_user),
    ("GET", "/sync-runs", runs_page),
    ("POST", "/sync-runs/{id}/confirm", confirm_run),
    ("POST", "/sync-runs/{id}/dismiss", dismiss_run),
    ("GET", "/sync-runs/{id}/undo", undo_preview),
    ("POST", "/sync-runs/{id}/undo", undo_run),
    ("GET", "/review", review_page),
    ("POST", "/review/{id}/resolve", resolve_review),
)
