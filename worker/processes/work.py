"""What the worker does with a batch of decoded messages: coalesced per tenant (`coalesce`), performed through
the sync engine and the subscription manager within a consumer's concurrency budget (`TenantWorkPerformer`).

Each tenant's outcome is its own (`worker/core/delivery.py` decides what follows from it): refused credentials
are recorded on the tenant and its runs and not retried; Graph throttling parks the tenant; transient trouble
(Graph 5xx, the broker, PostgreSQL away) is retried; anything else is retried, then dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field

import msgspec
import structlog

from schemas import messages
from worker import bus
from worker import store as db
from worker.core.delivery import DONE, Kind, Outcome
from worker.engine.subscriptions import SubscriptionManager
from worker.engine.sync import SyncEngine, UnknownTenant
from worker.graph import GraphAuthFailed, GraphForbidden, GraphThrottled, GraphTransient

log = structlog.get_logger(__name__)

TRANSIENT = (GraphTransient, bus.BusError, *db.TRANSIENT)  # db.TRANSIENT: OSError and TimeoutError included
YIELD_MAX_S = 10.0  # longest a tenant's commands wait for change notifications to get their budget


@dataclass
class TenantWork:
    """Everything one batch asks of one tenant, coalesced: N notifications become one delta call."""

    delta: bool = False
    groups: bool = False  # a group changed: walk groups delta too
    resync: bool = False
    renew: bool = False
    org_syncs: dict[str, str | None] = field(default_factory=dict)  # organization id -> run id
    confirmed: set[str] = field(default_factory=set)  # organizations whose held deactivations are confirmed
    reauthorize: set[str] = field(default_factory=set)
    recreate: bool = False
    notified: set[str] = field(default_factory=set)  # subscriptions whose change notifications these are
    notifications: int = 0  # how many change notifications (the tenant page's notifications per hour)


def coalesce(batch: Sequence[tuple[str, msgspec.Struct]]) -> dict[str, TenantWork]:
    """Group a batch of decoded messages into one TenantWork per tenant (pure)."""
    work: dict[str, TenantWork] = defaultdict(TenantWork)
    for _topic, msg in batch:
        if isinstance(msg, messages.ChangeNotification):
            work[msg.tenant_id].delta = True
            work[msg.tenant_id].groups |= msg.object_type == "group"
            work[msg.tenant_id].notified.add(msg.subscription_id)
            work[msg.tenant_id].notifications += 1
        elif isinstance(msg, messages.LifecycleNotification):
            w = work[msg.tenant_id]
            if msg.lifecycle_event == "reauthorizationRequired":
                w.reauthorize.add(msg.subscription_id)
            elif msg.lifecycle_event == "subscriptionRemoved":
                w.recreate = w.resync = True
            elif msg.lifecycle_event == "missed":
                w.resync = True
        elif isinstance(msg, messages.Command):
            w = work[msg.tenant_id]
            if msg.command == "resync":
                w.resync = True
            elif msg.command == "renew-subscriptions":
                w.renew = True
            elif msg.command == "org-sync" and msg.organization_id:
                w.org_syncs[msg.organization_id] = msg.run_id
                if msg.confirm_deactivations:
                    w.confirmed.add(msg.organization_id)
                w.renew = True  # an Organization just started syncing: its tenant needs subscriptions
    return dict(work)


class Backlog:
    """How many of one consumer's tenants wait for its concurrency budget; another consumer's work may hold
    back while any do (`TenantWorkPerformer`'s `yields_to`)."""

    def __init__(self) -> None:
        self.waiting = 0
        self._clear = asyncio.Event()
        self._clear.set()

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        self.waiting += 1
        self._clear.clear()
        try:
            yield
        finally:
            self.waiting -= 1
            if not self.waiting:
                self._clear.set()

    async def cleared(self, max_wait_s: float) -> None:
        """Return once nothing waits, or after `max_wait_s` whatever waits."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max_wait_s):
                await self._clear.wait()


class TenantWorkPerformer:
    """Performs each tenant's coalesced work through the engine and the subscription manager, within one
    concurrency budget (one per consumer, so notifications never wait behind resyncs).

    The worker's CPU is shared too: a wave of resyncs starves change notifications of the event loop even with
    budgets apart. So the commands' performer `yields_to` the notifications' `backlog`: it starts no tenant's
    work while notifications wait for their budget (each start for at most `YIELD_MAX_S`, so a sustained flood
    of changes slows the resyncs down without stopping them)."""

    def __init__(
        self, *, engine: SyncEngine, subscriptions: SubscriptionManager, max_parallel: int,
        backlog: Backlog | None = None, yields_to: Backlog | None = None,
    ) -> None:
        self._engine = engine
        self._subs = subscriptions
        self._limit = asyncio.Semaphore(max_parallel)
        self._backlog = backlog
        self._yields_to = yields_to

    @contextlib.asynccontextmanager
    async def _budget(self) -> AsyncIterator[None]:
        """A place in the budget: after any backlog this yields to, counted in this one's backlog meanwhile."""
        with self._backlog.entered() if self._backlog is not None else contextlib.nullcontext():
            await self._limit.acquire()
        try:
            if self._yields_to is not None:  # with the place taken: each start yields, not all at once
                await self._yields_to.cleared(YIELD_MAX_S)
            yield
        finally:
            self._limit.release()

    async def __call__(self, batch: Sequence[tuple[str, msgspec.Struct]]) -> dict[str, Outcome]:
        """Do the batch's work, tenants in parallel (bounded), each serially; returns each tenant's outcome.

        Never raises for a tenant's failure: each tenant's outcome is its own.
        """
        work = coalesce(batch)
        tenants = list(work)
        results = await asyncio.gather(*(self._tenant(t, work[t]) for t in tenants))
        return dict(zip(tenants, results, strict=True))

    async def give_up(self, tenant_id: str, batch: Sequence[tuple[str, msgspec.Struct]], error: str) -> None:
        """The work was dead-lettered: its runs end failed, the error shows in the tenant's status."""
        w = coalesce(batch).get(tenant_id, TenantWork())
        await self._engine.fail_runs(tenant_id, [r for r in w.org_syncs.values() if r], error)

    async def _tenant(self, tenant_id: str, w: TenantWork) -> Outcome:
        async with self._budget():
            runs = [r for r in w.org_syncs.values() if r]
            try:
                try:
                    await self._perform(tenant_id, w)
                except UnknownTenant:
                    log.warning("work.unknown_tenant", tenant_id=tenant_id)
                    await self._engine.fail_runs(tenant_id, runs, f"Microsoft tenant {tenant_id} is not registered",
                                                 record=False)
                except GraphForbidden as exc:
                    # Credentials refused, consent revoked or a licence gone: retrying cannot help; the error is
                    # shown on the tenant and its runs, and the hourly resync (or a credential change) tries again.
                    error = f"{exc.code}: {exc.message}" if isinstance(exc, GraphAuthFailed) else (
                        f"{exc.status} {exc.code}: {exc.message}")
                    log.error("work.refused", tenant_id=tenant_id, status=exc.status, code=exc.code, error=exc.message)
                    await self._engine.fail_runs(tenant_id, runs, error)
                    return Outcome(Kind.REFUSED, error)
            except GraphThrottled as exc:
                return Outcome(Kind.THROTTLED, str(exc), retry_after=exc.retry_after)
            except TRANSIENT as exc:
                return Outcome(Kind.TRANSIENT, repr(exc)[:500])
            except Exception as exc:  # a failure we cannot classify: retried, then dead-lettered
                log.exception("work.failed", tenant_id=tenant_id, error=repr(exc))
                return Outcome(Kind.FAILED, f"{type(exc).__name__}: {exc}"[:500])
            return DONE

    async def _perform(self, tenant_id: str, w: TenantWork) -> None:
        for sub_id in w.reauthorize:
            if not await self._subs.reauthorize(tenant_id, sub_id):
                w.recreate = True
        # Subscriptions first: changes made while the resync runs then arrive as notifications.
        if w.renew or w.recreate:
            await self._subs.reconcile_tenant(tenant_id)
        if w.resync:
            await self._engine.resync(tenant_id)
        elif w.delta:
            await self._engine.sync_changes(tenant_id, groups=w.groups)
        for org_id, run_id in w.org_syncs.items():
            await self._engine.org_sync(tenant_id, org_id, run_id, confirm_deactivations=org_id in w.confirmed)
        if w.notified:
            await self._subs.record_notifications(tenant_id, w.notified, w.notifications)

