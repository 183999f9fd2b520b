"""The admin API's view of PostgreSQL: `AdminStore`, one class made of the resource modules' queries.

Each resource has its own module: Microsoft tenants (`microsoft_tenants`), their sync status
(`tenant_status`), PSA tenants, Organizations and their mapping (`mapping`), an Organization's user sync
(`user_sync`) and its filter options (`filter_options`), End Users and Assets (`end_user_queries`), runs
(`runs`) and review items (`reviews`); the errors and row conversions they share are `records`.

These modules return JSON-ready dicts and raise `NotFound`, `Conflict` or `InvalidReference`; the HTTP layer
maps those to status codes once. They never talk to Kafka: the caller commits here first and enqueues after,
so the worker never sees a command before the row it refers to. Every change that touches several rows runs
in one transaction.

jsonb columns are read as `::text` and written as `$n::text::jsonb`, so these queries work on a pool with or
without a jsonb codec; `review_mirror_user` reuses the sync path's loader, which needs the codecs of
`worker.store.pool.create_pool`.
"""

from __future__ import annotations

from worker.store.end_user_queries import AssetQueries, EndUserQueries
from worker.store.filter_options import FilterOptionQueries
from worker.store.mapping import MappingQueries
from worker.store.microsoft_tenants import MicrosoftTenantQueries

# The errors' home is `records`; named here too for callers that import them with the store (worker/explain.py).
from worker.store.records import Conflict, InvalidReference, NotFound, StoreError
from worker.store.reviews import ReviewQueries
from worker.store.runs import Enqueued, Outcome, RunQueries
from worker.store.tenant_status import TenantStatusQueries
from worker.store.user_sync import UserSyncQueries

__all__ = ["AdminStore", "Conflict", "Enqueued", "InvalidReference", "NotFound", "Outcome", "StoreError"]


class AdminStore(
    MicrosoftTenantQueries, TenantStatusQueries, MappingQueries, UserSyncQueries, FilterOptionQueries,
    EndUserQueries, AssetQueries, RunQueries, ReviewQueries,
):
    """The admin API's view of PostgreSQL. Stateless apart from the pool it is given."""

    async def ping(self) -> None:
        await self._pool.fetchval("SELECT 1")
