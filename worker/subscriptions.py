"""Graph subscriptions of each tenant: created while an Organization of it syncs, renewed well before they
lapse, recreated when Graph no longer knows them, deleted when nothing of the tenant syncs any more."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from schemas.client_state import client_state_for
from worker.config import Settings
from worker.graph import GraphClients, GraphError, GraphNotFound, TenantGraph
from worker.store import sync as store

log = structlog.get_logger(__name__)

RESOURCES = ("users", "groups")


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


class SubscriptionManager:
    def __init__(self, *, pool: asyncpg.Pool, graph: GraphClients, settings: Settings) -> None:
        self._pool = pool
        self._graph = graph
        self._settings = settings

    async def _client(self, conn: asyncpg.Connection, tenant_id: str) -> TenantGraph | None:
        creds = await store.tenant_credentials(conn, tenant_id)
        return self._graph.for_tenant(creds) if creds else None

    async def reconcile_tenant(self, tenant_id: str) -> dict[str, int]:
        """Bring the tenant's subscriptions to what its Organizations need; returns what was done."""
        async with self._pool.acquire() as conn:
            graph = await self._client(conn, tenant_id)
            if graph is None:
                return {}
            wanted = tenant_id in await store.tenants_with_enabled_sync(conn)
            existing = {r["resource"]: r for r in await store.subscriptions_of(conn, tenant_id)}
            done = {"created": 0, "renewed": 0, "kept": 0, "deleted": 0, "failed": 0}
            for resource in RESOURCES:
                row = existing.get(resource)
                try:
                    if not wanted:
                        if row:
                            await graph.delete_subscription(row["id"])
                            await store.forget_subscription(conn, row["id"])
                            done["deleted"] += 1
                        continue
                    done[await self._keep(conn, graph, tenant_id, resource, row)] += 1
                except GraphError as exc:
                    done["failed"] += 1
                    log.warning("subscription.failed", tenant_id=tenant_id, resource=resource,
                                status=exc.status, code=exc.code, error=exc.message)
            log.info("subscriptions.reconciled", tenant_id=tenant_id, wanted=wanted, **done)
            return done

    async def _keep(
        self, conn: asyncpg.Connection, graph: TenantGraph, tenant_id: str, resource: str,
        row: asyncpg.Record | None,
    ) -> str:
        now = datetime.now(UTC)
        expiry = now + timedelta(minutes=self._settings.sync.subscription_lifetime_min)
        if row is not None:
            if row["expires_at"] > now + timedelta(minutes=self._settings.sync.renew_before_min):
                return "kept"
            try:
                sub = await graph.renew_subscription(row["id"], expiration=_iso(expiry))
                await self._save(conn, tenant_id, resource, sub.id, sub.notification_url or row["notification_url"],
                                 expiry)
                return "renewed"
            except GraphNotFound:
                await store.forget_subscription(conn, row["id"])
        await self.create(conn, graph, tenant_id, resource, expiry)
        return "created"

    async def create(
        self, conn: asyncpg.Connection, graph: TenantGraph, tenant_id: str, resource: str, expiry: datetime
    ) -> None:
        base = self._settings.webhook.public_url.rstrip("/")
        secret = self._settings.webhook.secret.get_secret_value()
        sub = await graph.create_subscription(
            resource=resource, notification_url=f"{base}/notifications", lifecycle_url=f"{base}/lifecycle",
            client_state=client_state_for(tenant_id, secret), expiration=_iso(expiry),
        )
        await self._save(conn, tenant_id, resource, sub.id, f"{base}/notifications", expiry)

    async def _save(
        self, conn: asyncpg.Connection, tenant_id: str, resource: str, sub_id: str, url: str, expiry: datetime
    ) -> None:
        await store.save_subscription(
            conn, tenant_id=tenant_id, subscription_id=sub_id, resource=resource,
            change_type="updated,deleted", notification_url=url, expires_at=expiry,
        )

    async def reauthorize(self, tenant_id: str, subscription_id: str) -> bool:
        """Answer `reauthorizationRequired`; False when Graph no longer knows the subscription."""
        async with self._pool.acquire() as conn:
            graph = await self._client(conn, tenant_id)
            if graph is None:
                return True
            try:
                await graph.reauthorize_subscription(subscription_id)
                return True
            except GraphNotFound:
                await store.forget_subscription(conn, subscription_id)
                return False

    async def forget(self, subscription_id: str) -> None:
        async with self._pool.acquire() as conn:
            await store.forget_subscription(conn, subscription_id)
