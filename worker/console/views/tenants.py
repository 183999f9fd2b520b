"""Microsoft tenants (register, change the secret, remove, each tenant's health and activity) and PSA tenants
(create, map, unmap)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from worker.admin.errors import ApiError
from worker.admin.inputs import tenant_ref
from worker.store.records import Conflict

from .. import forms, plot
from ..forms import FormErrors
from ..plumbing import View, action, back_to, page
from .common import notice, path_uuid, run_duration, safe_next


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
    return v.render("tenants.html", nav="tenants", notice=notice(v), **ctx, confirm_remove=confirm_remove,
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
        await v.operations.register_tenant(default_domain=None, **values)
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
        await v.operations.update_tenant(tenant_id, display_name=None, client_id=None, client_secret=secret)
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
    await v.operations.remove_tenant(tenant_ref(v.request.match_info["tenant_id"]))
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
        run["duration"] = run_duration(run)
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
        back = f"/psa-tenants/{path_uuid(v)}"
    if not isinstance(tenant_id, str) or not tenant_id or not isinstance(psa_raw, str) or not psa_raw:
        raise ApiError(400, "Choose what to map: a PSA tenant and a Microsoft tenant.")
    try:
        psa_id = str(uuid.UUID(psa_raw))
    except ValueError:
        raise ApiError(400, "psa_tenant_id: not a PSA tenant") from None
    await v.operations.map_psa_tenant(psa_id, tenant_id)
    return back_to(back, done="mapped")


@action
async def unmap_psa(v: View) -> web.Response:
    psa_id = path_uuid(v)
    await v.operations.unmap_psa_tenant(psa_id)
    form = await v.form()
    back = form.get("back")
    return back_to(safe_next(back) if isinstance(back, str) else "/tenants", done="unmapped")
