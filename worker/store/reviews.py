"""Review items: the Entra users the sync could not match to one End User, and their resolution by an
operator (link an existing End User, or create one); either queues an `org-sync` when the user sync is
enabled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import asyncpg

from worker.core.model import END_USER_FIELDS, MirrorUser
from worker.store import Conn, end_users
from worker.store.mapping import lock_organization
from worker.store.mirror import load_mirror_users
from worker.store.records import Conflict, InvalidReference, PoolQueries, Row, dumps, one, record
from worker.store.runs import Enqueued, Outcome, queue_run
from worker.store.user_sync import REASON_SYNC_DISABLED

_ALREADY_LINKED = "another End User of the Organization is already linked to this Entra user"

_REVIEW_SELECT = """
SELECT r.id, r.organization_id, r.entra_tenant_id, r.entra_object_id, r.reason, r.candidate_ids, r.status,
       r.resolution::text AS resolution, r.created_at, r.resolved_at,
       (SELECT json_build_object('display_name', u.display_name, 'mail', u.mail,
                                 'user_principal_name', u.user_principal_name)
        FROM entra_users u WHERE u.tenant_id = r.entra_tenant_id AND u.id = r.entra_object_id
       )::text AS entra_user,
       coalesce((SELECT json_agg(json_build_object('id', e.id, 'first_name', e.first_name,
                                 'last_name', e.last_name, 'email', e.email, 'sync_state', e.sync_state)
                                 ORDER BY e.email)
                 FROM end_users e WHERE e.id = ANY (r.candidate_ids)), '[]')::text AS candidates
