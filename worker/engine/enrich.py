"""Enrichment of the tenant mirror during the full resync: licence names, sign-in, MFA, managed devices.

A tenant without Entra ID P1/P2 or Intune answers those calls with an error: the capability is recorded as
missing and reported on the run as a warning; the rest of the sync carries on, and values already held are
kept rather than wiped because a read failed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import structlog

from worker.core.macs import normalize_mac
from worker.core.pulls import DELTA_PULL, Listing, Pull
from worker.graph import (
    GraphBadRequest,
    GraphForbidden,
    GraphNotFound,
    ManagedDevice,
    RegistrationDetail,
    TenantGraph,
    UserSignIn,
    prefetch,
)
from worker.store import Conn
from worker.store import enrichment as store

log = structlog.get_logger(__name__)
T = TypeVar("T")
R = TypeVar("R")
COPY_ROWS = 5000  # staged rows per COPY

# What Graph answers when a capability is missing: 403 for reports without P1/P2, 400 "Request not applicable
# to target tenant" for Intune without a licence, 404 in some tenants.
MISSING = (GraphForbidden, GraphBadRequest, GraphNotFound)
FORBIDDEN_ATTEMPTS = 3


def last_sign_in(item: UserSignIn) -> datetime | None:
    """The latest of interactive, non-interactive and successful sign-ins; None for a user who never signed in
    (no signInActivity, or only Graph's 0001-01-01 for "never")."""
    a = item.sign_in_activity
    if a is None:
        return None
    times = [t for t in (a.last_sign_in_date_time, a.last_non_interactive_sign_in_date_time,
                         a.last_successful_sign_in_date_time) if t is not None and t.year > 1]
    return max(times) if times else None


def mfa_of(d: RegistrationDetail) -> dict[str, Any]:
    preferred = d.user_preferred_method_for_secondary_authentication or None  # Graph may send ""
    if preferred is None and d.system_preferred_authentication_methods:
        preferred = d.system_preferred_authentication_methods[0]
    return {"registered": d.is_mfa_registered, "capable": d.is_mfa_capable,
            "methods": sorted(d.methods_registered), "preferred_method": preferred}


def device_macs(devices: list[ManagedDevice], into: dict[str, set[str]]) -> None:
    for d in devices:
        if not d.user_id:
            continue
        for raw in (d.wi_fi_mac_address, d.ethernet_mac_address):
            mac = normalize_mac(raw)
            if mac:
                into.setdefault(d.user_id, set()).add(mac)


class Enricher:
    """Fetches the enrichment listings on the connection it is given (its own while the users listing runs
    beside it). MFA and devices are staged and written into `entra_user_enrichment` in one pass as soon as both
    end; sign-in times, the longest listing, go to `entra_user_sign_ins` as their pages arrive (straight in for a
    tenant's first listing, else staged and compared at its end). Licence names wait for the users listing
    (`users_ready`), since a change of them flags the licensed users."""

    def __init__(self, graph: TenantGraph, tenant_id: str, pull: Pull = DELTA_PULL) -> None:
        # A first sync's users are all flagged by its users listing, or all projected: nothing to flag here.
        self._graph, self._tenant, self._flag = graph, tenant_id, pull.flags_changes
        self.warnings: list[str] = []
        self.capabilities: dict[str, bool] = {}
        self._conn_turn = asyncio.Lock()  # one connection: its statements take turns

    async def run(self, conn: Conn, users_ready: asyncio.Event) -> list[str]:
        """Stage and apply every enrichment listing on `conn`; returns the warnings for the run."""
        await store.stage_enrichment(conn)
        # Asked before the listings start: from then on they take turns on the connection.
        sign_ins = Listing.of(link=None, held=await store.has_sign_ins(conn, self._tenant))
        enrichment = Listing.of(link=None, held=await store.has_enrichment(conn, self._tenant))
        skus = await self._guard("licences", "licences", self._graph.subscribed_skus)
        await asyncio.gather(self._apply_sign_ins(conn, sign_ins), self._apply_mfa_and_devices(conn, enrichment))
        await store.record_capabilities(conn, self._tenant, self.capabilities)
        # New licence names flag the licensed mirror users: those of this listing must be there first.
        await users_ready.wait()
        if skus is not None:
            await store.replace_skus(conn, self._tenant, {s.sku_id: s.sku_part_number for s in skus},
                                     flag=self._flag)
        return self.warnings

    async def _apply_sign_ins(self, conn: Conn, listing: Listing) -> None:
        """A `FIRST` listing (the tenant has no sign-in times yet) goes straight into the table. One that fails
        part-way keeps the times it wrote (true values, the rest unknown, as after a missing capability); the
        next resync, holding some, stages and compares the whole listing."""

        async def write(rows: list[tuple[str, datetime | None]]) -> None:
            nonlocal listing  # a FIRST listing carries on staged once Graph repeats a user of an earlier page
            listing = await store.write_sign_ins(conn, self._tenant, rows, listing=listing, flag=self._flag)

        listed = await self._guard("entra_p1", "sign-in activity", lambda: self._stream(
            self._graph.sign_ins(), lambda page: [(u.id, last_sign_in(u)) for u in page], write))
        if listed and not listing.first:
            await self._timed("sign-ins", lambda: store.apply_sign_ins(conn, self._tenant, flag=self._flag), conn)
        elif listed:
            async with self._conn_turn:
                await store.analyze_first_sign_ins(conn, self._tenant)

    async def _apply_mfa_and_devices(self, conn: Conn, listing: Listing) -> None:
        mfa, devices = (f is not None for f in await asyncio.gather(
            self._guard("entra_p1", "MFA registration", lambda: self._mfa(conn)),
            self._guard("intune", "managed devices", lambda: self._devices(conn)),
        ))
        written = await self._timed("mfa-devices", lambda: store.apply_enrichment(
            conn, self._tenant, mfa=mfa, devices=devices, flag=self._flag), conn)
        if listing.first and written:
            async with self._conn_turn:
                await store.analyze_first_enrichment(conn)

    async def _timed(self, what: str, apply: Callable[[], Awaitable[int]], conn: Conn) -> int:
        """One apply pass, in a transaction of its own, when the connection is free; returns the rows written."""
        started = time.monotonic()
        async with self._conn_turn, conn.transaction():
            written = await apply()
        log.debug("enrich.applied", tenant_id=self._tenant, what=what, written=written,
                  duration_ms=round((time.monotonic() - started) * 1000))
        return written

    async def _guard(self, capability: str, what: str, step: Callable[[], Awaitable[T]]) -> T | None:
        """Run one listing; a missing capability becomes a warning and None (its column is left alone)."""
        started = time.monotonic()
        try:
            for attempt in range(FORBIDDEN_ATTEMPTS):
                try:
                    result = await step()
                    log.debug("enrich.listed", tenant_id=self._tenant, what=what,
                              duration_ms=round((time.monotonic() - started) * 1000))
                    break
                except GraphForbidden:
                    # The premium-licence 403 is intermittent even for P1/P2 tenants (docs/graph-notes.md).
                    if attempt == FORBIDDEN_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(0.5 * (attempt + 1))
            self.capabilities.setdefault(capability, True)
            return result
        except MISSING as exc:
            self.capabilities[capability] = False
            self.warnings.append(f"{what} unavailable for this tenant ({exc.status} {exc.code}): {exc.message}")
            log.info("enrich.capability_missing", tenant_id=self._tenant, what=what, status=exc.status)
            return None

    async def _stream(self, pages: AsyncIterator[list[T]], rows_of: Callable[[list[T]], list[R]],
                      write: Callable[[list[R]], Awaitable[None]]) -> bool:
        """Stage a listing: the next pages are fetched while rows are written, `COPY_ROWS` at a time or more
        while the connection is busy with another listing's writes (the listing never waits for them)."""
        batch: list[R] = []
        async for page in prefetch(pages, depth=2):
            batch += rows_of(page)
            if len(batch) >= COPY_ROWS and not self._conn_turn.locked():
                async with self._conn_turn:
                    await write(batch)
                batch = []
        if batch:
            async with self._conn_turn:
                await write(batch)
        return True

    async def _mfa(self, conn: Conn) -> bool:
        return await self._stream(self._graph.registration_details(), lambda page: [(d.id, mfa_of(d)) for d in page],
                                  lambda rows: store.copy_mfa(conn, rows))

    async def _devices(self, conn: Conn) -> bool:
        def rows(page: list[ManagedDevice]) -> list[tuple[str, str]]:
            macs: dict[str, set[str]] = {}
            device_macs(page, macs)
            return [(user, mac) for user, found in macs.items() for mac in found]

        return await self._stream(self._graph.managed_devices(), rows, lambda batch: store.copy_devices(conn, batch))
