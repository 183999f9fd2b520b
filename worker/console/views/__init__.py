"""The console's pages and forms, in the vendor doc's wording (CONTRACTS.md "Operator console"), one module
per page group: signing in (`sign_in`), tenants (`tenants`), a PSA tenant's user sync column and dialogs
(`user_sync`), Organizations and End Users (`end_users`), runs and review (`runs`).

One handler per page or form. Pages read through `AdminStore` (the admin API's queries) or `ConsoleStore`
(page-shaped reads); forms change state only through `AdminOperations` / `AdminStore` / `EndUserActions`, the
same methods the admin API calls, so the console can do nothing the API cannot. A form that does not parse
is re-shown with each field's error and nothing is written; a form that worked redirects back with a notice
code (fixed text, never echoed input).

Adding a feature is one handler in its group's module, one entry in ROUTES and one template block: e.g. an
End User's "Exclude" is `@action async def exclude_end_user(v)` calling the store, a `<form>` in
end_user.html and a line in `common.NOTICES`.
"""

from __future__ import annotations

from typing import Any

from .end_users import (
    edit_end_user,
    end_user_page,
    exclude_end_user,
    organization_assets,
    organization_page,
    organizations_page,
    unlock_end_user_field,
)
from .runs import confirm_run, dismiss_run, resolve_review, review_page, runs_page, undo_preview, undo_run
from .sign_in import home, sign_in, sign_in_page, sign_out
from .tenants import (
    create_psa_tenant,
    map_psa,
    register_tenant,
    remove_tenant,
    rotate_secret,
    tenant_page,
    tenants_page,
    unmap_psa,
)
from .user_sync import disable_user_sync, preview_user_sync, psa_page, save_user_sync

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
