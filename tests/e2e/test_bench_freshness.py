"""End to end: `bench_freshness` on a whole stack changes users in the simulator and sees every change reach its
End User through the real path; no speed assertion here (the figures are the benchmark's)."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
import pytest

from worker.bench.freshness import bench_freshness
from worker.dev.embedded import create_database, drop_database

pytestmark = pytest.mark.slow


async def test_freshness_sees_every_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)  # the stack's own embedded broker
    database_url = None
    if server_url := os.environ.get("DATABASE_URL"):  # a fresh database on that server, as test_stack does
        database_url = await create_database(server_url, "entra_sync_bench")
        monkeypatch.setenv("DATABASE_URL", database_url)
    try:
        result = await bench_freshness(changes=10, rate=5, state_dir=tmp_path)
        if database_url:  # the bench ran on a database of its own: DATABASE_URL's is as it was, empty
            conn = await asyncpg.connect(database_url)
            try:
                assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
            finally:
                await conn.close()
    finally:
        if server_url and database_url:
            await drop_database(server_url, database_url)
    assert set(result) == {"bench", "changes", "p50_s", "p99_s", "max_s", "lost"}
    assert result["bench"] == "freshness"
    assert result["changes"] == 10
    assert result["lost"] == 0, result
    assert 0 < result["p50_s"] <= result["p99_s"] <= result["max_s"]
