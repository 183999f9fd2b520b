"""Shared plumbing for the benchmarks: a throwaway database, the simulator as a child process, an Organization.

Nothing here is imported by the product's processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from worker.config import GraphSettings, Settings
from worker.core.model import FILTER_SECTIONS
from worker.dev.embedded import EmbeddedPostgres, child_env, create_database, drop_database
from worker.graph import GraphClients
from worker.store import Conn, Pool
from worker.store.pool import create_pool

ALL_FILTERS: dict[str, Any] = dict.fromkeys(FILTER_SECTIONS, "all")


@contextlib.asynccontextmanager
async def scratch_database(state_dir: Path) -> AsyncIterator[str]:
    """A fresh, migrated database: on `DATABASE_URL`'s server when set, else on an embedded PostgreSQL.

    Dropped afterwards (the embedded server is stopped too).
    """
    from worker.store.migrations import migrate

    pg: EmbeddedPostgres | None = None
    server_url = os.environ.get("DATABASE_URL")
    if not server_url:
        pg = EmbeddedPostgres(state_dir / "pg")
        server_url = await asyncio.to_thread(pg.start)
    try:
        url = await create_database(server_url, "entra_sync_bench")
        try:
            await migrate(url)
            yield url
        finally:
            await drop_database(server_url, url)
    finally:
        if pg is not None:
            await asyncio.to_thread(pg.stop)


@contextlib.asynccontextmanager
async def simulator_process(
    state_dir: Path, *, users: int, tenants: int = 1, seed: int = 1, timeout_s: float = 300.0
) -> AsyncIterator[dict[str, Any]]:
    """`entra-sync simulator` in a child process (own interpreter and CPU); yields its `simulator.json`."""
    info_path = state_dir / "simulator.json"
    log = _prepare_simulator_dir(state_dir)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker.cli", "simulator", "--state-dir", str(state_dir),
        "--users", str(users), "--tenants", str(tenants), "--seed", str(seed),
        env=child_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )
    try:
        async with asyncio.timeout(timeout_s):
            while not info_path.exists():
                if proc.returncode is not None:
                    raise RuntimeError(f"simulator exited before it was ready (rc={proc.returncode}); "
                                       f"see {state_dir / 'simulator.log'}")
                await asyncio.sleep(0.05)
        yield json.loads(info_path.read_text())
    finally:
        await terminate(proc)
        log.close()


async def terminate(proc: asyncio.subprocess.Process, *, grace_s: float = 10.0) -> None:
    """SIGTERM a child process, SIGKILL it if it has not exited after `grace_s`."""
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        async with asyncio.timeout(grace_s):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()


def _prepare_simulator_dir(state_dir: Path) -> IO[bytes]:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "simulator.json").unlink(missing_ok=True)
    return open(state_dir / "simulator.log", "ab")


@contextlib.contextmanager
def state_directory(state_dir: Path | None) -> Any:
    """`state_dir` when given, else a temporary directory removed afterwards."""
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
        yield state_dir
        return
    with tempfile.TemporaryDirectory(prefix="entra-bench-") as tmp:
        yield Path(tmp)


async def register_organization(
    conn: Conn, tenant: dict[str, str], filters: dict[str, Any] | None = None
) -> str:
    """Register the Microsoft tenant, a PSA tenant mapped to it and an Organization with user sync enabled."""
    await conn.execute(
        """INSERT INTO microsoft_tenants (tenant_id, display_name, client_id, client_secret)
           VALUES ($1, 'sim', $2, $3) ON CONFLICT (tenant_id) DO NOTHING""",
        tenant["tenant_id"], tenant["client_id"], tenant["client_secret"],
    )
    psa = await conn.fetchval(
        "INSERT INTO psa_tenants (name, microsoft_tenant_id) VALUES ($1, $2) RETURNING id",
        f"psa-{uuid.uuid4().hex[:8]}", tenant["tenant_id"],
    )
    org = await conn.fetchval(
        "INSERT INTO organizations (name, psa_tenant_id) VALUES ($1, $2) RETURNING id::text",
        f"org-{uuid.uuid4().hex[:8]}", psa,
    )
    await conn.execute(
        "INSERT INTO org_user_syncs (organization_id, status, filters) VALUES ($1::uuid, 'enabled', $2)",
        org, filters if filters is not None else ALL_FILTERS,
    )
    return str(org)


@dataclass(frozen=True)
class OneTenant:
    """A simulated tenant of `users` users, a scratch database, and an Organization syncing from the tenant
    (registered, not yet synced)."""

    info: dict[str, Any]  # the simulator's `simulator.json`
    tenant: dict[str, str]
    settings: Settings
    pool: Pool
    graph: GraphClients
    org_id: str


@contextlib.asynccontextmanager
async def one_tenant(users: int, state_dir: Path | None) -> AsyncIterator[OneTenant]:
    """The set-up of the single-tenant benchmarks (`resync`, `preview`); all of it is gone afterwards."""
    with state_directory(state_dir) as root:
        async with simulator_process(root / "simulator", users=users, tenants=1) as info, \
                scratch_database(root) as database_url:
            tenant = info["tenants"][0]
            settings = Settings(graph=GraphSettings(url=info["graph_url"], authority_url=info["authority_url"],
                                                    ca_file=info["ca_file"]))
            pool = await create_pool(database_url, max_size=4)
            graph = GraphClients(settings.graph)
            try:
                async with pool.acquire() as conn:
                    org_id = await register_organization(conn, tenant)
                yield OneTenant(info, tenant, settings, pool, graph, org_id)
            finally:
                await graph.close()
                await pool.close()
