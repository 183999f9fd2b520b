"""Session settings every pooled connection carries."""

import asyncpg


async def test_pooled_sessions_run_without_jit(pool: asyncpg.Pool) -> None:
    """PostgreSQL's JIT compiled the 100,000-user preview for over a second; our sessions turn it off."""
    assert await pool.fetchval("SHOW jit") == "off"
