"""A PSA tenant's page: its Organizations' "Microsoft User Sync" column and the set-up / edit dialog (options,
preview, save), and disabling an Organization's user sync."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from worker.core.filters import SECTIONS, filters_to_json

from .. import forms
from ..forms import SECTION_TITLES, FormErrors
from ..plumbing import View, action, back_to, page
from .common import notice, path_uuid


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
    psa_id = path_uuid(v)
    ctx = await _psa_context(v, psa_id)
    query = v.request.query
    dialog = confirm = None
    target = _org_in(ctx["orgs"], query.get("setup") or query.get("edit"))
    if target is not None:
        dialog = await _sync_dialog(v, target)
    disabling = _org_in(ctx["orgs"], query.get("disable"))
    if disabling is not None and disabling["status"] == "enabled":
        confirm = disabling
    return v.render("psa_tenant.html", nav="tenants", notice=notice(v), dialog=dialog, confirm=confirm, **ctx)


@action
async def save_user_sync(v: View) -> web.Response:
    org_id = path_uuid(v)
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
    await v.operations.enable_sync(org_id, filters_to_json(filters))
    return back_to(f"/psa-tenants/{org['psa_tenant_id']}", done="saved" if was_enabled else "enabled")


@action
async def preview_user_sync(v: View) -> web.Response:
    """The dialog's live preview: the Preview region's HTML for the boxes ticked so far."""
    org_id = path_uuid(v)
    form = await v.form()
    try:
        preview, errors = await v.operations.preview(org_id, forms.filters(form)), {}
    except FormErrors as exc:
        preview, errors = None, exc.errors
    return v.render("preview.html", preview=preview, errors=errors, titles=SECTION_TITLES)


@action
async def disable_user_sync(v: View) -> web.Response:
    org_id = path_uuid(v)
    org = await v.store.get_organization(org_id)
    await v.operations.disable_sync(org_id)
    return back_to(f"/psa-tenants/{org['psa_tenant_id']}", done="disabled")
