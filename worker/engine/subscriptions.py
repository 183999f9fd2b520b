"""Graph subscriptions of each tenant: created while an Organization of it syncs, renewed well before they
lapse, recreated when Graph no longer knows them, deleted when nothing of the tenant syncs any more.

Graph is the truth: each reconciliation lists the tenant's subscriptions, so one that Graph dropped (expired,
deleted by an administrator) is recreated at once rather than at its renewal time, and one that Graph has
but we never recorded (a crash between create and save) is deleted instead of doubling every notification.
Reconciliations of one tenant are serialised across replicas by an advisory lock (the lifecycle and command
consumers may ask for one at the same moment). This module never touches the tenant mirror or End Users.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import structlog

from schemas.client_state import client_state_for
from worker.config import Settings
from worker.graph import GraphClients, GraphError, GraphNotFound, GraphTransient, Subscription, TenantGraph
from worker.store import Conn, Pool, subscriptions, tenants

log = structlog.get_logger(__name__)

RESOURCES = ("users", "groups")
CHANGE_TYPE = "updated,deleted"


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def _parse(value: str, default: datetime) -> datetime:
    """Graph's `expirationDateTime` (7 fractional digits, `Z`); `default` when absent or unreadable."""
    try:
        return datetime.fromisoformat(value).astimezone(UTC) if value else default
    except ValueError:
        return default


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SubscriptionManager:
    def __init__(
        self, *, pool: Pool, graph: GraphClients, settings: Settings,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._pool = pool
        self._graph = graph
        self._settings = settings
        self._now = now  # Graph's clock, as far as we can tell; tests pass the simulator's
        base = settings.webhook.public_url.rstrip("/")
        self._notification_url = f"{base}/notifications"
        self._lifecycle_url = f"{base}/lifecycle"

    @asynccontextmanager
    async def _client(self, conn: Conn, tenant_id: str) -> AsyncIterator[TenantGraph | None]:
        """A Graph client for the tenant's credential as it is now (None when the tenant is not registered)."""
        creds = await tenants.tenant_credentials(conn, tenant_id)
        if creds is None:
            yield None
            return
        async with self._graph.lease(creds) as graph:
            yield graph

    async def reconcile_tenant(self, tenant_id: str) -> dict[str, int]:
        """Bring the tenant's subscriptions to what its Organizations need; returns what was done.

        A transient Graph failure is raised (the command is retried); any other failure of one resource is
        logged and counted, and the hourly renewal tries again.
        """
        async with self._pool.acquire() as conn:
            lock = tenants.subscriptions_lock(tenant_id)  # its own key: never waits for a running resync
            await tenants.lock_tenant(conn, lock)
            try:
                async with self._client(conn, tenant_id) as graph:
                    return await self._reconcile(conn, graph, tenant_id) if graph is not None else {}
            finally:
                await tenants.unlock_tenant(conn, lock)

    async def _reconcile(self, conn: Conn, graph: TenantGraph, tenant_id: str) -> dict[str, int]:
        wanted = await tenants.has_enabled_sync(conn, tenant_id)
        every = {s.id: s for s in await graph.list_subscriptions()}
        live = {i: s for i, s in every.items() if s.notification_url == self._notification_url}
        rows = await subscriptions.subscriptions_of(conn, tenant_id)
        done = dict.fromkeys(("created", "renewed", "kept", "deleted", "lost", "orphans", "failed"), 0)
        for row in rows:
            if row["id"] not in live:  # expired or deleted on Graph's side, or made for an old public URL
                if row["id"] in every:
                    await graph.delete_subscription(row["id"])
                await subscriptions.forget_subscription(conn, row["id"])
                done["lost"] += 1
        known = {r["id"] for r in rows if r["id"] in live}
        for resource in RESOURCES:
            mine = [s for s in live.values() if s.resource.strip("/").lower() == resource]
            keep = next((s for s in mine if s.id in known), None) if wanted else None
            try:
                for extra in (s for s in mine if s is not keep):
                    await graph.delete_subscription(extra.id)
                    await subscriptions.forget_subscription(conn, extra.id)
                    done["deleted" if extra.id in known else "orphans"] += 1
                if wanted:
                    done[await self._keep(conn, graph, tenant_id, resource, keep)] += 1
            except GraphTransient:
                raise
            except GraphError as exc:
                done["failed"] += 1
                log.warning("subscription.failed", tenant_id=tenant_id, resource=resource,
                            status=exc.status, code=exc.code, error=exc.message)
        log.info("subscriptions.reconciled", tenant_id=tenant_id, wanted=wanted, **done)
        return done

    async def _keep(
        self, conn: Conn, graph: TenantGraph, tenant_id: str, resource: str, sub: Subscription | None,
    ) -> str:
        now = self._now()
        expiry = now + timedelta(minutes=self._settings.sync.subscription_lifetime_min)
        if sub is not None:
            expires_at = _parse(sub.expiration_date_time, now)
            if expires_at > now + timedelta(minutes=self._settings.sync.renew_before_min):
                return "kept"
            try:
                renewed = await graph.renew_subscription(sub.id, expiration=_iso(expiry))
                await self._save(conn, tenant_id, resource, renewed, expiry)
                return "renewed"
            except GraphNotFound:
                await subscriptions.forget_subscription(conn, sub.id)
        await self.create(conn, graph, tenant_id, resource, expiry)
        return "created"

    async def create(
        self, conn: Conn, graph: TenantGraph, tenant_id: str, resource: str, expiry: datetime
    ) -> None:
        secret = self._settings.webhook.secret.get_secret_value()
        sub = await graph.create_subscription(
            resource=resource, notification_url=self._notification_url, lifecycle_url=self._lifecycle_url,
            client_state=client_state_for(tenant_id, secret), expiration=_iso(expiry),
        )
        await self._save(conn, tenant_id, resource, sub, expiry)

    async def _save(
        self, conn: Conn, tenant_id: str, resource: str, sub: Subscription, expiry: datetime
    ) -> None:
        await subscriptions.save_subscription(
            conn, tenant_id=tenant_id, subscription_id=sub.id, resource=resource, change_type=CHANGE_TYPE,
            notification_url=sub.notification_url or self._notification_url,
            expires_at=_parse(sub.expiration_date_time, expiry),
        )

    async def reauthorize(self, tenant_id: str, subscription_id: str) -> bool:
        """Answer `reauthorizationRequired`; False when Graph no longer knows the subscription.

        A subscription recorded for another tenant is left alone (True: nothing to recreate). Reauthorizing it
        as this tenant would fail with 404 and make us forget the other tenant's subscription.
        """
        async with self._pool.acquire() as conn:
            owner = await subscriptions.subscription_tenant(conn, subscription_id)
            if owner is not None and owner.lower() != tenant_id.lower():
                log.warning("subscription.foreign_lifecycle", tenant_id=tenant_id, subscription_id=subscription_id,
                            owner_tenant_id=owner, lifecycle_event="reauthorizationRequired")
                return True
            async with self._client(conn, tenant_id) as graph:
                if graph is None:
                    return True
                try:
                    await graph.reauthorize_subscription(subscription_id)
                    return True
                except GraphNotFound:
                    await subscriptions.forget_subscription(conn, subscription_id)
                    return False

    async def record_notifications(self, tenant_id: str, subscription_ids: Iterable[str], count: int = 0) -> None:
        """`count` change notifications of these subscriptions were processed: stamp the tenant and each
        subscription, and count them in the tenant's notifications per hour (at least one per subscription)."""
        ids = list(subscription_ids)
        async with self._pool.acquire() as conn, conn.transaction():
            await subscriptions.record_tenant_status(conn, tenant_id, notification=True)
            await subscriptions.touch_subscriptions(conn, tenant_id, ids)
            await subscriptions.count_notifications(conn, tenant_id, max(count, len(ids)))

    async def forget(self, subscription_id: str) -> None:
        async with self._pool.acquire() as conn:
            await subscriptions.forget_subscription(conn, subscription_id)
