"""Spare pooled connections for the engine's side-by-side work (listings, read-ahead, a second writer)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from worker.store import Conn, Pool

SPARE_CONNECTION_WAIT_S = 0.5
# Pooled connections a spare never takes (a quarter of the pool, at most this many): during a wave of resyncs,
# other tenants' units of work (a change notification's delta) still find a connection at once instead of
# waiting for a listing to end. One tenant's resync on a pool of 4 still gets all three connections it uses.
SPARE_RESERVE = 2


class Spares:
    """Hands out a pool's spare connections, one look-and-take at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self._turn = asyncio.Lock()

    @asynccontextmanager
    async def connection(self, wanted: bool = True) -> AsyncIterator[Conn | None]:
        """A second connection for pipelining if the pool has one to spare soon; None rather than wait on a
        pool that other tenants' work holds, nor take the last `SPARE_RESERVE` (or when not `wanted`)."""
        if not wanted:
            yield None
            return
        pool = self.pool
        reserve = min(SPARE_RESERVE, pool.get_max_size() // 4)
        async with self._turn:  # one look-and-take at a time: a connection being opened is not counted yet
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
            await pool.release(spare)
