"""The operator console in a real Chromium against the real stack, found by the vendor doc's accessible names.

One signed-in browser page walks a technician's day in order: set up a sync with filters (the preview's
figures are the admin API's), see it Enabled and its End Users, open one's Microsoft data, edit the filters,
be refused bad input, disable with confirmation, confirm a held run, read a leaver card, see why a user is
synced, edit a field (locked) and unlock it, exclude, resolve a review item, dismiss a held run, undo a run
after its dry run (and be refused while its cause is in force), be refused a wrong secret and the removal of a
mapped tenant, sign out. Every page visited is screenshotted. Refusals (no session, no CSRF token) are
checked over plain HTTP.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import Admin, Graph, eventually

pytestmark = pytest.mark.slow

ALL = {"user_types": "all", "domains": "all", "office_locations": "all", "departments": "all", "groups": "all"}


class Shots:
    def __init__(self, page: Any, folder: Path) -> None:
        self.page = page
        self.folder = folder
        self.taken: list[str] = []

    async def __call__(self, name: str) -> None:
        await self.page.screenshot(path=str(self.folder / f"{len(self.taken):02d}-{name}.png"), full_page=True)
        self.taken.append(name)


@pytest.fixture(scope="module")
async def page(browser: Any, stack: dict[str, Any], screenshots: Path) -> Any:
    context = await browser.new_context(base_url=stack["admin_url"], viewport={"width": 1280, "height": 860})
    context.set_default_timeout(15_000)
    p = await context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
    p.shots = Shots(p, screenshots)
    p.js_errors = errors
    yield p
    await context.close()


async def _org(admin: Admin, name: str) -> dict[str, Any]:
    orgs = await admin.items("/organizations")
    return next(o for o in orgs if o["name"] == name)


# ---- refusals over plain HTTP ------------------------------------------------------------------------------

async def _signed_in_session(stack: dict[str, Any]) -> tuple[aiohttp.ClientSession, str]:
    # unsafe=True: keep cookies of an IP-address host (127.0.0.1), as a browser does.
    http = aiohttp.ClientSession(base_url=stack["admin_url"], cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with http.get("/sign-in") as resp:
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', await resp.text())
    assert csrf
    async with http.post("/sign-in", data={"csrf_token": csrf[1], "admin_token": stack["admin_token"]},
                         allow_redirects=False) as resp:
        assert resp.status == 303
    async with http.get("/tenants") as resp:
        assert resp.status == 200
        page_csrf = re.search(r'name="csrf_token" value="([^"]+)"', await resp.text())
    assert page_csrf
    return http, page_csrf[1]


async def test_pages_need_a_session_and_posts_a_csrf_token(stack: dict[str, Any], admin: Admin) -> None:
    org = await _org(admin, "Contoso Engineering")
    async with aiohttp.ClientSession(base_url=stack["admin_url"]) as anonymous:
        for path in ("/tenants", f"/organizations/{org['id']}", "/sync-runs", "/review"):
            async with anonymous.get(path, allow_redirects=False) as resp:
                assert resp.status == 303, path
                assert resp.headers["Location"].startswith("/sign-in?next="), path
        async with anonymous.post(f"/organizations/{org['id']}/user-sync/disable", data={}) as resp:
            assert resp.status == 403
    http, csrf = await _signed_in_session(stack)
    async with http:
        tenant = (await admin.items("/microsoft-tenants"))[0]
        end_user = (await eventually(lambda: admin.items(f"/organizations/{org['id']}/end-users?limit=1"),
                                     what="an End User synced"))[0]
        run = (await admin.items(f"/sync-runs?organization_id={org['id']}"))[0]
        for path in (f"/tenants/{tenant['tenant_id']}/secret", f"/tenants/{tenant['tenant_id']}/remove",
                     f"/end-users/{end_user['id']}/edit", f"/end-users/{end_user['id']}/exclude",
                     f"/end-users/{end_user['id']}/unlock/job_title", f"/sync-runs/{run['id']}/dismiss",
                     f"/sync-runs/{run['id']}/undo"):
            async with http.post(path, data={"csrf_token": "forged", "client_secret": "x", "job_title": "x"}) as resp:
                assert resp.status == 403, path
        assert (await admin.call("GET", f"/end-users/{end_user['id']}"))["sync_state"] == end_user["sync_state"]
        assert [t["tenant_id"] for t in await admin.items("/microsoft-tenants")].count(tenant["tenant_id"]) == 1
        async with http.get("/tenants") as resp:
            policy = resp.headers["Content-Security-Policy"]
            assert "script-src 'self'" in policy and "unsafe-inline" not in policy
            assert "<script>" not in await resp.text()
        for data in ({}, {"csrf_token": "forged"}, {"csrf_token": csrf + "0"}):
            async with http.post(f"/organizations/{org['id']}/user-sync/disable", data=data) as resp:
                assert resp.status == 403, data
                assert "Traceback" not in await resp.text()
        multipart = aiohttp.FormData()  # a file field makes it multipart: refused, never a 500
        multipart.add_field("csrf_token", csrf)
        multipart.add_field("upload", b"x", filename="x.txt")
        async with http.post(f"/organizations/{org['id']}/user-sync/disable", data=multipart) as resp:
            assert resp.status == 415
        assert (await admin.call("GET", f"/organizations/{org['id']}/user-sync"))["status"] != "disabled"
        # The same form with the session's token goes through: the refusals above were the token's doing.
        status = await admin.call("GET", f"/organizations/{org['id']}/user-sync")
        assert status["status"] == "enabled"
        async with http.post("/sign-in", data={"admin_token": stack["admin_token"]}, allow_redirects=False) as resp:
            assert resp.status == 403  # the sign-in form carries a token too


async def test_bad_form_input_is_reshown_with_the_fields_error_and_nothing_written(
    stack: dict[str, Any], admin: Admin
) -> None:
    before = await admin.items("/microsoft-tenants")
    http, csrf = await _signed_in_session(stack)
    async with http:
        bad = {"csrf_token": csrf, "tenant_id": "not-a-guid", "display_name": "<script>x</script>",
               "client_id": "", "client_secret": "hunter2"}
        async with http.post("/tenants", data=bad) as resp:
            html = await resp.text()
            assert resp.status == 400
        assert "Tenant ID must be a GUID" in html and "Client ID is required" in html
        assert 'value="&lt;script&gt;x&lt;/script&gt;"' in html  # the value given, escaped
        assert "hunter2" not in html  # a secret is never echoed
        assert await admin.items("/microsoft-tenants") == before
        taken = {"csrf_token": csrf, "tenant_id": before[0]["tenant_id"].upper(), "display_name": "Again",
                 "client_id": "c", "client_secret": "s"}
        async with http.post("/tenants", data=taken) as resp:
            assert resp.status == 400
            assert "Tenant ID is already registered" in await resp.text()
        assert await admin.items("/microsoft-tenants") == before
        # The API's registration: the credential is tested against Entra first; refused → nothing stored.
        unknown = {"csrf_token": csrf, "tenant_id": str(uuid.uuid4()), "display_name": "Nope",
                   "client_id": before[0]["client_id"], "client_secret": "wrong-secret"}
        async with http.post("/tenants", data=unknown) as resp:
            html = await resp.text()
            assert resp.status == 400
        assert "the credential was refused (" in html and "nothing was stored" in html
        assert "wrong-secret" not in html
        assert await admin.items("/microsoft-tenants") == before


# ---- the technician's day in the browser -------------------------------------------------------------------

async def test_sign_in(page: Any, stack: dict[str, Any]) -> None:
    from playwright.async_api import expect

    assert stack["console_url"] == stack["admin_url"] + "/"
    await page.goto(stack["console_url"])
    await expect(page).to_have_url(re.compile(r"/sign-in"))
    await page.shots("sign-in")
    await page.get_by_label("Admin token").fill("not-the-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("not valid")
    await page.get_by_label("Admin token").fill(stack["admin_token"])
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Microsoft Tenant Management")).to_be_visible()
    await expect(page.get_by_role("link", name="Demo MSP").first).to_be_visible()
    await page.shots("tenants")


async def _open_dialog_section(dialog: Any, title: str) -> Any:
    group = dialog.get_by_role("group", name=title)
    await group.locator("summary").click()
    return group


async def _figures(dialog: Any) -> dict[str, int]:
    region = dialog.get_by_role("region", name="Preview")
    out = {}
    for key in ("would_create", "would_update", "would_stop_updating"):
        out[key] = int((await region.locator(f"[data-figure={key}]").inner_text()).replace(",", ""))
    return out


async def test_set_up_with_filters_preview_equals_api(page: Any, admin: Admin) -> None:
    from playwright.async_api import expect

    psa = next(p for p in await admin.items("/psa-tenants") if p["name"] == "Demo MSP")
    name = f"Fabrikam Finance <b>{uuid.uuid4().hex[:6]}</b> & a rather long Organization name to wrap"
    org = await admin.call("POST", "/organizations", {"name": name, "psa_tenant_id": psa["id"]}, expect=201)
    page.org = org
    await page.get_by_role("link", name="Microsoft Tenants").click()
    await page.get_by_role("link", name="Demo MSP").first.click()
    row = page.get_by_role("row").filter(has_text=name)
    await expect(row).to_contain_text(name)  # escaped: the <b> is text, not markup
    await page.shots("psa-tenant")
    await row.get_by_role("button", name="Set Up").click()
    dialog = page.get_by_role("dialog", name="Set Up Microsoft Entra ID User Sync")
    await expect(dialog).to_be_visible()
    for title in ("User Type", "Domain", "Office Location", "Department", "Group"):
        await expect(dialog.get_by_role("group", name=title)).to_be_visible()
    department = await _open_dialog_section(dialog, "Department")
    await expect(department.get_by_label("All", exact=True)).to_be_checked()
    await expect(dialog.get_by_role("region", name="Preview").locator("[data-figure=would_create]")).to_be_visible()
    before = await _figures(dialog)
    await department.get_by_label("Finance").check()
    await expect(department.get_by_label("All", exact=True)).not_to_be_checked()
    api = await admin.call("POST", f"/organizations/{org['id']}/user-sync/preview",
                           {"filters": ALL | {"departments": ["Finance"]}}, expect=200)
    region = dialog.get_by_role("region", name="Preview")
    await expect(region.locator("[data-figure=would_create]")).to_have_text(f"{api['would_create']:,}")
    assert await _figures(dialog) == {k: api[k] for k in ("would_create", "would_update", "would_stop_updating")}
    assert api["would_create"] < before["would_create"], "ticking Finance should narrow the preview"
    await page.shots("set-up-dialog")
    await dialog.get_by_role("button", name="Enable Sync").click()
    await expect(dialog).to_be_hidden()
    await expect(page.get_by_role("status").first).to_contain_text("sync is in progress")
    row = page.get_by_role("row").filter(has_text=name)
    await expect(row.get_by_text("Enabled", exact=True)).to_be_visible()
    await expect(row.get_by_role("button", name=f"Actions for {name}")).to_be_visible()
    status = await admin.call("GET", f"/organizations/{org['id']}/user-sync")
    assert status["status"] == "enabled" and status["filters"]["departments"] == ["Finance"]
    await page.shots("psa-tenant-enabled")


async def test_end_users_listed_and_details_show_microsoft_data(page: Any, admin: Admin) -> None:
    from playwright.async_api import expect

    org = page.org
    users = await eventually(lambda: admin.items(f"/organizations/{org['id']}/end-users"), what="End Users synced")
    await page.get_by_role("link", name="Organizations").click()
    await page.shots("organizations")
    await page.get_by_role("link", name=org["name"]).click()
    await expect(page.get_by_role("tab", name="End Users")).to_have_attribute("aria-selected", "true")
    await expect(page.get_by_role("link", name="Manage")).to_be_visible()
    total = (await admin.call("GET", f"/organizations/{org['id']}/end-users"))["total"]
    await expect(page.get_by_text(f"{total} End User")).to_be_visible()
    await page.shots("organization-end-users")
    target = users[0]
    full = f"{target['first_name']} {target['last_name']}"
    await page.get_by_label("Search").fill(target["email"])
    await page.get_by_role("button", name="Apply").click()
    await expect(page.get_by_text("1 End User matching")).to_be_visible()
    await page.get_by_role("link", name=full).click()
    await expect(page.get_by_role("heading", level=1, name=full)).to_be_visible()
    assert await page.title() == f"{full} · Entra ID User Sync"  # the tab's title is the name, nothing else
    section = page.get_by_role("region", name="Microsoft User Details")
    details = await admin.call("GET", f"/end-users/{target['id']}")
    ms = details["microsoft"]
    await expect(section).to_contain_text(ms["user_principal_name"])
    await expect(section).to_contain_text(ms["object_id"])
    for label in ("Licenses", "Last sign-in", "MFA status", "MFA method", "User Principal Name", "Object ID"):
        await expect(section).to_contain_text(label)
    for lic in ms["licenses"]:
        await expect(section).to_contain_text(lic["sku_part_number"])
    await page.shots("end-user")


async def test_bad_filter_input_is_reshown_and_nothing_saved(page: Any, admin: Admin) -> None:
    from playwright.async_api import expect

    org = page.org
    await page.goto(f"/psa-tenants/{org['psa_tenant_id']}")
    await page.get_by_role("button", name=f"Actions for {org['name']}").click()
    await page.get_by_role("menuitem", name="Edit User Sync Filters").click()
    dialog = page.get_by_role("dialog", name="Set Up Microsoft Entra ID User Sync")
    user_type = await _open_dialog_section(dialog, "User Type")
    await user_type.get_by_label("All", exact=True).uncheck()
    await expect(dialog.get_by_role("region", name="Preview")).to_contain_text(
        "Tick All or at least one value in: User Type")
    await dialog.get_by_role("button", name="Save").click()
    dialog = page.get_by_role("dialog", name="Set Up Microsoft Entra ID User Sync")
    await expect(dialog.get_by_role("group", name="User Type")).to_contain_text("tick All or at least one user type")
    await page.shots("set-up-dialog-error")
    status = await admin.call("GET", f"/organizations/{org['id']}/user-sync")
    assert status["filters"]["user_types"] == "all"
    await dialog.get_by_role("button", name="Close").click()
    await expect(dialog).to_be_hidden()


async def test_edit_filters(page: Any, admin: Admin) -> None:
    from playwright.async_api import expect

    org = page.org
    await page.get_by_role("button", name=f"Actions for {org['name']}").click()
    await page.get_by_role("menuitem", name="Edit User Sync Filters").click()
    dialog = page.get_by_role("dialog", name="Set Up Microsoft Entra ID User Sync")
    department = await _open_dialog_section(dialog, "Department")
    await expect(department.get_by_label("Finance")).to_be_checked()
    await department.get_by_label("Operations").check()
    api = await admin.call("POST", f"/organizations/{org['id']}/user-sync/preview",
                           {"filters": ALL | {"departments": ["Finance", "Operations"]}}, expect=200)
    await expect(dialog.get_by_role("region", name="Preview").locator("[data-figure=would_create]")) \
        .to_have_text(f"{api['would_create']:,}")
    await dialog.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status").first).to_contain_text("filters saved")
    status = await admin.call("GET", f"/organizations/{org['id']}/user-sync")
    assert sorted(status["filters"]["departments"]) == ["Finance", "Operations"]


async def test_disable_with_confirmation(page: Any, admin: Admin) -> None:
    from playwright.async_api import expect

    org = page.org
    await page.get_by_role("button", name=f"Actions for {org['name']}").click()
    await page.get_by_role("menuitem", name="Disable User Sync").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("Existing End Users remain")
    await page.shots("disable-confirmation")
    assert (await admin.call("GET", f"/organizations/{org['id']}/user-sync"))["status"] == "enabled"
    await dialog.get_by_role("button", name="Disable User Sync").click()
    row = page.get_by_role("row").filter(has_text=org["name"])
    await expect(row.get_by_role("button", name="Set Up")).to_be_visible()
    assert (await admin.call("GET", f"/organizations/{org['id']}/user-sync"))["status"] == "disabled"
    kept = await admin.call("GET", f"/organizations/{org['id']}/end-users")
    assert kept["total"] > 0 and all(u["sync_state"] != "synced" for u in kept["items"])


async def _hold_a_run(admin: Admin, graph: Graph, org: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """Disable a third of an Organization's synced users in Entra so that one run sees them all: held."""
    users = (await admin.call("GET", f"/organizations/{org['id']}/end-users?sync_state=synced"))["items"]
    leavers = users[: max(3, len(users) // 3)]
    # The leavers' notifications are dropped so that one run sees them all (as a resync would) and the
    # accidental-deletion guard holds it; "run now" is that run.
    await graph.sim("POST", "/_sim/faults", {"tenant_id": graph.tenant_id, "drop_notifications": 1.0})
    try:
        for user in leavers:
            await graph.call("PATCH", f"/users/{user['entra_object_id']}", {"accountEnabled": False})
    finally:
        await graph.sim("DELETE", f"/_sim/faults?tenant_id={graph.tenant_id}")
    await admin.call("POST", f"/organizations/{org['id']}/user-sync/runs", expect=202)

    async def held() -> Any:
        runs = await admin.items(f"/sync-runs?organization_id={org['id']}")
        return next((r for r in runs if r["status"] == "held"), None)

    return await eventually(held, timeout_s=30, what="a held run"), leavers


async def test_held_run_confirmed(page: Any, admin: Admin, graph: Graph) -> None:
    from playwright.async_api import expect

    org = await _org(admin, "Contoso Engineering")
    run, leavers = await _hold_a_run(admin, graph, org)
    await page.goto(f"/organizations/{org['id']}")  # the badge is `GET …/user-sync`'s held_run_id
    await expect(page.get_by_role("link", name="Held run: confirm or dismiss")).to_be_visible()
    await page.get_by_role("link", name="Sync Runs").click()
    await page.shots("sync-runs-held")
    await page.get_by_role("button", name="Confirm held run of Contoso Engineering").first.click()
    await expect(page.get_by_role("status").first).to_contain_text("Held run confirmed")

    async def deactivated() -> bool:
        states = {u["id"]: u["sync_state"] for u in (await admin.call(
            "GET", f"/organizations/{org['id']}/end-users?limit=1000"))["items"]}
        return all(states[u["id"]] == "deactivated" for u in leavers)

    await eventually(deactivated, timeout_s=30, what="the held deactivations applied")
    assert run["id"]


async def test_leaver_card_of_a_deactivated_end_user(page: Any, admin: Admin) -> None:
    from playwright.async_api import expect

    org = await _org(admin, "Contoso Engineering")
    leaver = (await admin.call("GET", f"/organizations/{org['id']}/end-users?sync_state=deactivated"))["items"][0]
    card = (await admin.call("GET", f"/end-users/{leaver['id']}"))["leaver"]
    await page.goto(f"/end-users/{leaver['id']}")
    region = page.get_by_role("region", name="Leaver")
    await expect(region).to_contain_text(card["evidence"])
    await expect(region).to_contain_text(card["reason"])
    await page.shots("end-user-leaver")


async def test_end_user_why_edit_lock_unlock_and_exclude(page: Any, admin: Admin) -> None:
    from playwright.async_api import expect

    org = await _org(admin, "Contoso Engineering")
    target = (await admin.call("GET", f"/organizations/{org['id']}/end-users?sync_state=synced"))["items"][0]
    url = f"/end-users/{target['id']}"
    await page.goto(url)
    why = page.get_by_role("region", name="Why is this user synced?")
    api = await admin.call(
        "GET", f"/organizations/{org['id']}/user-sync/explain?entra_object_id={target['entra_object_id']}")
    table = why.get_by_role("table", name="Filter sections")
    await expect(table.get_by_role("row")).to_have_count(1 + len(api["sections"]))
    titles = {"user_types": "User Type", "domains": "Domain", "office_locations": "Office Location",
              "departments": "Department", "groups": "Group"}
    for section in api["sections"]:
        row = table.get_by_role("row", name=re.compile("^" + titles[section["section"]]))
        await expect(row).to_contain_text("not matched" if not section["matched"] else "matched")
        for value in section["user_values"][:1]:
            await expect(row).to_contain_text(value)
    await expect(why).to_contain_text("In scope" if api["in_scope"] else "Out of scope")
    await page.shots("end-user-why")

    # Bad input: the field's error, the values given, nothing written.
    await page.get_by_text("Edit fields").click()
    await page.get_by_label("Email", exact=True).fill("not-an-email")
    await page.get_by_label("Job title").fill("Principal Plumber")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_text("Email must be an email address")).to_be_visible()
    await expect(page.get_by_label("Job title")).to_have_value("Principal Plumber")
    after = await admin.call("GET", url)
    assert after["email"] == target["email"] and after["job_title"] == target["job_title"]
    assert after["locked_fields"] == []
    await page.shots("end-user-edit-error")

    await page.get_by_label("Email", exact=True).fill(target["email"])
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status").first).to_contain_text("End User saved")
    details = page.get_by_role("region", name="User Details")
    await expect(details.get_by_role("button", name="Unlock Job title")).to_be_visible()
    await expect(details.get_by_text("Locked", exact=True)).to_have_count(1)  # only the field edited
    edited = await admin.call("GET", url)
    assert edited["job_title"] == "Principal Plumber" and edited["locked_fields"] == ["job_title"]
    history = page.get_by_role("region", name="Change history")
    await expect(history.get_by_role("row").nth(1)).to_contain_text("Principal Plumber")  # newest first
    await page.shots("end-user-locked")

    await details.get_by_role("button", name="Unlock Job title").click()
    await expect(page.get_by_role("status").first).to_contain_text("Field unlocked")
    assert (await admin.call("GET", url))["locked_fields"] == []

    await page.get_by_role("link", name="Exclude").click()
    dialog = page.get_by_role("dialog", name="Exclude this End User?")
    await expect(dialog).to_be_visible()
    assert (await admin.call("GET", url))["sync_state"] == "synced"  # not before it is confirmed
    await page.shots("end-user-exclude")
    await dialog.get_by_role("button", name="Exclude End User").click()
    await expect(page.get_by_role("status").first).to_contain_text("End User excluded")
    assert (await admin.call("GET", url))["sync_state"] == "excluded"
    await expect(page.get_by_role("link", name="Exclude")).to_have_count(0)


async def test_review_item_resolved_in_place(page: Any, admin: Admin, graph: Graph, stack: dict[str, Any]) -> None:
    from playwright.async_api import expect

    org = await _org(admin, "Contoso Sales & Support")
    domain = stack["tenants"][0]["default_domain"]
    tag = uuid.uuid4().hex[:6]
    mail, upn = f"ann.lee.{tag}@{domain}", f"alee.{tag}@{domain}"
    for email in (mail, upn):
        await admin.call("POST", f"/organizations/{org['id']}/end-users",
                         {"first_name": "Ann", "last_name": f"Lee {tag}", "email": email}, expect=201)
    created = await graph.call("POST", "/users", {
        "accountEnabled": True, "displayName": f"Ann Lee {tag}", "mailNickname": f"alee{tag}",
        "userPrincipalName": upn, "mail": mail, "department": "Sales", "givenName": "Ann", "surname": "Lee",
        "passwordProfile": {"password": "Passw0rd!x", "forceChangePasswordNextSignIn": False},
    })

    async def item() -> Any:
        items = await admin.items("/review-items")
        return next((i for i in items if i["entra_object_id"] == created["id"]), None)

    review = await eventually(item, timeout_s=30, what="a review item")
    await page.get_by_role("link", name="Review").click()
    card = page.get_by_role("region", name=f"Ann Lee {tag}")
    await expect(card).to_be_visible()
    await page.shots("review")
    await card.get_by_role("button", name="Resolve").click()  # nothing chosen: re-shown with the error
    await expect(page.get_by_role("region", name=f"Ann Lee {tag}").get_by_role("alert")).to_contain_text("Choose")
    assert (await item())["status"] == "open"
    card = page.get_by_role("region", name=f"Ann Lee {tag}")
    await card.get_by_label(re.compile(f"Link to Ann Lee {tag}.*{re.escape(mail)}")).check()
    await card.get_by_role("button", name="Resolve").click()
    await expect(page.get_by_role("status").first).to_contain_text("Review item resolved")
    await expect(page.get_by_role("region", name=f"Ann Lee {tag}")).to_have_count(0)
    resolved = [i for i in await admin.items("/review-items?status=resolved") if i["id"] == review["id"]]
    assert resolved and resolved[0]["resolution"]["action"] == "link"


async def test_held_run_dismissed(page: Any, admin: Admin, graph: Graph) -> None:
    from playwright.async_api import expect

    org = await _org(admin, "Contoso Sales & Support")
    run, leavers = await _hold_a_run(admin, graph, org)
    await page.goto(f"/psa-tenants/{org['psa_tenant_id']}")
    row = page.get_by_role("row").filter(has_text=org["name"])
    await expect(row.get_by_role("link", name="Held run: confirm or dismiss")).to_be_visible()
    await page.shots("psa-tenant-held-badge")
    await page.get_by_role("link", name="Sync Runs").click()
    await page.get_by_role("button", name=f"Dismiss held run of {org['name']}").first.click()
    await expect(page.get_by_role("status").first).to_contain_text("Held run dismissed")
    assert (await admin.call("GET", f"/sync-runs/{run['id']}"))["status"] != "held"
    states = {u["id"]: u["sync_state"] for u in (await admin.call(
        "GET", f"/organizations/{org['id']}/end-users?limit=1000"))["items"]}
    assert all(states[u["id"]] != "deactivated" for u in leavers)


async def test_undo_refused_while_its_cause_is_in_force(page: Any, admin: Admin) -> None:
    from playwright.async_api import expect

    await page.get_by_role("link", name="Sync Runs").click()
    await page.get_by_role("link", name=re.compile("^Undo run of Contoso Engineering")).first.click()
    await expect(page.get_by_role("alert")).to_contain_text("cause of this run is still in force")
    await expect(page.get_by_role("button", name="Confirm undo")).to_have_count(0)
    await page.shots("undo-refused")


async def test_undo_shows_its_dry_run_then_applies(page: Any, admin: Admin) -> None:
    from playwright.async_api import expect

    org = page.org  # its sync was disabled above: undoing its first run is allowed
    await page.goto(f"/sync-runs?organization_id={org['id']}")
    await page.get_by_role("link", name=re.compile("^Undo run of Fabrikam Finance")).last.click()
    run_id = page.url.rstrip("/").split("/")[-2]
    dry = await admin.call("POST", f"/sync-runs/{run_id}/undo?dry_run=true", expect=200)
    table = page.get_by_role("table", name="Undo dry run")
    kinds = {"removed": len(dry["removed"]), "unlinked": len(dry["unlinked"]), "restored": len(dry["restored"]),
             "skipped": len(dry["skipped"])}
    assert sum(kinds.values()) > 0
    await expect(table.get_by_role("row")).to_have_count(1 + sum(kinds.values()))
    for kind, n in kinds.items():
        await expect(table.get_by_role("row").filter(has=page.get_by_role("cell", name=kind, exact=True))) \
            .to_have_count(n)
    before = (await admin.call("GET", f"/organizations/{org['id']}/end-users"))["total"]
    await page.shots("undo-dry-run")
    await page.get_by_role("button", name="Confirm undo").click()
    await expect(page.get_by_role("status").first).to_contain_text("Sync run undone")
    after = (await admin.call("GET", f"/organizations/{org['id']}/end-users"))["total"]
    assert after == before - len(dry["removed"])
    await admin.call("POST", f"/sync-runs/{run_id}/undo?dry_run=true", expect=409)  # once only


async def test_rotate_secret_refused_and_remove_refused_while_mapped(
    page: Any, admin: Admin, stack: dict[str, Any]
) -> None:
    from playwright.async_api import expect

    tenant = (await admin.items("/microsoft-tenants"))[0]
    name = tenant["display_name"]
    await page.get_by_role("link", name="Microsoft Tenants").click()
    await page.get_by_label(f"Rotate secret of {name}").click()
    await page.get_by_label(f"New client secret for {name}").fill("not-the-secret")
    await page.get_by_role("button", name="Test and save secret").first.click()
    error = page.get_by_text(re.compile("refused \\(invalid_client\\): AADSTS7000215"))
    await expect(error).to_be_visible()
    assert "not-the-secret" not in await page.content()
    await page.shots("rotate-refused")
    await page.get_by_label(f"New client secret for {name}").fill(stack["tenants"][0]["client_secret"])
    await page.get_by_role("button", name="Test and save secret").first.click()
    await expect(page.get_by_role("status").first).to_contain_text("Client secret changed")

    await page.get_by_role("link", name=f"Remove {name}").click()
    dialog = page.get_by_role("dialog", name=f"Remove {name}?")
    await expect(dialog).to_contain_text("unmap it first")
    await page.shots("remove-confirmation")
    await dialog.get_by_role("button", name="Remove tenant").click()
    await expect(page.get_by_text(re.compile("is mapped to PSA tenant .*unmap it first"))).to_be_visible()
    await page.shots("remove-refused")
    await page.get_by_role("link", name="Back to Microsoft Tenants").click()
    assert tenant["tenant_id"] in [t["tenant_id"] for t in await admin.items("/microsoft-tenants")]


async def test_tenant_page_plots_and_sign_out(page: Any, stack: dict[str, Any], admin: Admin) -> None:
    """The freshness meter: changes applied and notifications received per hour (the tests above changed users
    in Graph, whose notifications the worker accepted), run durations, and the last resync's drift as the
    sync-status API gives it."""
    from playwright.async_api import expect

    await page.get_by_role("link", name="Microsoft Tenants").click()
    tenant_id = stack["tenants"][0]["tenant_id"]
    await page.locator(f'a[href="/tenants/{tenant_id}"]').first.click()
    await expect(page.get_by_role("img", name="End User changes applied per hour, last 24 hours")).to_be_visible()
    await expect(page.get_by_role("img", name="Duration of each run, last 24 hours")).to_be_visible()
    assert await page.locator("svg rect.bar").count() > 0
    notifications = page.get_by_role("img", name="Change notifications received per hour, last 24 hours")
    await expect(notifications).to_be_visible()
    caption = await page.locator("figure", has=notifications).locator("figcaption").inner_text()
    received = int(re.match(r"([\d,]+) change notifications?", caption)[1].replace(",", ""))  # type: ignore[index]
    assert received > 0, caption
    bars = [float(await b.get_attribute("height")) for b in await notifications.locator("rect.bar").all()]
    assert len(bars) == 24 and max(bars) > 0
    drift = (await admin.call("GET", f"/microsoft-tenants/{tenant_id}/sync-status"))["last_resync_drift"]
    meter = page.locator("dl.health div", has=page.get_by_text("Last resync's drift")).locator("dd")
    expected = "no hourly resync yet" if drift is None else "none missed" if drift["total"] == 0 else \
        f"{drift['total']:,} missed change{'' if drift['total'] == 1 else 's'}"
    await expect(meter).to_have_text(expected)
    await page.shots("tenant")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    await page.goto("/tenants")
    await expect(page).to_have_url(re.compile(r"/sign-in"))
    assert page.js_errors == []
