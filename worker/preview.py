"""The filter preview: what applying proposed filters would do, decided by the code that decides the sync.

An Organization's sync (`SyncEngine.org_sync`) reads the tenant mirror in chunks of `worker.sync.CHUNK` users
in id order, loads the End Users those users are linked to or share an email with, and lets `reconcile` decide.
The preview does the same reads with the same store functions and the same `reconcile`, with the proposed
filters in the Organization's context, and writes nothing: `worker.core.preview.Written` stands in for the
writes of earlier chunks, `Tally` counts the plans as the sync counts its run. So whatever the sync learns to
decide (exclusions, locked fields …) the preview answers the same way without a change here.

Reads run in one read-only REPEATABLE READ transaction (one snapshot of mirror and End Users) on their own
connection, a chunk or two ahead of the decisions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from worker import sync as engine
from worker.core.filters import compile_filters
from worker.core.model import Filters, MirrorUser, StoredEndUser
from worker.core.preview import Tally, Written
from worker.core.projection import email_keys
from worker.core.reconcile import reconcile
from worker.graph import prefetch
from worker.store import Pool
from worker.store import sync as store

_Chunk = tuple[list[MirrorUser], dict[str, StoredEndUser], dict[str, list[StoredEndUser]]]


async def preview(pool: Pool, *, tenant_id: str, organization_id: str, filters: Filters) -> dict[str, Any]:
    """The preview of `filters` for an Organization syncing from `tenant_id` (CONTRACTS.md shape)."""
    async with pool.acquire() as conn:
        org = await store.org_context_with(conn, tenant_id, organization_id, filters)
    written, tally, in_scope = Written(org), Tally(), compile_filters(filters)
    async for users, linked, by_email in prefetch(_chunks(pool, tenant_id, organization_id, filters), depth=2):
        by_email = written.over(by_email, {k for u in users for k in email_keys(u)})
        plan = reconcile(users, org=org, linked=linked, by_email=by_email)
        written.record(plan, linked=linked, by_email=by_email)
        tally.add(plan, users, in_scope=in_scope)
    return {
        "microsoft_tenant_id": tenant_id,
        "matching": tally.matching,
        **tally.counts,
        "samples": tally.samples,
        "warnings": ["these filters select nobody"] if tally.matching == 0 else [],
    }


async def _chunks(pool: Pool, tenant_id: str, organization_id: str, filters: Filters
                  ) -> AsyncIterator[_Chunk]:
    """The sync's chunks of mirror users (`_project_all`), each with the End Users `reconcile` needs."""
    with_groups = filters.groups != "all"
    async with pool.acquire() as reader, reader.transaction(isolation="repeatable_read", readonly=True):
        # As the sync: an Organization without End Users has none to look up (what earlier chunks would
        # create is laid over by `Written`).
        lookup = await store.has_end_users(reader, organization_id)
        after = ""
        while users := await store.mirror_users_after(
                reader, tenant_id, after, limit=engine.CHUNK, with_groups=with_groups):
            linked, by_email = ({}, {}) if not lookup else await store.load_end_users(
                reader, organization_id=organization_id, tenant_id=tenant_id, users=users)
            yield users, linked, by_email
            after = users[-1].id
