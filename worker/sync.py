"""The sync engine: fetch → decide → apply, for one tenant at a time.

One write path for everything (notifications, the hourly resync, an Organization's initial sync):
Graph delta pages → tenant mirror (changed users flagged in `entra_user_dirty`) → each enabled Organization's filters
and `reconcile` → End Users. The delta link is saved only after the pages it covers are in the mirror, and a
mirror row's flag is cleared in the same transaction as the End User writes it caused, so a crash anywhere
loses nothing and a replay writes nothing.

Work for one tenant is serialised across replicas by a PostgreSQL advisory lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence, Set
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import msgspec
import structlog

from worker.config import Settings
from worker.core.model import MirrorUser, OrgContext, Plan, StateChange, StoredEndUser
from worker.core.reconcile import hold_deactivations, reconcile
from worker.core.text import unstorable_warnings
from worker.enrich import Enricher
from worker.graph import DeltaTokenExpired, GraphClients, GraphForbidden, GraphUser, TenantGraph, prefetch
from worker.store import VALUE_REFUSALS, Conn, DeadlockDetected, Pool, UniqueViolation, enrichment, holds
from worker.store import sync as store
from worker.store.end_users import StaleRead

log = structlog.get_logger(__name__)

CHUNK = 2000
WRITE_BATCH = 2000  # mirror users written per transaction during a delta walk
SPARE_CONNECTION_WAIT_S = 0.5
# Pooled connections a spare never takes (a quarter of the pool, at most this many): during a wave of resyncs,
# other tenants' units of work (a change notification's delta) still find a connection at once instead of
# waiting for a listing to end. One tenant's resync on a pool of 4 still gets all three connections it uses.
SPARE_RESERVE = 2
MEMBER_BATCH = 5000  # memberships of a complete groups listing written per COPY
# A chunk's write refused for its values (`worker.store.VALUE_REFUSALS`) or stale reads: the chunk is written
# by halves and only the users PostgreSQL refuses are left out.
USER_REFUSALS: tuple[type[Exception], ...] = (*VALUE_REFUSALS, StaleRead)
# A chunk's write refused so is decided again from fresh reads and written once more (`_write_last_try`).
_DECIDE_AGAIN: tuple[type[Exception], ...] = (DeadlockDetected, *USER_REFUSALS)
REFUSALS_SHOWN = 20  # per run, refused users named in its warnings one by one; the rest are counted


class UnknownTenant(Exception):
    """Work arrived for a Microsoft tenant that is not registered: nothing to do, nothing to retry."""


@dataclass
class OrgRun:
    """Counts and state of one Organization's run within a unit of work."""

    org: OrgContext
    kind: str
    run_id: str | None = None
    record_always: bool = True
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("created", "updated", "unchanged", "out_of_scope", "stopped", "deactivated", "review", "excluded",
         "errors"), 0))
    pending_deactivations: list[StateChange] = field(default_factory=list)
    held: bool = False
    confirmed: bool = False  # the operator confirmed: deactivations bypass the guard
    warnings: list[str] = field(default_factory=list)
    recorded: bool = False  # the sync_runs row exists and is running
    stopped: bool = False  # the Organization stopped syncing from this tenant while the run went on

    def add(self, plan: Plan) -> None:
        self.counts["created"] += len(plan.creates)
        self.counts["updated"] += len(plan.updates)
        self.counts["unchanged"] += plan.unchanged
        # `stopped`: End Users this run moved out of scope (a preview's would_stop_updating); `out_of_scope`
        # also counts users that were out of scope already.
        stopped = sum(1 for c in plan.state_changes if c.sync_state == "out_of_scope")
        self.counts["stopped"] += stopped
        self.counts["out_of_scope"] += plan.out_of_scope + stopped
        self.counts["review"] += len(plan.reviews)
        self.counts["excluded"] += plan.excluded
        self.pending_deactivations.extend(plan.deactivations)

    @property
    def wrote(self) -> bool:
        """Whether the run did something worth a record. Deactivations are not counted here: `_finish` records
        a run that applies or holds them itself, and not one whose only news is a hold another run keeps."""
        c = self.counts
        return bool(c["created"] or c["updated"] or c["out_of_scope"] or c["review"] or c["errors"])

    def would_write(self, plan: Plan) -> bool:
        """`wrote`, once `plan` is added."""
        return self.wrote or bool(
            plan.creates or plan.updates or plan.out_of_scope or plan.reviews
            or any(c.sync_state == "out_of_scope" for c in plan.state_changes))

    def refused(self, refusals: Sequence[tuple[str, Exception]]) -> None:
        """Count users whose write PostgreSQL refused (left out of the run, kept flagged for the next sync) and
        name the first `REFUSALS_SHOWN` in the run's warnings (the log names every one)."""
        for object_id, exc in refusals:
            self.counts["errors"] += 1
            log.warning("sync.user_refused", tenant_id=self.org.tenant_id, organization_id=self.org.organization_id,
                        run_id=self.run_id, entra_object_id=object_id, error=_refusal(exc))
            if self.counts["errors"] <= REFUSALS_SHOWN:
                self.warnings.append(f"Entra user {object_id} was not written: PostgreSQL refused it ({_refusal(exc)});"
                                     " it stays flagged and is tried again at the next sync")
            elif self.counts["errors"] == REFUSALS_SHOWN + 1:
                self.warnings.append(f"more than {REFUSALS_SHOWN} Entra users were not written (see `errors`); the"
                                     " worker's log names each (sync.user_refused)")

    async def ensure_row(self, conn: Conn) -> str:
        if self.run_id is None or not self.recorded:
            self.run_id = await store.start_run(
                conn, kind=self.kind, tenant_id=self.org.tenant_id,
                organization_id=self.org.organization_id, run_id=self.run_id,
            )
            self.recorded = True
        return self.run_id


