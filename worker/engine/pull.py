"""Pulling a tenant's directory from Graph into its mirror: the users and groups delta walks (from the stored
delta link, or a complete listing), and the full pull that lists users, groups and enrichment side by side.

A delta link is saved only after the pages it covers are in the mirror; every mirror write flags the users
whose projection it changes, so the projection that follows updates exactly their End Users.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from worker.core.pulls import DELTA_PULL, Listing, Pull
from worker.core.text import unstorable_warnings
from worker.engine.enrich import Enricher
from worker.engine.spares import Spares
from worker.graph import DeltaTokenExpired, GraphForbidden, GraphUser, TenantGraph, prefetch
from worker.store import Conn, mirror
from worker.store.groups import GroupsWalk

log = structlog.get_logger(__name__)

WRITE_BATCH = 2000  # mirror users written per transaction during a delta walk


class MirrorPull:
    """Pulls one tenant's directory into its mirror on the unit of work's connection (a full pull borrows
    spare ones). Values stored without characters PostgreSQL cannot store are kept in `scrubbed`."""

    def __init__(self, conn: Conn, graph: TenantGraph, tenant_id: str, spares: Spares) -> None:
        self._conn, self._graph, self._tenant, self._spares = conn, graph, tenant_id, spares
        self.scrubbed: list[str] = []

    def scrubbed_warnings(self) -> list[str]:
        return unstorable_warnings(self.scrubbed)

    async def users(self, pull: Pull = DELTA_PULL) -> int:
        """Walk users delta into the mirror; returns how many mirror rows changed. An expired delta link is
        dropped and the users listed anew."""
        try:
            return await self._walk_users(pull)
        except DeltaTokenExpired:
            log.warning("sync.delta_token_expired", tenant_id=self._tenant)
            await mirror.drop_delta_link(self._conn, self._tenant, "users")
            return await self._walk_users(pull.relisting())

    async def _walk_users(self, pull: Pull) -> int:
        conn, tenant_id = self._conn, self._tenant
        link = None if pull.complete else await mirror.get_delta_link(conn, tenant_id, "users")
        listing = Listing.of(link=link, held=link is not None or await mirror.holds_users(conn, tenant_id))
        changed, new_link = 0, None
        async with mirror.users_walk(conn, listing):
            # The next pages are fetched and parsed while these are written, a few pages per transaction.
            batch: list[GraphUser] = []
            async for page in prefetch(self._graph.users_delta(link), depth=4):
                batch += page.value
                self.scrubbed += page.scrubbed or ()
                new_link = page.delta_link or new_link
                if len(batch) >= WRITE_BATCH or (new_link and batch):
                    changed += await mirror.write_users_page(conn, tenant_id, batch, listing=listing,
                                                             flag_new=pull.flag_new)
                    batch = []
            if new_link is None:
                raise DeltaTokenExpired(0, "noDeltaLink", "delta walk ended without a deltaLink")
            changed += await mirror.end_users_walk(conn, tenant_id, new_link, listing=listing)
        return changed

    async def groups(self, pull: Pull = DELTA_PULL, conn: Conn | None = None) -> list[str]:
        """Walk groups delta (with members) into the mirror, on `conn` if given; a tenant that refuses it is
        reported (the warnings returned), not failed."""
        on = conn or self._conn
        try:
            try:
                await self._walk_groups(on, pull)
            except DeltaTokenExpired:
                await mirror.drop_delta_link(on, self._tenant, "groups")
                await self._walk_groups(on, pull.relisting())
        except GraphForbidden as exc:
            return [f"groups unavailable for this tenant ({exc.status} {exc.code}): {exc.message}"]
        return []

    async def _walk_groups(self, conn: Conn, pull: Pull) -> None:
        link = None if pull.complete else await mirror.get_delta_link(conn, self._tenant, "groups")
        new_link = None
        # A complete listing replaces every membership, so it is one transaction: all or nothing.
        async with conn.transaction():
            walk = await GroupsWalk.start(conn, self._tenant, link, flag=pull.flags_changes)
            async for page in prefetch(self._graph.groups_delta(link), depth=2):
                await walk.page(page.value)
                new_link = page.delta_link or new_link
            if new_link is None:
                raise DeltaTokenExpired(0, "noDeltaLink", "groups delta walk ended without a deltaLink")
            await walk.end(new_link)
        await walk.settle()

    async def everything(self, *, flag_new: bool = True) -> tuple[int, list[str]]:
        """Complete listings of users, groups and enrichment, side by side on three connections; returns how
        many mirror users changed, and the warnings for the runs.

        Groups and enrichment take spare connections of the pool; one the pool cannot spare soon runs after
        the users listing on `conn` instead, so a busy pool slows a resync down rather than stalling it. If any
        listing fails the others are cancelled and nothing is deactivated (absence counts only after a
        complete listing). A tenant's first listing flags the users it writes when anyone needs flags
        (`flag_new`), so groups and enrichment need not flag again.
        """
        users_ready = asyncio.Event()
        started = time.monotonic()
        pull = Pull(complete=True, first_sync=not await mirror.holds_users(self._conn, self._tenant), flag_new=flag_new)
        took: dict[str, float] = {}

        async def users() -> int:
            try:
                return await self.users(pull)
            finally:
                users_ready.set()
                took["users_ms"] = (time.monotonic() - started) * 1000

        async def groups(on: Conn) -> list[str]:
            try:
                return await self.groups(pull, on)
            finally:
                took["groups_ms"] = (time.monotonic() - started) * 1000

        enricher = Enricher(self._graph, self._tenant, pull)
        changed, group_warnings, enrich_warnings = await self._side_by_side(
            users, groups, lambda on: enricher.run(on, users_ready))
        log.info("sync.full_pull", tenant_id=self._tenant, enrich_ms=round((time.monotonic() - started) * 1000),
                 **{k: round(v) for k, v in took.items()})
        return changed, self.scrubbed_warnings() + group_warnings + enrich_warnings

    async def _side_by_side(
        self, users: Callable[[], Coroutine[Any, Any, int]], groups: Callable[[Conn], Coroutine[Any, Any, list[str]]],
        enrich: Callable[[Conn], Coroutine[Any, Any, list[str]]],
    ) -> tuple[int, list[str], list[str]]:
        """Run the three listings, groups and enrichment on spare connections when the pool has them, else
        after the users listing on `conn`; the first error of any is raised (callers map single errors:
        transient, poison)."""
        try:
            async with self._spares.connection() as groups_conn, self._spares.connection() as enrich_conn:
                async with asyncio.TaskGroup() as tasks:
                    changed = tasks.create_task(users())
                    group_task = tasks.create_task(groups(groups_conn)) if groups_conn else None
                    enrich_task = tasks.create_task(enrich(enrich_conn)) if enrich_conn else None
                # What the pool could not spare a connection for runs now, on this one.
                group_warnings = group_task.result() if group_task else await groups(self._conn)
                enrich_warnings = enrich_task.result() if enrich_task else await enrich(self._conn)
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None
        return changed.result(), group_warnings, enrich_warnings
