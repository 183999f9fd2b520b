"""The filter preview: what applying proposed filters would do, decided by the code that decides the sync.

An Organization's sync (`SyncEngine.org_sync`) reads the tenant mirror in chunks of
`worker.engine.projection.CHUNK` users in id order, loads the End Users those users are linked to or share an
email with, and lets `reconcile` decide.
The preview does the same reads with the same store functions and the same `reconcile`, with the proposed
filters in the Organization's context, and writes nothing: `worker.core.preview.Written` stands in for the
writes of earlier chunks, `Tally` counts the plans as the sync counts its run. So whatever the sync learns to
decide (exclusions, locked fields …) the preview answers the same way without a change here.

One kind of user is not read whole: a *settled* user, linked to a `synced` End User the sync wrote from the
inputs the user has now (its input hash, `projection.input_hash`, compared in PostgreSQL) and not a leaver.
`reconcile` decides such a user from its scope alone (unchanged in scope, stop updating out of it), so
PostgreSQL returns only what the filters read of it and `Tally.settle` counts it
(`tests/unit/test_input_hash.py` holds the two equal). Right after a sync that is nearly everyone: the
preview of a fully synced 100,000-user Organization reads a few bytes per user instead of two rows. Likewise a
user without an End User in the Organization is read narrowly first, and whole only when the filters keep it
and it has not left (else `reconcile` only counts it out of scope: `Tally.leave`), so setting up a new
Organization's filters reads whole only the users they select.

Reads run in read-only REPEATABLE READ transactions that share one snapshot (of mirror and End Users): on two
connections when the pool has a second to spare, chunk i on connection i mod 2, each a chunk or two ahead of
the decisions, so PostgreSQL builds the next chunks on one core while this process decides on the other.
The End Users of a chunk's other users are read by `worker.store.preview.chunk_end_users` (the same maps as
the sync's `load_end_users`, in one query). While a preview runs, the cycle collector is paused: decoding and
projecting 100,000 users allocates millions of objects that reference counting frees, and the collector's
passes over them were half the Python time.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any, cast

import msgspec

from worker.core.filters import Predicate, compile_filters
from worker.core.model import FILTER_SECTIONS, Filters, MirrorUser, OrgContext, ScopedUser, StoredEndUser
from worker.core.preview import Tally, Written
from worker.core.projection import email_keys, org_inputs_hash
from worker.core.reconcile import reconcile
from worker.engine import projection as engine
from worker.engine.spares import Spares
from worker.graph import prefetch
from worker.store import Conn, Pool, mirror, sync_writes, tenants
from worker.store import preview as preview_store

# A chunk's settled users (`Tally.settle`), its users without an End User that the filters leave out or that
# left (`Tally.leave`), its other users, their addresses (`email_keys`), and the End Users linked to those and
# holding the addresses.
_Chunk = tuple[list[ScopedUser], list[ScopedUser], list[MirrorUser], set[str], dict[str, StoredEndUser],
               dict[str, list[StoredEndUser]]]


async def preview(pool: Pool, *, tenant_id: str, organization_id: str, filters: Filters) -> dict[str, Any]:
    """The preview of `filters` for an Organization syncing from `tenant_id` (CONTRACTS.md shape)."""
    async with pool.acquire() as conn:
        org = await tenants.org_context_with(conn, tenant_id, organization_id, filters)
    written, tally, in_scope = Written(org), Tally(), compile_filters(filters)
    with _cycle_collector_paused():
        async with _readers(pool) as readers:
            chunks = _read_chunks(readers, org, filters, in_scope)
            async for settled, left, users, keys, linked, by_email in chunks:
                tally.settle(settled, in_scope=in_scope, excluded=org.excluded)
                tally.leave(left, in_scope=in_scope)
                if not users:
                    continue
                by_email = written.over(by_email, keys)
                plan = reconcile(users, org=org, linked=linked, by_email=by_email)
                written.record(plan, linked=linked, by_email=by_email)
                tally.add(plan, users, in_scope=in_scope)
            if wanted := tally.wanted():
                tally.fill(await preview_store.sample_details(
                    readers[0], tenant_id=tenant_id, organization_id=organization_id, object_ids=wanted))
    return {
        "microsoft_tenant_id": tenant_id,
        "matching": tally.matching,
        **tally.counts,
        "samples": tally.samples,
        "warnings": ["these filters select nobody"] if tally.matching == 0 else [],
    }


@contextlib.asynccontextmanager
async def _readers(pool: Pool) -> AsyncIterator[list[Conn]]:
    """One connection, and a second when the pool has one to spare (the engine's `Spares`: never queued for,
    never the connections kept for other work), in read-only transactions that share one snapshot: PostgreSQL
    builds the next chunks on the other core while this process decides the current one."""
    async with pool.acquire() as first, Spares(pool).connection() as spare:
        readers: list[Conn] = [first] if spare is None else [first, spare]
        async with preview_store.one_snapshot(first, readers[1:]):
            yield readers


async def _read_chunks(readers: list[Conn], org: OrgContext, filters: Filters, in_scope: Predicate
                       ) -> AsyncIterator[_Chunk]:
    """The sync's chunks of mirror users (`projection.project_all`), each with the End Users `reconcile` needs,
    read on `readers` (in one snapshot): chunk i on reader i mod n, each a chunk or two ahead. `in_scope`: the
    compiled `filters`."""
    first, tenant_id, organization_id = readers[0], org.tenant_id, org.organization_id
    # As the sync: an Organization without End Users has none to look up (what earlier chunks would
    # create is laid over by `Written`).
    lookup = await sync_writes.has_end_users(first, organization_id)
    members = None if filters.groups == "all" else await _filter_group_members(first, tenant_id, filters)
    starts = await preview_store.chunk_starts(first, tenant_id, engine.CHUNK)
    org_hash = org_inputs_hash(org.sku_names, org.assets)
    sections = [name for name in FILTER_SECTIONS if getattr(filters, name) != "all"]

    def with_groups(users: list[MirrorUser]) -> list[MirrorUser]:
        if members is None:
            return users
        return [msgspec.structs.replace(u, group_ids=members[u.id]) if u.id in members else u for u in users]

    async def read(reader: Conn, after: str) -> _Chunk:
        settled, unlinked, users = await preview_store.chunk_users(
            reader, tenant_id=tenant_id, organization_id=organization_id, after=after, limit=engine.CHUNK,
            org_hash=org_hash, sections=sections)
        if members is not None:
            for s in (*settled, *unlinked):
                s.group_ids = members.get(s.id, _NO_GROUPS)
        users = with_groups(users)
        # A user without an End User matters only if the filters keep it and it has not left: then it is read
        # whole and decided by `reconcile` with the others, in id order as the sync decides them.
        entering: list[str] = []
        left: list[ScopedUser] = []
        for u in unlinked:
            if u.active() and in_scope(u):
                entering.append(u.id)
            else:
                left.append(u)
        if entering:
            users = sorted([*users, *with_groups(await mirror.load_mirror_users(
                reader, tenant_id, entering, with_groups=False))], key=lambda u: u.id)
        keys = {k for u in users for k in email_keys(u)}
        linked, by_email = ({}, {}) if not lookup or not users else await preview_store.chunk_end_users(
            reader, organization_id=organization_id, tenant_id=tenant_id, ids=[u.id for u in users], keys=keys)
        return settled, left, users, keys, linked, by_email

    async def each(reader: Conn, mine: list[str]) -> AsyncIterator[_Chunk]:
        for after in mine:
            yield await read(reader, after)

    lanes = [prefetch(each(r, starts[i::len(readers)]), depth=2) for i, r in enumerate(readers)]
    try:
        for i in range(len(starts)):
            chunk = await anext(lanes[i % len(lanes)])
            if chunk[0] or chunk[1] or chunk[2]:
                yield chunk
    finally:
        for lane in lanes:  # stops its read-ahead
            await cast(AsyncGenerator[_Chunk, None], lane).aclose()


_NO_GROUPS: frozenset[str] = frozenset()


async def _filter_group_members(reader: Conn, tenant_id: str, filters: Filters) -> dict[str, frozenset[str]]:
    """Mirror users in the filters' groups, each with the ones it is in, directly or through nested groups.

    The sync reads each user's every group (climbing the nesting from each user of a chunk); the filters only
    ask whether one of them is a filter group. So the preview walks down from the filter groups once and gives
    each user just those it is in: the same answer from `compile_filters`, at a fraction of the reads. A group
    is a filter group when the filters' own predicate says so of a user in that group alone.
    """
    in_groups = compile_filters(Filters(groups=filters.groups))
    wanted = [g for g in await preview_store.groups_with_members(reader, tenant_id)
              if in_groups(MirrorUser(tenant_id=tenant_id, id="", group_ids=frozenset((g,))))]
    return await preview_store.members_of(reader, tenant_id, wanted)


_pausing = 0  # previews running in this process with the collector paused
_resume = False  # whether the collector was enabled when the first of them paused it


@contextlib.contextmanager
def _cycle_collector_paused() -> Iterator[None]:
    """Pause the cycle collector while the block runs; resumed (if it was enabled) when the last preview ends.

    A preview builds no reference cycles worth collecting (plans, structs, dicts of strings), and it keeps at
    most a few chunks alive, so nothing accumulates while paused.
    """
    global _pausing, _resume
    if _pausing == 0:
        _resume = gc.isenabled()
        gc.disable()
    _pausing += 1
    try:
        yield
    finally:
        _pausing -= 1
        if _pausing == 0 and _resume:
            gc.enable()