class SyncEngine:
    def __init__(self, *, pool: Pool, graph: GraphClients, settings: Settings) -> None:
        self._pool = pool
        self._graph = graph
        self._settings = settings
        self._spares = asyncio.Lock()

    # -- public units of work ----------------------------------------------------------------------------

    async def sync_changes(self, tenant_id: str, *, groups: bool = False) -> dict[str, int]:
        """After change notifications: one delta call from the stored link (and one for groups when a group
        changed), then project what changed."""
        async with self._tenant(tenant_id) as (conn, graph):
            started = time.monotonic()
            scrubbed: list[str] = []
            changed = await self._pull(conn, graph, tenant_id, full=False, scrubbed=scrubbed)
            if groups:
                await self._pull_groups(conn, graph, tenant_id, full=False)
            runs = await self._project_dirty(conn, tenant_id, kind="delta", record_always=False,
                                             warnings=unstorable_warnings(scrubbed))
            await store.record_tenant_status(conn, tenant_id, delta=True)
            self._log("sync.delta", tenant_id, started, changed, runs)
            return _totals(runs)

    async def resync(self, tenant_id: str) -> dict[str, int]:
        """The hourly full resync: a complete listing (a fresh delta round), absences, projection."""
        async with self._tenant(tenant_id) as (conn, graph):
            started = time.monotonic()
            changed, warnings = await self._full_pull(conn, graph, tenant_id)
            runs = await self._project_dirty(conn, tenant_id, kind="resync", record_always=True, warnings=warnings)
            await store.record_tenant_status(conn, tenant_id, full=True, delta=True, resync=True)
            self._log("sync.resync", tenant_id, started, changed, runs)
            return _totals(runs)

    async def org_sync(
        self, tenant_id: str, organization_id: str, run_id: str | None, *, confirm_deactivations: bool = False
    ) -> dict[str, int]:
        """An Organization's initial sync after it was enabled or its filters edited: every mirror user.

        `confirm_deactivations` is the operator's answer to a held run: apply what the guard held.
        """
        async with self._tenant(tenant_id) as (conn, graph):
            started = time.monotonic()
            # Other Organizations get what changed; this one gets every user further below.
            # Organizations about to get a whole-Organization projection (this one, and any other with an
            # org-sync queued) are skipped, so their runs count what they created.
            skip = {organization_id} | await store.orgs_awaiting_org_sync(conn, tenant_id)
            first = await store.get_delta_link(conn, tenant_id, "users") is None
            if first:
                # A tenant seen for the first time: everything now, not at the next hourly resync. Its users
                # need flags only for an Organization that will not project them all anyway (one enabled
                # later gets an org-sync of its own, after this one: the tenant lock orders them).
                others = [o for o in await store.org_contexts(conn, tenant_id) if o.organization_id not in skip]
                changed, warnings = await self._full_pull(conn, graph, tenant_id, flag_new=bool(others))
            else:
                scrubbed: list[str] = []
                changed = await self._pull(conn, graph, tenant_id, full=False, scrubbed=scrubbed)
                warnings = await self._pull_groups(conn, graph, tenant_id, full=False) + unstorable_warnings(scrubbed)
            await store.record_tenant_status(conn, tenant_id, delta=True, full=first)
            await self._project_dirty(conn, tenant_id, kind="delta", record_always=False, skip=skip)
            orgs = await store.org_contexts(conn, tenant_id, organization_id)
            if not orgs:
                if run_id:
                    await store.finish_run(conn, run_id, status="failed", counts={},
                                           error="user sync is not enabled for this Organization")
                return {}
            run = OrgRun(orgs[0], kind="org-sync", run_id=run_id, warnings=warnings, confirmed=confirm_deactivations)
            await self._project_all(conn, tenant_id, run)
            self._log("sync.org", tenant_id, started, changed, [run])
            return dict(run.counts)

    async def project_organization(self, tenant_id: str, organization_id: str, run_id: str | None = None, *,
                                   confirm_deactivations: bool = False) -> dict[str, int]:
        """What `org_sync` does after its Graph pull: every mirror user projected into one Organization's End
        Users, under the tenant lock, with its current filters. For callers that fill the mirror themselves
        (the preview's property test applies the filters it previewed this way)."""
        async with self._pool.acquire() as conn:
            await store.lock_tenant(conn, tenant_id)
            try:
                orgs = await store.org_contexts(conn, tenant_id, organization_id)
                if not orgs:
                    raise ValueError(f"user sync is not enabled for Organization {organization_id}")
                run = OrgRun(orgs[0], kind="org-sync", run_id=run_id, confirmed=confirm_deactivations)
                await self._project_all(conn, tenant_id, run)
                return dict(run.counts)
            finally:
                await store.unlock_tenant(conn, tenant_id)

    async def record_error(self, tenant_id: str, error: str) -> None:
        """Make a tenant-level failure (e.g. refused credentials) visible in its sync status."""
        async with self._pool.acquire() as conn:
            await store.record_tenant_status(conn, tenant_id, error=error)

    async def fail_runs(self, tenant_id: str, run_ids: Sequence[str], error: str, *, record: bool = True) -> None:
        """End these queued or running runs `failed` with `error` (their work was refused or given up), and
        show the error in the tenant's sync status unless `record` is False."""
        async with self._pool.acquire() as conn:
            if run_ids:
                await store.fail_runs(conn, run_ids, error)
            if record:
                await store.record_tenant_status(conn, tenant_id, error=error)

    # -- steps --------------------------------------------------------------------------------------------

    @asynccontextmanager
    async def _tenant(self, tenant_id: str) -> AsyncIterator[tuple[Conn, TenantGraph]]:
        """The tenant's lock, and a Graph client for its credential as it is now: read (one primary-key
        lookup) once the lock is held, so an operator's credential change is used by the next unit of work."""
        async with self._pool.acquire() as conn:
            await store.lock_tenant(conn, tenant_id)
            try:
                # A run an earlier unit of work left `running` (it could not close it) is ended now: nothing
                # else holds the lock, so nothing is still working on it.
                if abandoned := await store.end_abandoned_runs(conn, tenant_id):
                    log.warning("sync.abandoned_runs_ended", tenant_id=tenant_id, run_ids=abandoned)
                creds = await store.tenant_credentials(conn, tenant_id)
                if creds is None:
                    raise UnknownTenant(tenant_id)
                async with self._graph.lease(creds) as graph:
                    yield conn, graph
            finally:
                await store.unlock_tenant(conn, tenant_id)

    async def _full_pull(
        self, conn: Conn, graph: TenantGraph, tenant_id: str, *, flag_new: bool = True
    ) -> tuple[int, list[str]]:
        """Complete listings of users, groups and enrichment, side by side on three connections.

        Groups and enrichment take spare connections of the pool; one the pool cannot spare soon runs after
        the users listing on `conn` instead, so a busy pool slows a resync down rather than stalling it. If any
        listing fails the others are cancelled and nothing is deactivated (absence counts only after a
        complete listing).
        """
        users_ready = asyncio.Event()
        started = time.monotonic()
        took: dict[str, float] = {}
        # A tenant's first listing flags the users it writes when anyone needs flags (`flag_new`), so groups
        # and enrichment need not flag again.
        flag = await store.mirror_has_users(conn, tenant_id)
        enricher = Enricher(graph, tenant_id, flag=flag)
        scrubbed: list[str] = []

        async def users() -> int:
            try:
                return await self._pull(conn, graph, tenant_id, full=True, flag_new=flag_new, scrubbed=scrubbed)
            finally:
                users_ready.set()
                took["users_ms"] = (time.monotonic() - started) * 1000

        async def groups(on: Conn) -> list[str]:
            try:
                return await self._pull_groups(on, graph, tenant_id, full=True, flag=flag)
            finally:
                took["groups_ms"] = (time.monotonic() - started) * 1000

        try:
            async with self._spare_connection() as groups_conn, self._spare_connection() as enrich_conn:
                async with asyncio.TaskGroup() as tasks:
                    changed = tasks.create_task(users())
                    group_task = tasks.create_task(groups(groups_conn)) if groups_conn else None
                    enrich_task = tasks.create_task(enricher.run(enrich_conn, users_ready)) if enrich_conn else None
                # What the pool could not spare a connection for runs now, on this one.
                group_warnings = group_task.result() if group_task else await groups(conn)
                enrich_warnings = enrich_task.result() if enrich_task else await enricher.run(conn, users_ready)
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None  # callers map single errors (transient, poison)
        log.info("sync.full_pull", tenant_id=tenant_id, enrich_ms=round((time.monotonic() - started) * 1000),
                 **{k: round(v) for k, v in took.items()})
        return changed.result(), unstorable_warnings(scrubbed) + group_warnings + enrich_warnings

    async def _pull(
        self, conn: Conn, graph: TenantGraph, tenant_id: str, *, full: bool, flag_new: bool = True,
        scrubbed: list[str] | None = None,
    ) -> int:
        """Walk users delta into the mirror; returns how many mirror rows changed. `flag_new=False`: the users
        of a tenant's first listing need no projection flags (the caller projects every user). Values stored
        without characters PostgreSQL cannot store are added to `scrubbed`."""
        try:
            return await self._walk(conn, graph, tenant_id, full=full, flag_new=flag_new, scrubbed=scrubbed)
        except DeltaTokenExpired:
            log.warning("sync.delta_token_expired", tenant_id=tenant_id)
            await store.drop_delta_link(conn, tenant_id, "users")
            return await self._walk(conn, graph, tenant_id, full=True, flag_new=flag_new, scrubbed=scrubbed)

    async def _walk(
        self, conn: Conn, graph: TenantGraph, tenant_id: str, *, full: bool, flag_new: bool = True,
        scrubbed: list[str] | None = None,
    ) -> int:
        link = None if full else await store.get_delta_link(conn, tenant_id, "users")
        listing = link is None
        # A tenant's very first listing goes straight into the mirror: nothing to compare, nothing absent.
        fresh = listing and not await store.mirror_has_users(conn, tenant_id)
        changed, new_link = 0, None
        if listing:
            await store.begin_listing(conn)
        try:
            # The next pages are fetched and parsed while these are written, a few pages per transaction.
            batch: list[GraphUser] = []
            async for page in prefetch(graph.users_delta(link), depth=4):
                batch += page.value
                if page.scrubbed and scrubbed is not None:
                    scrubbed += page.scrubbed
                new_link = page.delta_link or new_link
                if len(batch) >= WRITE_BATCH or (new_link and batch):
                    changed += await self._write_users(conn, tenant_id, batch, listing=listing, fresh=fresh,
                                                       flag_new=flag_new)
                    batch = []
            if new_link is None:
                raise DeltaTokenExpired(0, "noDeltaLink", "delta walk ended without a deltaLink")
            async with conn.transaction():
                if listing and not fresh:  # a complete, successful listing: absence is evidence
                    changed += await store.mark_absent(conn, tenant_id)
                await store.save_delta_link(conn, tenant_id, "users", new_link)
        finally:
            if listing:
                await store.end_listing(conn)
        if fresh:
            await store.analyze_keys(conn, "entra_users")
        return changed

    @staticmethod
    async def _write_users(
        conn: Conn, tenant_id: str, batch: list[GraphUser], *, listing: bool, fresh: bool, flag_new: bool
    ) -> int:
        async with conn.transaction():
            if fresh:
                try:
                    async with conn.transaction():  # a savepoint: a refused COPY leaves nothing behind
                        return await store.insert_new_mirror_users(conn, tenant_id, batch, flag=flag_new)
                except UniqueViolation:
                    pass  # Graph repeated a user of an earlier page: compare and update as usual
            return await store.upsert_mirror_users(conn, tenant_id, batch, listing=listing)

    async def _pull_groups(
        self, conn: Conn, graph: TenantGraph, tenant_id: str, *, full: bool, flag: bool = True
    ) -> list[str]:
        """Walk groups delta (with members) into the mirror; a tenant that refuses it is reported, not failed."""
        try:
            try:
                await self._walk_groups(conn, graph, tenant_id, full=full, flag=flag)
            except DeltaTokenExpired:
                await store.drop_delta_link(conn, tenant_id, "groups")
                await self._walk_groups(conn, graph, tenant_id, full=True, flag=flag)
        except GraphForbidden as exc:
            return [f"groups unavailable for this tenant ({exc.status} {exc.code}): {exc.message}"]
        return []

    async def _walk_groups(
        self, conn: Conn, graph: TenantGraph, tenant_id: str, *, full: bool, flag: bool = True
    ) -> None:
        link = None if full else await store.get_delta_link(conn, tenant_id, "groups")
        seen: set[str] = set()
        new_link = None
        # A complete listing replaces every membership, so it is one transaction: all or nothing.
        async with conn.transaction():
            # A tenant's first memberships go straight into the mirror: nothing to compare against.
            direct = first = link is None and not await enrichment.has_memberships(conn, tenant_id)
            if link is None:
                await enrichment.begin_full_group_listing(conn)
            listed: list[tuple[str, str, str]] = []  # memberships of a listing, written a batch at a time
            async for page in prefetch(graph.groups_delta(link), depth=2):
                listed += await enrichment.apply_group_page(conn, tenant_id, page.value, listing=link is None)
                if len(listed) >= MEMBER_BATCH:
                    direct = await enrichment.write_listed_members(conn, tenant_id, listed, direct=direct)
                    listed = []
                seen.update(g.id for g in page.value if g.removed is None)
                new_link = page.delta_link or new_link
            if new_link is None:
                raise DeltaTokenExpired(0, "noDeltaLink", "groups delta walk ended without a deltaLink")
            if listed:
                direct = await enrichment.write_listed_members(conn, tenant_id, listed, direct=direct)
            if link is None:
                await enrichment.finish_full_group_listing(conn, tenant_id, seen, flag=flag, direct=direct)
            await store.save_delta_link(conn, tenant_id, "groups", new_link)
        if first:
            # A first listing fills the memberships from nothing; until autovacuum's next ANALYZE, the planner
            # would look members up by walking the tenant's whole key range instead of the member index.
            await enrichment.analyze_memberships(conn)

    async def _project_dirty(
        self, conn: Conn, tenant_id: str, *, kind: str, record_always: bool, skip: Set[str] = frozenset(),
        warnings: Sequence[str] = (),
    ) -> list[OrgRun]:
        runs = [OrgRun(o, kind=kind, record_always=record_always, warnings=list(warnings))
                for o in await store.org_contexts(conn, tenant_id) if o.organization_id not in skip]
        if not runs:
            # No Organization wants these changes. Those skipped get every user from an org-sync; should that
            # org-sync fail for good (dead-lettered), the flags keep the changes for the next unit of work.
            if not skip:
                await store.clear_all_dirty(conn, tenant_id)
            return runs

        async def clear(writer: Conn, chunk: _Chunk) -> None:
            # Rows whose deactivation is pending (this chunk's included) stay flagged until `_finish`.
            pending = [c for r in runs for c in r.pending_deactivations] + [
                c for plan in chunk.plans for c in plan.deactivations]
            deferred = sorted({c.entra_object_id for c in pending})
            await store.clear_dirty_range(writer, tenant_id, first=chunk.ids[0], last=chunk.ids[-1], keep=deferred)

        async def flagged(reader: Conn, after: str, with_groups: bool) -> tuple[list[str], list[MirrorUser]]:
            # Keyset over flagged rows, then their mirror rows.
            ids = await store.dirty_user_ids(reader, tenant_id, after=after, limit=CHUNK)
            users = await store.load_mirror_users(reader, tenant_id, ids, with_groups=with_groups) if ids else []
            return ids, users

        async with self._closing_on_failure(runs):
            await self._project(conn, tenant_id, runs, flagged, written=clear)
            await self._finish(conn, tenant_id, runs)
        return runs

    async def _project_all(self, conn: Conn, tenant_id: str, run: OrgRun) -> None:
        async def every(reader: Conn, after: str, with_groups: bool) -> tuple[list[str], list[MirrorUser]]:
            users = await store.mirror_users_after(reader, tenant_id, after, limit=CHUNK, with_groups=with_groups)
            return [u.id for u in users], users

        async with self._closing_on_failure([run]):
            await self._project(conn, tenant_id, [run], every)
            await self._finish(conn, tenant_id, [run])

    @asynccontextmanager
    async def _closing_on_failure(self, runs: Sequence[OrgRun]) -> AsyncIterator[None]:
        """A projection that fails ends the runs it recorded itself `failed` with the error (a retry records
        new ones); an org-sync's run, queued by the admin API, stays for the retry (the consumer fails it when
        it gives up)."""
        try:
            yield
        except Exception as exc:
            ids = [r.run_id for r in runs if r.recorded and r.run_id and r.kind != "org-sync"]
            if ids:
                error = f"interrupted: {type(exc).__name__}: {exc}"[:500]
                with contextlib.suppress(Exception):  # best effort: PostgreSQL may be what failed
                    async with asyncio.timeout(5), self._pool.acquire() as conn:
                        await store.fail_runs(conn, ids, error)
            raise

    async def _project(
        self, conn: Conn, tenant_id: str, runs: Sequence[OrgRun],
        next_chunk: Callable[[Conn, str, bool], Awaitable[tuple[list[str], list[MirrorUser]]]],
        written: Callable[[Conn, _Chunk], Awaitable[None]] | None = None,
    ) -> None:
        """Project chunks of mirror users into each run's End Users, pipelined: the next chunk is read and
        decided (on a second connection, in a task of its own) while this one is written on `conn` — and,
        for runs that are recorded anyway, while the one before is still being written on a third connection
        (the End User COPY is one PostgreSQL backend's work; chunks sharing an email are not written side by
        side). Chunks are independent transactions.

        The outcome is that of one chunk after the other. A chunk read while an earlier one was not yet in may
        have missed what that one writes; when the emails the two touch overlap (`_Chunk.reach`: addresses
        looked up, given, or held by End Users read), the later chunk waits for the earlier one and is decided
        again from fresh reads before it is written — e.g. an earlier chunk freed an address this one's user
        now gets. A write the email index refuses, or an adoption whose End User was linked since it was read
        (`StaleRead`), is decided again the same way. A write PostgreSQL refuses for a user's values is written
        by halves, leaving out only the users it refuses (`_write_last_try`)."""
        with_groups = any(run.org.filters.groups != "all" for run in runs)
        # An Organization without End Users (a first sync) has nothing to look up: only what this projection
        # creates, and a shared email among those is caught by the email index like any stale read.
        empty = {run.org.organization_id for run in runs
                 if not await store.has_end_users(conn, run.org.organization_id)}
        in_flight: list[_Chunk] = []  # read and not yet written: what a chunk read now may not see

        async def end_users_of(reader: Conn, run: OrgRun, users: list[MirrorUser]) -> _EndUsers:
            if run.org.organization_id in empty:
                return {}, {}
            return await _end_users_of(reader, run, tenant_id, users)

        async def chunks(reader: Conn) -> AsyncIterator[_Chunk]:
            after = ""
            while not all(run.stopped for run in runs):  # nothing left to write for runs stopped mid-way
                in_flight[:] = [c for c in in_flight if not c.committed]
                unseen = list(in_flight)  # before the reads: a chunk committed during them may be missed
                ids, users = await next_chunk(reader, after, with_groups)
                if not ids:
                    return
                chunk = _Chunk(ids, users, [await end_users_of(reader, run, users) for run in runs], unseen=unseen)
                chunk.decide(runs)  # read ahead, decided ahead: while the chunk before is being written
                in_flight.append(chunk)
                yield chunk
                after = ids[-1]

        async def decide_again(on: Conn, chunk: _Chunk) -> None:
            chunk.end_users = [await _end_users_of(on, run, tenant_id, chunk.users) for run in runs]
            chunk.decide(runs)

        async def write_again(writer: Conn, chunk: _Chunk) -> None:
            # Decided again from fresh reads, with no other write in flight: as if chunks were written in turn.
            await decide_again(writer, chunk)
            await self._write_last_try(writer, chunk, runs, written)

        # Two writers only for runs recorded whatever they write, their records created before the first write
        # (a run recorded lazily could otherwise be created by both).
        parallel = all(run.record_always for run in runs)
        async with self._spare_connection() as reader, self._spare_connection(parallel) as second:
            # Without a spare connection (the pool is busy) the chunks are read on `conn`, one after the other.
            source = prefetch(chunks(reader), depth=1) if reader is not None else chunks(conn)
            # Reading on `conn` excludes writing on it at the same time: one writer then (asyncpg refuses a
            # second operation on a busy connection, "another operation is in progress").
            if second is None or reader is None:
                async for chunk in source:
                    if chunk.depends():  # on a chunk written since it was read (one writer: all are in now)
                        await decide_again(conn, chunk)
                    if not await self._write_chunk(conn, chunk, runs, written):
                        await write_again(conn, chunk)
                return
            idle: asyncio.Queue[Conn] = asyncio.Queue()
            idle.put_nowait(conn)
            idle.put_nowait(second)

            one_at_a_time = asyncio.Lock()
            # Emails each unsettled chunk gives End Users. A chunk sharing one with an earlier chunk waits until
            # that one is in: the earlier chunk wins the email, as it would one chunk after the other.
            unsettled: dict[int, frozenset[str]] = {}
            settled = asyncio.Condition()

            def shares_none(emails: frozenset[str]) -> bool:
                return all(emails.isdisjoint(e) for e in unsettled.values())

            async def write_on(writer: Conn, chunk: _Chunk) -> None:
                written_now = await self._write_chunk(writer, chunk, runs, written)
                idle.put_nowait(writer)
                if not written_now:
                    # Both writers, once what they write is in: nothing else in flight while this one retries.
                    async with one_at_a_time:
                        mine, other = await idle.get(), await idle.get()
                        try:
                            await write_again(mine, chunk)
                        finally:
                            idle.put_nowait(mine)
                            idle.put_nowait(other)
                async with settled:
                    del unsettled[id(chunk)]
                    settled.notify_all()

            try:
                async with asyncio.TaskGroup() as tasks:
                    async for chunk in source:
                        for run in runs:  # before the first write, while `conn` is free; a no-op after it
                            await run.ensure_row(conn)
                        if before := chunk.depends():
                            # Decided from reads that may have missed what these write: wait until they are in,
                            # then decide again.
                            async with settled:
                                await settled.wait_for(functools.partial(_all_committed, before))
                            on = await idle.get()
                            try:
                                await decide_again(on, chunk)
                            finally:
                                idle.put_nowait(on)
                        emails = chunk.emails()
                        async with settled:
                            await settled.wait_for(functools.partial(shares_none, emails))
                            unsettled[id(chunk)] = emails
                        tasks.create_task(write_on(await idle.get(), chunk))
            except BaseExceptionGroup as group:
                raise group.exceptions[0] from None

    @asynccontextmanager
    async def _spare_connection(self, wanted: bool = True) -> AsyncIterator[Conn | None]:
        """A second connection for pipelining if the pool has one to spare soon; None rather than wait on a
        pool that other tenants' work holds, nor take the last `SPARE_RESERVE` (or when not `wanted`)."""
        if not wanted:
            yield None
            return
        pool = self._pool
        reserve = min(SPARE_RESERVE, pool.get_max_size() // 4)
        async with self._spares:  # one look-and-take at a time: a connection being opened is not counted yet
            free = pool.get_max_size() - pool.get_size() + pool.get_idle_size()
            try:
                spare = await pool.acquire(timeout=SPARE_CONNECTION_WAIT_S) if free > reserve else None
            except TimeoutError:
                spare = None
        if spare is None:
            yield None
            return
        try:
            yield spare
        finally:
            await self._pool.release(spare)

    @staticmethod
    async def _write_plans(
        conn: Conn, runs: Sequence[OrgRun], plans: Sequence[Plan],
        then: Callable[[Conn], Awaitable[None]] | None = None,
    ) -> None:
        """Write each live run's plan, then `then`, in one transaction; on failure nothing of it is kept (a run
        row created in it is forgotten) and the error is raised."""
        recorded = [run.recorded for run in runs]
        try:
            async with conn.transaction():
                await _recheck_mapping(conn, runs)
                for run, plan in zip(runs, plans, strict=True):
                    if run.stopped:
                        continue
                    if run.record_always or run.would_write(plan):
                        await run.ensure_row(conn)
                    await store.apply_plan(conn, org=run.org, run_id=run.run_id, plan=plan,
                                           include_deactivations=False)
                if then is not None:
                    await then(conn)
        except BaseException:
            for run, was in zip(runs, recorded, strict=True):
                run.recorded = was  # a run row created in the rolled-back transaction is gone with it
            raise

    async def _write_chunk(
        self, conn: Conn, chunk: _Chunk, runs: Sequence[OrgRun],
        written: Callable[[Conn, _Chunk], Awaitable[None]] | None,
    ) -> bool:
        """Write one decided chunk for every run in one transaction, counting it once committed; False when
        the email index refused a create decided from stale reads, an adoption found its End User linked since
        it was read (`StaleRead`), PostgreSQL broke a deadlock between two writers creating End Users with
        crossing emails, or refused a user's values (nothing of the chunk is kept, nor counted): the caller
        decides it again and writes it with `_write_last_try`."""
        async def then(on: Conn) -> None:
            if written is not None:
                await written(on, chunk)

        try:
            await self._write_plans(conn, runs, chunk.plans, then)
        except _DECIDE_AGAIN:
            return False
        chunk.committed = True
        for run, plan in zip(runs, chunk.plans, strict=True):
            if not run.stopped:
                run.add(plan)
        return True

    async def _write_last_try(
        self, conn: Conn, chunk: _Chunk, runs: Sequence[OrgRun],
        written: Callable[[Conn, _Chunk], Awaitable[None]] | None,
    ) -> None:
        """Write a chunk decided from fresh reads, with nothing written beside it. What PostgreSQL still refuses
        is refused for the values of some user (`USER_REFUSALS`): the chunk is then written by halves (bisected
        down to single users), every user it accepts is written, and each user it refuses in a run is left out
        of that run — counted in `errors`, named in its warnings, and kept flagged, so the next unit of work
        tries it again. When it refuses every user of the chunk (more than one), the fault is not any user's:
        the error is raised and the unit of work fails (and is retried) as before."""
        if await self._write_chunk(conn, chunk, runs, written):
            return
        items = sorted({(r, oid) for r, plan in enumerate(chunk.plans) for oid in _written_ids(plan)})
        refused: dict[tuple[int, str], Exception] = {}

        async def attempt(part: Sequence[tuple[int, str]]) -> None:
            plans = [_only(plan, {oid for r2, oid in part if r2 == r}) for r, plan in enumerate(chunk.plans)]
            try:
                await self._write_plans(conn, runs, plans)
            except USER_REFUSALS as exc:
                if len(part) == 1:
                    refused[part[0]] = exc
                    return
                await attempt(part[:len(part) // 2])
                await attempt(part[len(part) // 2:])

        await attempt(items)
        if len(refused) == len(items) > 1:
            raise next(iter(refused.values()))  # every user refused: not any one user's values
        chunk.refused = frozenset(oid for _, oid in refused)
        tenant_id = runs[0].org.tenant_id

        async def finish(on: Conn) -> None:
            if written is not None:
                await written(on, chunk)  # clears the chunk's flags
            if chunk.refused:  # flagged again (an org-sync's, which had none, too): the next unit tries them
                await store.flag_dirty(on, tenant_id, sorted(chunk.refused))

        for r, run in enumerate(runs):
            mine = [(oid, exc) for (r2, oid), exc in refused.items() if r2 == r]
            if mine and not run.stopped:
                await run.ensure_row(conn)
        async with conn.transaction():
            await finish(conn)
        chunk.committed = True
        for r, (run, plan) in enumerate(zip(runs, chunk.plans, strict=True)):
            if run.stopped:
                continue
            mine = [(oid, exc) for (r2, oid), exc in refused.items() if r2 == r]
            run.add(_without(plan, {oid for oid, _ in mine}))
            run.refused(mine)

    async def _finish(self, conn: Conn, tenant_id: str, runs: Sequence[OrgRun]) -> None:
        """Apply or hold each run's deactivations (accidental-deletion guard), then close its record.

        One held run per Organization: deactivations held while the Organization has a held run are added to
        that run (the held users stay flagged, so every later batch decides them again); a run that holds none
        ends the hold (applied, or nobody is leaving any more)."""
        ratio = self._settings.sync.deactivation_guard_ratio
        for run in runs:
            pending = run.pending_deactivations
            async with conn.transaction():
                await _recheck_mapping(conn, [run])
                if run.stopped:
                    if run.run_id and (run.recorded or run.kind == "org-sync"):
                        await store.finish_run(conn, run.run_id, status="failed", counts=run.counts,
                                               warnings=run.warnings, error=STOPPED)
                    continue
                held_run = await holds.lock_held_run(conn, run.org.organization_id)
                hold = bool(pending) and not run.confirmed and hold_deactivations(
                    len(pending), await store.synced_count(conn, run.org.organization_id), ratio=ratio)
                if hold:
                    await self._hold(conn, run, held_run, ratio=ratio)
                else:
                    if pending:
                        await run.ensure_row(conn)
                        await store.apply_state_changes(conn, run_id=run.run_id, changes=pending)
                        await store.clear_dirty(conn, tenant_id, [c.entra_object_id for c in pending])
                        run.counts["deactivated"] = len(pending)
                    if held_run is not None:
                        by = f" by run {run.run_id}" if run.run_id else ""
                        await holds.release(conn, held_run, note=(
                            f"hold ended{by}: {len(pending)} deactivations applied" if pending else
                            f"hold ended{by}: none of the held users is leaving any more"))
                if run.run_id and (run.wrote or run.record_always or run.recorded):
                    await store.finish_run(conn, run.run_id, status="held" if run.held else "succeeded",
                                           counts=run.counts, warnings=run.warnings)
                    if run.held:
                        await holds.hold(conn, run.run_id, [c.entra_object_id for c in pending])

    @staticmethod
    async def _hold(conn: Conn, run: OrgRun, held_run: str | None, *, ratio: float) -> None:
        pending = run.pending_deactivations
        if held_run is None:  # this run becomes the Organization's held run
            run.held = True
            run.counts["held"] = len(pending)
            run.warnings.append(f"{len(pending)} deactivations held: more than {ratio:.0%} of the Organization's "
                                "synced End Users; confirm the run to apply them, or dismiss it")
            await run.ensure_row(conn)
            return
        await holds.hold(conn, held_run, [c.entra_object_id for c in pending])
        if run.run_id is not None:
            run.warnings.append(f"{len(pending)} deactivations held in run {held_run}, awaiting confirmation")

    def _log(self, event: str, tenant_id: str, started: float, changed: int, runs: Sequence[OrgRun]) -> None:
        log.info(event, tenant_id=tenant_id, mirror_changed=changed, organizations=len(runs),
                 duration_ms=round((time.monotonic() - started) * 1000, 1), **_totals(runs))


def _totals(runs: Sequence[OrgRun]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for run in runs:
        for key, value in run.counts.items():
            totals[key] = totals.get(key, 0) + value  # `held` among them: deactivations the guard kept back
    return totals


_EndUsers = tuple[dict[str, StoredEndUser], dict[str, list[StoredEndUser]]]  # linked by object id, by email

STOPPED = ("stopped: the Organization no longer syncs from this Microsoft tenant (re-assigned, unmapped,"
           " remapped or disabled while the run went on); what it wrote before is kept")


async def _recheck_mapping(conn: Conn, runs: Sequence[OrgRun]) -> None:
    """Inside a write transaction: mark the runs whose Organization no longer syncs from their tenant.

    Operator actions and running syncs exclude each other this way rather than by the tenant lock: the worker
    holds that lock for a whole resync (a minute for a large tenant), and an operator's re-assign must not
    wait for it. Each write transaction takes the tenant's mapping lock shared and re-reads the mapping
    (`still_syncing`); the operator takes it exclusive, so it waits at most for the chunk being written, and
    nothing of the old mapping is written after the API answered."""
    live = [run for run in runs if not run.stopped]
    if not live:
        return
    syncing = await store.still_syncing(conn, live[0].org.tenant_id, [run.org.organization_id for run in live])
    for run in live:
        if run.org.organization_id not in syncing:
            run.stopped = True
            log.warning("sync.organization_stopped", tenant_id=run.org.tenant_id,
                        organization_id=run.org.organization_id, run_id=run.run_id, kind=run.kind)


@dataclass(eq=False)
class _Chunk:
    """One keyset page of mirror users with, per run, the End Users they are linked to or share an email with,
    and what each run will do about them."""

    ids: list[str]
    users: list[MirrorUser]
    end_users: list[_EndUsers]
    plans: list[Plan] = field(default_factory=list)  # per run, from `decide`
    unseen: list[_Chunk] = field(default_factory=list)  # earlier chunks not yet written when this one was read
    committed: bool = False
    refused: frozenset[str] = frozenset()  # users whose write PostgreSQL refused (`_write_last_try`)
    _reach: frozenset[str] | None = None

    def emails(self) -> frozenset[str]:
        """The emails, as the email index compares them, that this chunk's creates and updates give End Users."""
        fields = [x.fields for plan in self.plans for x in plan.creates] + [
            x.fields for plan in self.plans for x in plan.updates]
        return frozenset(email.strip().lower() for f in fields if (email := f.get("email")))

    def decide(self, runs: Sequence[OrgRun]) -> None:
        """Each run's plan for these users (pure: nothing is counted until the chunk is written)."""
        self.plans = [reconcile(self.users, org=run.org, linked=linked, by_email=by_email)
                      for run, (linked, by_email) in zip(runs, self.end_users, strict=True)]
        self._reach = None

    def reach(self) -> frozenset[str]:
        """Every address (lower-cased) this chunk's decisions read or its writes touch, however it is decided:
        its users' mail and UPN (what it looks End Users up by, and what it gives them), and the emails of the
        End Users it read (an update may move one away, an adoption link it). Another chunk's writes can change
        these decisions, or these writes another chunk's decisions, only through an address both reach."""
        if self._reach is None:
            held = [e.fields.get("email") for linked, by_email in self.end_users
                    for e in (*linked.values(), *(x for es in by_email.values() for x in es))]
            raw = [u.mail for u in self.users] + [u.user_principal_name for u in self.users] + held
            # map over C-level str methods: a chunk of 2,000 users costs a few milliseconds
            self._reach = frozenset(map(str.lower, map(str.strip, filter(None, raw)))) | self.emails()
        return self._reach

    def depends(self) -> list[_Chunk]:
        """The earlier chunks this one was read before they were written and shares an address with: it is
        decided again once they are in (the first call only; it forgets them)."""
        before, self.unseen = self.unseen, []
        return [c for c in before if not c.reach().isdisjoint(self.reach())]


def _all_committed(chunks: Sequence[_Chunk]) -> bool:
    return all(c.committed for c in chunks)


def _written_ids(plan: Plan) -> set[str]:
    """The users a chunk's write of `plan` writes something for (deactivations wait for `_finish`)."""
    return {x.entra_object_id for items in (plan.creates, plan.updates, plan.state_changes, plan.reviews)
            for x in items}


def _only(plan: Plan, ids: Set[str]) -> Plan:
    """What the chunk's write of `plan` writes for the users `ids`, nothing else (no counts)."""
    return Plan(creates=tuple(x for x in plan.creates if x.entra_object_id in ids),
                updates=tuple(x for x in plan.updates if x.entra_object_id in ids),
                state_changes=tuple(x for x in plan.state_changes if x.entra_object_id in ids),
                reviews=tuple(x for x in plan.reviews if x.entra_object_id in ids))


def _without(plan: Plan, ids: Set[str]) -> Plan:
    """`plan` without what it writes for the users `ids`."""
    return msgspec.structs.replace(
        plan, creates=tuple(x for x in plan.creates if x.entra_object_id not in ids),
        updates=tuple(x for x in plan.updates if x.entra_object_id not in ids),
        state_changes=tuple(x for x in plan.state_changes if x.entra_object_id not in ids),
        reviews=tuple(x for x in plan.reviews if x.entra_object_id not in ids))


def _refusal(exc: Exception) -> str:
    """PostgreSQL's words for a refused write: SQLSTATE and message."""
    state = getattr(exc, "sqlstate", None)
    return f"{state} {exc}" if state else f"{type(exc).__name__}: {exc}"


async def _end_users_of(conn: Conn, run: OrgRun, tenant_id: str, users: Sequence[MirrorUser]) -> _EndUsers:
    return await store.load_end_users(conn, organization_id=run.org.organization_id, tenant_id=tenant_id, users=users)