FROM review_items r
"""

# SQL forms of worker/core/filters.py's domains, so the options run as one statement over 100,000 users;


def review_record(row: Row) -> dict[str, Any]:
    out = record(row, json_fields=("resolution", "entra_user", "candidates"))
    out["candidate_ids"] = [str(c) for c in row["candidate_ids"]]
    return out


class ReviewQueries(PoolQueries):
    """Review items: listed, read, and resolved by linking or creating an End User."""

    async def list_review_items(
        self, *, organization_id: str | None = None, status: str | None = "open"
    ) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            _REVIEW_SELECT + " WHERE ($1::uuid IS NULL OR r.organization_id = $1)"
            " AND ($2::text IS NULL OR r.status = $2) ORDER BY r.created_at, r.id",
            organization_id, status,
        )
        return [review_record(r) for r in rows]

    async def get_review_item(self, review_id: str) -> dict[str, Any]:
        return review_record(await one(self._pool, f"review item {review_id}", _REVIEW_SELECT + " WHERE r.id = $1",
                                  review_id))

    async def review_mirror_user(self, review_id: str) -> MirrorUser | None:
        """The Entra user a review item is about, as the mirror holds it (None when gone)."""
        review = await self.get_review_item(review_id)
        async with self._pool.acquire() as conn:
            users = await load_mirror_users(
                cast(asyncpg.Connection, conn), review["entra_tenant_id"], [review["entra_object_id"]]
            )
        return users[0] if users else None

    async def resolve_review_link(self, review_id: str, end_user_id: str, *, email: str | None = None) -> Outcome:
        """Link an existing End User of the Organization to the review's Entra user, whose End User email is
        `email`. Refused when another End User holds that email: the sync could never give it to the linked
        one, and would open a review again at every change."""
        async with self._pool.acquire() as conn, conn.transaction():
            review, org = await _lock_open_review(conn, review_id)
            end_user = await conn.fetchrow(
                "SELECT id, entra_tenant_id, entra_object_id, sync_state FROM end_users"
                " WHERE id = $1 AND organization_id = $2 FOR UPDATE", end_user_id, review["organization_id"],
            )
            if end_user is None:
                raise InvalidReference("end_user_id", "no End User with this id in the review's Organization")
            target = (review["entra_tenant_id"], review["entra_object_id"])
            if end_user["entra_object_id"] is not None and (
                end_user["entra_tenant_id"], end_user["entra_object_id"]
            ) != target:
                raise Conflict("that End User is already linked to another Entra user")
            await _refuse_held_email(conn, review["organization_id"], email, besides=end_user["id"])
            state, reason = _linked_state(org)
            try:
                await end_users.link(conn, end_user["id"], tenant_id=target[0], object_id=target[1], state=state,
                                     reason=reason, old_state=end_user["sync_state"])
            except asyncpg.UniqueViolationError:
                raise Conflict(_ALREADY_LINKED) from None
            return await _finish_review(
                conn, review=review, org=org, end_user_id=str(end_user["id"]), action="link"
            )

    async def resolve_review_create(self, review_id: str, fields: Mapping[str, str | None]) -> Outcome:
        """Create a linked End User for the review's Entra user. Refused (409 naming the holder) when its email
        is taken: created without it, the End User would never be updated and every sync would open a new
        review about it."""
        async with self._pool.acquire() as conn, conn.transaction():
            review, org = await _lock_open_review(conn, review_id)
            values = {f: fields.get(f) for f in END_USER_FIELDS}
            await _refuse_held_email(conn, review["organization_id"], values["email"], besides=None)
            state, reason = _linked_state(org)
            try:
                new_id = await end_users.create_linked(
                    conn, review["organization_id"], tenant_id=review["entra_tenant_id"],
                    object_id=review["entra_object_id"], state=state, reason=reason, fields=values)
            except asyncpg.UniqueViolationError:
                raise Conflict(_ALREADY_LINKED) from None
            return await _finish_review(
                conn, review=review, org=org, end_user_id=str(new_id), action="create"
            )


# ---- helpers that run inside a caller's transaction ------------------------------------------------------

async def _lock_open_review(conn: Conn, review_id: str) -> tuple[asyncpg.Record, asyncpg.Record]:
    review = await one(
        conn, f"review item {review_id}",
        "SELECT id, organization_id, entra_tenant_id, entra_object_id, status FROM review_items"
        " WHERE id = $1 FOR UPDATE", review_id,
    )
    if review["status"] != "open":
        raise Conflict("this review item is already resolved")
    org = await lock_organization(conn, review["organization_id"])
    if org["microsoft_tenant_id"] != review["entra_tenant_id"]:
        raise Conflict(
            f"the review's Microsoft tenant {review['entra_tenant_id']} is no longer mapped"
            " to the Organization"
        )
    return review, org


async def _refuse_held_email(conn: Conn, organization_id: Any, email: str | None, *, besides: Any) -> None:
    """Conflict naming the End User (other than `besides`) that holds `email` in the Organization, if any."""
    if not email:
        return
    holder = await conn.fetchrow(
        "SELECT id, first_name, last_name, email, sync_state, entra_object_id FROM end_users"
        " WHERE organization_id = $1 AND lower(email) = lower($2) AND ($3::uuid IS NULL OR id <> $3)",
        organization_id, email.strip(), besides,
    )
    if holder is None:
        return
    name = " ".join(filter(None, (holder["first_name"], holder["last_name"]))) or "(no name)"
    linked = f", linked to Entra user {holder['entra_object_id']}" if holder["entra_object_id"] else ""
    raise Conflict(
        f"email {email} is held by End User {holder['id']} ({name}, {holder['sync_state']}{linked}): link that"
        " End User instead, or change its email first"
    )


def _linked_state(org: Row) -> tuple[str, str | None]:
    if org["user_sync_status"] == "enabled":
        return "synced", "linked by an operator"
    return "sync_disabled", REASON_SYNC_DISABLED


async def _finish_review(
    conn: Conn, *, review: asyncpg.Record, org: asyncpg.Record, end_user_id: str, action: str
) -> Outcome:
    await conn.execute(
        "UPDATE review_items SET status = 'resolved', resolved_at = now(), resolution = $2::text::jsonb"
        " WHERE id = $1", review["id"], dumps({"action": action, "end_user_id": end_user_id}),
    )
    runs: list[Enqueued] = []
    if org["user_sync_status"] == "enabled":
        runs.append(await queue_run(conn, organization_id=org["id"], tenant_id=review["entra_tenant_id"]))
    return Outcome(
        body={"review_item_id": str(review["id"]), "action": action, "end_user_id": end_user_id},
        runs=tuple(runs),
    )
