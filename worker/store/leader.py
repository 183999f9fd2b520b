"""The scheduler's leader lock: a session-level advisory lock on a dedicated connection, so that the replica
holding it leads until it stops or its connection closes (then another takes over)."""

from __future__ import annotations

from worker.store import Conn

LEADER_LOCK = 0x656E7472_6C656164  # "entrlead"


async def try_lead(conn: Conn) -> bool:
    """Take the leader lock if it is free; whether this connection now holds it."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK))
