"""SQL of `GET …/user-sync/explain`: the facts about one Entra user and one Organization that the sync's
loaders (`worker.store.tenants`, `worker.store.mirror`, `worker.store.sync_writes`) do not already give.

Emails compare as the sync compares them: trimmed and lower-cased, mail or a non-guest UPN.
"""

from __future__ import annotations

from typing import Any

from worker.core.model import Filters, StoredEndUser
from worker.store import Conn
from worker.store.end_users import END_USER_SELECT, stored_end_user
from worker.store.tenants import filters_from_json


async def sync_settings(conn: Conn, organization_id: str) -> tuple[str, Filters | None]:
    """The Organization's user-sync status (`not_set_up` without a row) and filters."""
    row = await conn.fetchrow(
        "SELECT status, filters FROM org_user_syncs WHERE organization_id = $1::uuid", organization_id)
    if row is None:
        return "not_set_up", None
    return str(row["status"]), filters_from_json(row["filters"])


async def users_with_email(conn: Conn, tenant_id: str, email: str) -> list[str]:
    """Mirror users of the tenant whose mail or non-guest UPN is `email`, by id."""
    rows = await conn.fetch(
        "SELECT id FROM entra_users WHERE tenant_id = $1 AND (lower(btrim(mail)) = $2"
        " OR (lower(btrim(user_principal_name)) = $2 AND position('#ext#' in $2) = 0)) ORDER BY id",
        tenant_id, email.strip().lower(),
    )
    return [r[0] for r in rows]


async def end_user_by_email(conn: Conn, organization_id: str, email: str) -> StoredEndUser | None:
    row = await conn.fetchrow(
        END_USER_SELECT + " WHERE e.organization_id = $1::uuid AND lower(e.email) = $2 AND e.email IS NOT NULL",
        organization_id, email.strip().lower(),
    )
    return stored_end_user(row) if row is not None else None


async def linked_end_user(conn: Conn, organization_id: str, tenant_id: str, object_id: str) -> StoredEndUser | None:
    row = await conn.fetchrow(
        END_USER_SELECT + " WHERE e.organization_id = $1::uuid AND e.entra_tenant_id = $2"
        " AND e.entra_object_id = $3", organization_id, tenant_id, object_id,
    )
    return stored_end_user(row) if row is not None else None


async def open_review(conn: Conn, organization_id: str, tenant_id: str, object_id: str) -> tuple[str, str] | None:
    row = await conn.fetchrow(
        "SELECT id::text, reason FROM review_items WHERE organization_id = $1::uuid AND entra_tenant_id = $2"
        " AND entra_object_id = $3 AND status = 'open'", organization_id, tenant_id, object_id,
    )
    return (row[0], row[1]) if row is not None else None


def describe_end_user(e: StoredEndUser | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {"id": e.id, "sync_state": e.sync_state, "sync_state_reason": e.sync_state_reason,
            "email": e.fields.get("email"), "entra_object_id": e.entra_object_id}
