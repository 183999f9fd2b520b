"""`entra-sync bench preview`: the filter preview on an N-user tenant whose Organization is fully synced.

Set up as `bench resync` does (the simulator in a child process, a scratch database, an Organization with user
sync enabled, its initial `org_sync`), so the mirror holds N users with their groups and enrichment and the
Organization N End Users. Then `worker.preview.preview` — what `POST …/user-sync/preview` runs — is timed for a
few filter sets (everyone; a department and domain; a group), `runs` times each, in turn.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from worker.bench.common import ALL_FILTERS, register_organization, scratch_database, simulator_process, state_directory
from worker.config import GraphSettings, Settings
from worker.core.filters import parse_filters
from worker.graph import GraphClients
from worker.preview import preview
from worker.store.pool import create_pool
from worker.sync import SyncEngine


async def bench_preview(*, users: int, runs: int = 5, state_dir: Path | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the CONTRACTS.md JSON object (plus the timings per filter set)."""
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
                counts = await SyncEngine(pool=pool, graph=graph, settings=settings).org_sync(
                    tenant["tenant_id"], org_id, None)
                async with pool.acquire() as conn:
                    group = await conn.fetchval(
                        "SELECT group_id FROM entra_group_members WHERE tenant_id = $1 AND member_type = 'user'"
                        " GROUP BY group_id ORDER BY count(*) DESC LIMIT 1", tenant["tenant_id"])
                    department = await conn.fetchval(
                        "SELECT department FROM entra_users WHERE tenant_id = $1 AND department IS NOT NULL"
                        " LIMIT 1", tenant["tenant_id"])
                cases = {
                    "all": ALL_FILTERS,
                    "department+domain": {**ALL_FILTERS, "departments": [department],
                                          "domains": [tenant.get("default_domain") or "contoso.com"]},
                    "group": {**ALL_FILTERS, "groups": [group]},
                }
                timings: dict[str, list[float]] = {name: [] for name in cases}
                answers: dict[str, dict[str, int]] = {}
                for _ in range(runs):
                    for name, filters in cases.items():
                        started = time.perf_counter()
                        answer = await preview(pool, tenant_id=tenant["tenant_id"], organization_id=org_id,
                                               filters=parse_filters(filters))
                        timings[name].append((time.perf_counter() - started) * 1000)
                        answers[name] = {k: v for k, v in answer.items() if isinstance(v, int)}
            finally:
                await graph.close()
                await pool.close()
    every = sorted(t for ts in timings.values() for t in ts)
    return {
        "bench": "preview",
        "users": users,
        "p50_ms": round(statistics.median(every), 1),
        "p99_ms": round(every[min(len(every) - 1, round(0.99 * (len(every) - 1)))], 1),
        "p50_ms_by_filters": {name: round(statistics.median(ts), 1) for name, ts in timings.items()},
        "answers": answers,
        "initial_sync_counts": counts,
    }
