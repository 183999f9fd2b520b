"""`GET /organizations/{id}/user-sync/explain`: why an Entra user is (or is not) an End User, and what the next
sync would do about it.

Facts come from the store (the sync's own loaders where the sync has one); the verdicts from the pure core:
`filters.explain` per section, `reconcile` for what the next sync would do with this one user, and
`core.explain` for the notes on the End User's state. A user is found by object id, or by email (the
Organization's End User holding it, else the mirror users whose mail or UPN it is: several is a 409).
"""

from __future__ import annotations

from typing import Any

import msgspec

from worker.core.explain import Facts, explain
from worker.core.model import MirrorUser, Plan, StoredEndUser
from worker.core.reconcile import reconcile
from worker.store import Conn, Pool, holds, mirror, sync_writes, tenants
from worker.store import explain as store
from worker.store.admin import Conflict, NotFound


async def explain_user(
    pool: Pool, *, organization_id: str, tenant_id: str, entra_object_id: str | None = None,
    email: str | None = None,
) -> dict[str, Any]:
    """The explanation for the user named by exactly one of `entra_object_id` and `email`."""
    async with pool.acquire() as conn:
        status, filters = await store.sync_settings(conn, organization_id)
        object_id, asked = entra_object_id, None
        if email is not None:
            object_id, asked = await _by_email(conn, organization_id, tenant_id, email)
        users = await mirror.load_mirror_users(conn, tenant_id, [object_id]) if object_id else []
        user = users[0] if users else None
        end_user = asked
        if object_id is not None:
            end_user = await store.linked_end_user(conn, organization_id, tenant_id, object_id) or asked
        if user is None and end_user is None:
            raise NotFound(f"no Entra user {entra_object_id or email} in the Organization's tenant, and no End User")
        review = await store.open_review(conn, organization_id, tenant_id, object_id) if object_id else None
        held_run = await holds.held_run_holding(conn, organization_id, object_id) if object_id else None
        plan = None
        if user is not None and filters is not None and status == "enabled":
            plan = await _next_sync(conn, organization_id, tenant_id, user, filters)
    facts = Facts(user=user, filters=filters, sync_status=status, end_user=end_user, review=review,
                  held_run_id=held_run, next_sync=plan)
    return {
        "organization_id": organization_id, "microsoft_tenant_id": tenant_id,
        "entra_object_id": object_id, "entra_user": _describe(user), "sync_status": status,
        "end_user": store.describe_end_user(end_user), **explain(facts),
    }


async def _by_email(conn: Conn, organization_id: str, tenant_id: str, email: str
                    ) -> tuple[str | None, StoredEndUser | None]:
    """The Entra user an email names: the one linked to the End User holding it, else the only mirror user
    with that address."""
    end_user = await store.end_user_by_email(conn, organization_id, email)
    if end_user is not None and end_user.entra_object_id and end_user.entra_tenant_id == tenant_id:
        return end_user.entra_object_id, end_user
    ids = await store.users_with_email(conn, tenant_id, email)
    if len(ids) > 1:
        raise Conflict(f"several Entra users have the email {email} ({', '.join(ids)}): ask by entra_object_id")
    # An unlinked End User with the email is the one a newcomer would adopt; one linked to someone else (here
    # or in another tenant) is not this user's, and `next_sync` says what holding the email means.
    unlinked = end_user if end_user is not None and end_user.entra_object_id is None else None
    return (ids[0] if ids else None), unlinked


async def _next_sync(conn: Conn, organization_id: str, tenant_id: str, user: MirrorUser, filters: Any) -> Plan:
    """What the sync would decide for this user now: its own loaders and `reconcile`, for this one user."""
    org = await tenants.org_context_with(conn, tenant_id, organization_id, filters)
    linked, by_email = await sync_writes.load_end_users(
        conn, organization_id=organization_id, tenant_id=tenant_id, users=[user])
    return reconcile([user], org=org, linked=linked, by_email=by_email)


def _describe(user: MirrorUser | None) -> dict[str, Any] | None:
    if user is None:
        return None
    keep = ("display_name", "mail", "user_principal_name", "user_type", "department", "office_location",
            "account_enabled", "removed")
    data = msgspec.to_builtins(user)
    return {k: v for k, v in zip(MirrorUser.__struct_fields__, data, strict=True) if k in keep}
