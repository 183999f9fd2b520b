"""The sync engine: fetch → decide → apply, for one tenant at a time.

One write path for everything (notifications, the hourly resync, an Organization's initial sync):
Graph delta pages → tenant mirror (changed users flagged in `entra_user_dirty`) → each enabled Organization's filters
and `reconcile` → End Users. The delta link is saved only after the pages it covers are in the mirror, and a
mirror row's flag is cleared in the same transaction as the End User writes it caused, so a crash anywhere
loses nothing and a replay writes nothing.

`SyncEngine` is the facade the consumers call: each unit of work takes the tenant's lock, pulls the mirror
(`worker.engine.pull`), projects it (`worker.engine.projection`) and ends its runs (`worker.engine.runs`).
Work for one tenant is serialised across replicas by a PostgreSQL advisory lock.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import structlog

from worker.config import Settings
from worker.engine.projection import project_all, project_dirty
from worker.engine.pull import MirrorPull
from worker.engine.runs import OrgRun, totals
from worker.engine.spares import Spares
from worker.graph import GraphClients
from worker.store import Conn, Pool, mirror, subscriptions, sync_writes, tenants

log = structlog.get_logger(__name__)


class UnknownTenant(Exception):
    """Work arrived for a Microsoft tenant that is not registered: nothing to do, nothing to retry."""


class SyncEngine:
    """The units of work of the user sync, each for one tenant under its lock."""

    def __init__(self, *, pool: Pool, graph: GraphClients, settings: Settings) -> None:
        self._pool = pool
        self._graph = graph
        self._settings = settings
        self._spares = Spares(pool)

    async def sync_changes(self, tenant_id: str, *, groups: bool = False) -> dict[str, int]:
        """After change notifications: one delta call from the stored link (and one for groups when a group
        changed), then project what changed."""
        async with self._tenant(tenant_id) as (conn, pull):
            started = time.monotonic()
            changed = await pull.users()
            if groups:
                await pull.groups()
            runs = await self._project_dirty(conn, tenant_id, kind="delta", record_always=False,
                                             warnings=pull.scrubbed_warnings())
            await subscriptions.record_tenant_status(conn, tenant_id, delta=True)
            self._log("sync.delta", tenant_id, started, changed, runs)
            return totals(runs)

    async def resync(self, tenant_id: str) -> dict[str, int]:
        """The hourly full resync: a complete listing (a fresh delta round), absences, projection."""
        async with self._tenant(tenant_id) as (conn, pull):
            started = time.monotonic()
            changed, warnings = await pull.everything()
            runs = await self._project_dirty(conn, tenant_id, kind="resync", record_always=True, warnings=warnings)
            await subscriptions.record_tenant_status(conn, tenant_id, full=True, delta=True, resync=True)
            self._log("sync.resync", tenant_id, started, changed, runs)
            return totals(runs)

    async def org_sync(
        self, tenant_id: str, organization_id: str, run_id: str | None, *, confirm_deactivations: bool = False
    ) -> dict[str, int]:
        """An Organization's initial sync after it was enabled or its filters edited: every mirror user.

        `confirm_deactivations` is the operator's answer to a held run: apply what the guard held.
        """
        async with self._tenant(tenant_id) as (conn, pull):
            started = time.monotonic()
            # Other Organizations get what changed; this one gets every user further below.
            # Organizations about to get a whole-Organization projection (this one, and any other with an
            # org-sync queued) are skipped, so their runs count what they created.
            skip = {organization_id} | await sync_writes.orgs_awaiting_org_sync(conn, tenant_id)
            changed, warnings, listed_all = await self._pull_for_org_sync(conn, pull, tenant_id, skip)
            await subscriptions.record_tenant_status(conn, tenant_id, delta=True, full=listed_all)
            await self._project_dirty(conn, tenant_id, kind="delta", record_always=False, skip=skip)
            orgs = await tenants.org_contexts(conn, tenant_id, organization_id)
            if not orgs:
                if run_id:
                    await sync_writes.finish_run(conn, run_id, status="failed", counts={},
                                               error="user sync is not enabled for this Organization")
                return {}
            run = OrgRun(orgs[0], kind="org-sync", run_id=run_id, warnings=warnings, confirmed=confirm_deactivations)
            await project_all(conn, self._spares, tenant_id, run, ratio=self._ratio)
            self._log("sync.org", tenant_id, started, changed, [run])
            return dict(run.counts)

    @staticmethod
    async def _pull_for_org_sync(
        conn: Conn, pull: MirrorPull, tenant_id: str, skip: set[str]
    ) -> tuple[int, list[str], bool]:
        """An org-sync's pull: the changes since the stored link, or everything for a tenant seen for the first
        time (no users delta link yet). Returns the mirror rows changed, the warnings, and whether it was
        everything."""
        if await mirror.get_delta_link(conn, tenant_id, "users") is not None:
            changed = await pull.users()
            warnings = await pull.groups() + pull.scrubbed_warnings()
            return changed, warnings, False
        # A tenant seen for the first time: everything now, not at the next hourly resync. Its users need flags
        # only for an Organization that will not project them all anyway (one enabled later gets an org-sync of
        # its own, after this one: the tenant lock orders them).
        others = [o for o in await tenants.org_contexts(conn, tenant_id) if o.organization_id not in skip]
        changed, warnings = await pull.everything(flag_new=bool(others))
        return changed, warnings, True

    async def project_organization(self, tenant_id: str, organization_id: str, run_id: str | None = None, *,
                                   confirm_deactivations: bool = False) -> dict[str, int]:
        """What `org_sync` does after its Graph pull: every mirror user projected into one Organization's End
        Users, under the tenant lock, with its current filters. For callers that fill the mirror themselves
        (the preview's property test applies the filters it previewed this way)."""
        async with self._pool.acquire() as conn:
            await tenants.lock_tenant(conn, tenant_id)
            try:
                orgs = await tenants.org_contexts(conn, tenant_id, organization_id)
                if not orgs:
                    raise ValueError(f"user sync is not enabled for Organization {organization_id}")
                run = OrgRun(orgs[0], kind="org-sync", run_id=run_id, confirmed=confirm_deactivations)
                await project_all(conn, self._spares, tenant_id, run, ratio=self._ratio)
                return dict(run.counts)
            finally:
                await tenants.unlock_tenant(conn, tenant_id)

    async def record_error(self, tenant_id: str, error: str) -> None:
        """Make a tenant-level failure (e.g. refused credentials) visible in its sync status."""
        async with self._pool.acquire() as conn:
            await subscriptions.record_tenant_status(conn, tenant_id, error=error)

    async def fail_runs(self, tenant_id: str, run_ids: Sequence[str], error: str, *, record: bool = True) -> None:
        """End these queued or running runs `failed` with `error` (their work was refused or given up), and
        show the error in the tenant's sync status unless `record` is False."""
        async with self._pool.acquire() as conn:
            if run_ids:
                await sync_writes.fail_runs(conn, run_ids, error)
            if record:
                await subscriptions.record_tenant_status(conn, tenant_id, error=error)

    @property
    def _ratio(self) -> float:
        return self._settings.sync.deactivation_guard_ratio

    @asynccontextmanager
    async def _tenant(self, tenant_id: str) -> AsyncIterator[tuple[Conn, MirrorPull]]:
        """The tenant's lock, and a pull through a Graph client for its credential as it is now: read (one
        primary-key lookup) once the lock is held, so an operator's credential change is used by the next unit
        of work."""
        async with self._pool.acquire() as conn:
            await tenants.lock_tenant(conn, tenant_id)
            try:
                # A run an earlier unit of work left `running` (it could not close it) is ended now: nothing
                # else holds the lock, so nothing is still working on it.
                if abandoned := await sync_writes.end_abandoned_runs(conn, tenant_id):
                    log.warning("sync.abandoned_runs_ended", tenant_id=tenant_id, run_ids=abandoned)
                creds = await tenants.tenant_credentials(conn, tenant_id)
                if creds is None:
                    raise UnknownTenant(tenant_id)
                async with self._graph.lease(creds) as graph:
                    yield conn, MirrorPull(conn, graph, tenant_id, self._spares)
            finally:
                await tenants.unlock_tenant(conn, tenant_id)

    async def _project_dirty(
        self, conn: Conn, tenant_id: str, *, kind: str, record_always: bool, skip: set[str] | None = None,
        warnings: Sequence[str] = (),
    ) -> list[OrgRun]:
        return await project_dirty(conn, self._spares, tenant_id, kind=kind, record_always=record_always,
                                   ratio=self._ratio, skip=skip or frozenset(), warnings=warnings)

    def _log(self, event: str, tenant_id: str, started: float, changed: int, runs: Sequence[OrgRun]) -> None:
        log.info(event, tenant_id=tenant_id, mirror_changed=changed, organizations=len(runs),
                 duration_ms=round((time.monotonic() - started) * 1000, 1), **totals(runs))
