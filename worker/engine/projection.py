"""The projection pipeline: mirror users, a chunk at a time, into each run's End Users.

`project_dirty` projects the users flagged since the last projection (every unit of work), `project_all` every
mirror user into one Organization (its initial sync). Both run a `Projection` and then end its runs with the
accidental-deletion guard (`worker.engine.runs.finish_runs`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence, Set

from worker.core.model import MirrorUser
from worker.engine.chunks import Chunk, EndUsers, Written, all_committed, write_chunk, write_last_try
from worker.engine.runs import OrgRun, closing_on_failure, finish_runs
from worker.engine.spares import Spares
from worker.graph import prefetch
from worker.store import Conn, mirror, sync_writes, tenants

CHUNK = 2000  # mirror users a chunk (read, decided and written together)

# The next keyset page of mirror users after an id: (their ids, the users), read on the connection given,
# with or without their transitive groups.
NextChunk = Callable[[Conn, str, bool], Awaitable[tuple[list[str], list[MirrorUser]]]]


async def project_dirty(
    conn: Conn, spares: Spares, tenant_id: str, *, kind: str, record_always: bool, ratio: float,
    skip: Set[str] = frozenset(), warnings: Sequence[str] = (),
) -> list[OrgRun]:
    """Project the flagged mirror users into every Organization syncing from the tenant but those in `skip`,
    a run each; a flag is cleared with the writes it caused (a pending deactivation's once it is settled)."""
    runs = [OrgRun(o, kind=kind, record_always=record_always, warnings=list(warnings))
            for o in await tenants.org_contexts(conn, tenant_id) if o.organization_id not in skip]
    if not runs:
        # No Organization wants these changes. Those skipped get every user from an org-sync; should that
        # org-sync fail for good (dead-lettered), the flags keep the changes for the next unit of work.
        if not skip:
            await mirror.clear_all_dirty(conn, tenant_id)
        return runs

    async def clear(writer: Conn, chunk: Chunk) -> None:
        # Rows whose deactivation is pending (this chunk's included) stay flagged until `finish_runs`.
        pending = [c for r in runs for c in r.pending_deactivations] + [
            c for plan in chunk.plans for c in plan.deactivations]
        deferred = sorted({c.entra_object_id for c in pending})
        await mirror.clear_dirty_range(writer, tenant_id, first=chunk.ids[0], last=chunk.ids[-1], keep=deferred)

    async def flagged(reader: Conn, after: str, with_groups: bool) -> tuple[list[str], list[MirrorUser]]:
        # Keyset over flagged rows, then their mirror rows.
        ids = await mirror.dirty_user_ids(reader, tenant_id, after=after, limit=CHUNK)
        users = await mirror.load_mirror_users(reader, tenant_id, ids, with_groups=with_groups) if ids else []
        return ids, users

    async with closing_on_failure(spares.pool, runs):
        await Projection(conn, spares, tenant_id, runs, flagged, written=clear).run()
        await finish_runs(conn, tenant_id, runs, ratio=ratio)
    return runs


async def project_all(conn: Conn, spares: Spares, tenant_id: str, run: OrgRun, *, ratio: float) -> None:
    """Project every mirror user of the tenant into the run's Organization."""
    async def every(reader: Conn, after: str, with_groups: bool) -> tuple[list[str], list[MirrorUser]]:
        users = await mirror.mirror_users_after(reader, tenant_id, after, limit=CHUNK, with_groups=with_groups)
        return [u.id for u in users], users

    async with closing_on_failure(spares.pool, [run]):
        await Projection(conn, spares, tenant_id, [run], every).run()
        await finish_runs(conn, tenant_id, [run], ratio=ratio)


async def _end_users_of(conn: Conn, run: OrgRun, tenant_id: str, users: Sequence[MirrorUser]) -> EndUsers:
    return await sync_writes.load_end_users(conn, organization_id=run.org.organization_id, tenant_id=tenant_id,
                                          users=users)


class Projection:
    """Project chunks of mirror users into each run's End Users, pipelined: the next chunk is read and
    decided (on a second connection, in a task of its own) while this one is written on `conn` — and,
    for runs that are recorded anyway, while the one before is still being written on a third connection
    (the End User COPY is one PostgreSQL backend's work; chunks sharing an email are not written side
    by side). Chunks are independent transactions.

    The outcome is that of one chunk after the other. A chunk read while an earlier one was not yet in may
    have missed what that one writes; when the emails the two touch overlap (`Chunk.reach`: addresses
    looked up, given, or held by End Users read), the later chunk waits for the earlier one and is decided
    again from fresh reads before it is written — e.g. an earlier chunk freed an address this one's user
    now gets. A write the email index refuses, or an adoption whose End User was linked since it was read
    (`StaleRead`), is decided again the same way. A write PostgreSQL refuses for a user's values is written
    by halves, leaving out only the users it refuses (`write_last_try`)."""

    def __init__(self, conn: Conn, spares: Spares, tenant_id: str, runs: Sequence[OrgRun], next_chunk: NextChunk,
                 written: Written | None = None) -> None:
        self._conn, self._spares, self._tenant, self._runs = conn, spares, tenant_id, runs
        self._next_chunk, self._written = next_chunk, written
        self._with_groups = any(run.org.filters.groups != "all" for run in runs)
        self._empty: set[str] = set()  # Organizations without End Users: nothing to look up (`run`)
        self._in_flight: list[Chunk] = []  # read and not yet written: what a chunk read now may not see
        # With two writers: the connections free to write on; the retry of a refused chunk, one at a time
        # with both writers held; and the emails each unsettled chunk gives End Users (`_settle_after`).
        self._idle: asyncio.Queue[Conn] = asyncio.Queue()
        self._one_at_a_time = asyncio.Lock()
        self._unsettled: dict[int, frozenset[str]] = {}
        self._settled = asyncio.Condition()

    async def run(self) -> None:
        # An Organization without End Users (a first sync) has nothing to look up: only what this projection
        # creates, and a shared email among those is caught by the email index like any stale read.
        self._empty = {run.org.organization_id for run in self._runs
                       if not await sync_writes.has_end_users(self._conn, run.org.organization_id)}
        # Two writers only for runs recorded whatever they write, their records created before the first write
        # (a run recorded lazily could otherwise be created by both).
        parallel = all(run.record_always for run in self._runs)
        async with self._spares.connection() as reader, self._spares.connection(parallel) as second:
            # Without a spare connection (the pool is busy) the chunks are read on `conn`, one after the other.
            source = prefetch(self._chunks(reader), depth=1) if reader is not None else self._chunks(self._conn)
            # Reading on `conn` excludes writing on it at the same time: one writer then (asyncpg refuses a
            # second operation on a busy connection, "another operation is in progress").
            if second is None or reader is None:
                await self._write_in_turn(source)
            else:
                await self._write_side_by_side(source, second)

    async def _chunks(self, reader: Conn) -> AsyncIterator[Chunk]:
        """Read and decide the chunks, in id order, until none is left or every run stopped (nothing left to
        write for runs stopped mid-way)."""
        after = ""
        while not all(run.stopped for run in self._runs):
            self._in_flight[:] = [c for c in self._in_flight if not c.committed]
            unseen = list(self._in_flight)  # before the reads: a chunk committed during them may be missed
            ids, users = await self._next_chunk(reader, after, self._with_groups)
            if not ids:
                return
            chunk = Chunk(ids, users, [await self._end_users(reader, run, users) for run in self._runs],
                          unseen=unseen)
            chunk.decide(self._runs)  # read ahead, decided ahead: while the chunk before is being written
            self._in_flight.append(chunk)
            yield chunk
            after = ids[-1]

    async def _end_users(self, reader: Conn, run: OrgRun, users: list[MirrorUser]) -> EndUsers:
        if run.org.organization_id in self._empty:
            return {}, {}
        return await _end_users_of(reader, run, self._tenant, users)

    async def _decide_again(self, on: Conn, chunk: Chunk) -> None:
        chunk.end_users = [await _end_users_of(on, run, self._tenant, chunk.users) for run in self._runs]
        chunk.decide(self._runs)

    async def _write_again(self, writer: Conn, chunk: Chunk) -> None:
        # Decided again from fresh reads, with no other write in flight: as if chunks were written in turn.
        await self._decide_again(writer, chunk)
        await write_last_try(writer, chunk, self._runs, self._written)

    async def _write_in_turn(self, source: AsyncIterator[Chunk]) -> None:
        """One writer, `conn`: each chunk written before the next is taken."""
        async for chunk in source:
            if chunk.depends():  # on a chunk written since it was read (one writer: all are in now)
                await self._decide_again(self._conn, chunk)
            if not await write_chunk(self._conn, chunk, self._runs, self._written):
                await self._write_again(self._conn, chunk)

    async def _write_side_by_side(self, source: AsyncIterator[Chunk], second: Conn) -> None:
        """Two writers, `conn` and `second`: each chunk is written in a task of its own on whichever is idle."""
        self._idle.put_nowait(self._conn)
        self._idle.put_nowait(second)
        try:
            async with asyncio.TaskGroup() as tasks:
                async for chunk in source:
                    for run in self._runs:  # before the first write, while `conn` is free; a no-op after it
                        await run.ensure_row(self._conn)
                    await self._settle_after(chunk)
                    tasks.create_task(self._write_on(await self._idle.get(), chunk))
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None

    async def _settle_after(self, chunk: Chunk) -> None:
        """Before a chunk is written beside others: if it was decided from reads that may have missed what
        earlier chunks write, wait until they are in and decide it again; then wait until no unsettled chunk
        gives End Users an email it gives (the earlier chunk wins the email, as one chunk after the other)."""
        if before := chunk.depends():
            async with self._settled:
                await self._settled.wait_for(functools.partial(all_committed, before))
            on = await self._idle.get()
            try:
                await self._decide_again(on, chunk)
            finally:
                self._idle.put_nowait(on)
        emails = chunk.emails()
        async with self._settled:
            await self._settled.wait_for(functools.partial(self._shares_none, emails))
            self._unsettled[id(chunk)] = emails

    def _shares_none(self, emails: frozenset[str]) -> bool:
        return all(emails.isdisjoint(e) for e in self._unsettled.values())

    async def _write_on(self, writer: Conn, chunk: Chunk) -> None:
        written_now = await write_chunk(writer, chunk, self._runs, self._written)
        self._idle.put_nowait(writer)
        if not written_now:
            # Both writers, once what they write is in: nothing else in flight while this one retries.
            async with self._one_at_a_time:
                mine, other = await self._idle.get(), await self._idle.get()
                try:
                    await self._write_again(mine, chunk)
                finally:
                    self._idle.put_nowait(mine)
                    self._idle.put_nowait(other)
        async with self._settled:
            del self._unsettled[id(chunk)]
            self._settled.notify_all()
