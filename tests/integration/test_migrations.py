"""Migrations apply once, in order, and concurrent runs are safe."""

import asyncio

import asyncpg

from worker.store.migrations import migrate, migration_files


async def test_concurrent_migrations_apply_each_file_once(fresh_database_url: str) -> None:
    results = await asyncio.gather(*(migrate(fresh_database_url) for _ in range(4)))
    applied = [v for r in results for v in r]
    assert sorted(applied) == sorted(v for v, _ in migration_files())
    conn = await asyncpg.connect(fresh_database_url)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == [v for v, _ in migration_files()]
        assert await conn.fetchval("SELECT to_regclass('end_users') IS NOT NULL")
    finally:
        await conn.close()
    assert await migrate(fresh_database_url) == []
