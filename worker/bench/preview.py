"""`entra-sync bench preview`: the filter preview on an N-user tenant whose Organization is fully synced.

Set up as `bench resync` does (the simulator in a child process, a scratch database, an Organization with user
sync enabled, its initial `org_sync`), so the mirror holds N users with their groups and enrichment and the
Organization N End Users. Then `worker.engine.preview.preview` — what `POST …/user-sync/preview` runs — is timed for a
few filter sets (everyone; a department and domain; a group), `runs` times each, in turn. Every preview is
cold: nothing is kept between previews.

On a shared machine the wall time mostly measures the queue for a core, so each preview's CPU time is reported
too: this process's (Python) and the PostgreSQL backends' of the scratch database (read from /proc when the
server runs on this machine, else left out); on a quiet host the wall time is about their sum. The
reference, timed once per run on the same Organization, is the decision pass as the preview made it before its
reads were narrowed, for everyone's filters (no groups read): the sync's `mirror_users_after`,
`load_end_users` and `reconcile` per chunk, with the cycle collector as the process has it.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from worker.bench.common import ALL_FILTERS, one_tenant
from worker.core.filters import parse_filters
from worker.core.reconcile import reconcile
from worker.engine.preview import preview
from worker.engine.projection import CHUNK
from worker.engine.sync import SyncEngine
from worker.store import mirror, sync_writes, tenants


async def bench_preview(*, users: int, runs: int = 5, state_dir: Path | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the CONTRACTS.md JSON object (plus the timings per filter set)."""
    async with one_tenant(users, state_dir) as one:
        tid = one.tenant["tenant_id"]
        counts = await SyncEngine(pool=one.pool, graph=one.graph, settings=one.settings).org_sync(
            tid, one.org_id, None)
        measured = _Measured()
        cases = await _cases(one.pool, one.tenant)
        for _ in range(runs):
            await measured.run(one.pool, tid, one.org_id, cases)
    return {"bench": "preview", "users": users, **measured.summary(), "initial_sync_counts": counts}


async def _cases(pool: asyncpg.Pool, tenant: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The filter sets previewed: everyone; a department and domain; the largest group."""
    async with pool.acquire() as conn:
        group = await conn.fetchval(
            "SELECT group_id FROM entra_group_members WHERE tenant_id = $1 AND member_type = 'user'"
            " GROUP BY group_id ORDER BY count(*) DESC LIMIT 1", tenant["tenant_id"])
        department = await conn.fetchval(
            "SELECT department FROM entra_users WHERE tenant_id = $1 AND department IS NOT NULL"
            " LIMIT 1", tenant["tenant_id"])
    return {
        "all": ALL_FILTERS,
        "department+domain": {**ALL_FILTERS, "departments": [department],
                              "domains": [tenant.get("default_domain") or "contoso.com"]},
        "group": {**ALL_FILTERS, "groups": [group]},
    }


@dataclass
class _Measured:
    """Wall and CPU times of each preview, the reference of each run, and the answers."""

    timings: dict[str, list[float]] = field(default_factory=dict)
    cpu: list[tuple[float, float | None]] = field(default_factory=list)
    reference: list[float] = field(default_factory=list)
    answers: dict[str, dict[str, int]] = field(default_factory=dict)

    async def run(self, pool: asyncpg.Pool, tenant_id: str, org_id: str, cases: dict[str, dict[str, Any]]) -> None:
        """One run: the reference, then each filter set's preview."""
        started = time.perf_counter()
        await _decision_pass(pool, tenant_id, org_id)
        self.reference.append((time.perf_counter() - started) * 1000)
        for name, filters in cases.items():
            backends = await _backend_pids(pool)
            pg_before, py_before = _cpu_seconds(backends), time.process_time()
            started = time.perf_counter()
            answer = await preview(pool, tenant_id=tenant_id, organization_id=org_id, filters=parse_filters(filters))
            self.timings.setdefault(name, []).append((time.perf_counter() - started) * 1000)
            pg_after = _cpu_seconds(backends)
            self.cpu.append((time.process_time() - py_before,
                             None if pg_before is None or pg_after is None else pg_after - pg_before))
            self.answers[name] = {k: v for k, v in answer.items() if isinstance(v, int)}

    def summary(self) -> dict[str, Any]:
        every = sorted(t for ts in self.timings.values() for t in ts)
        pg_cpu = [c[1] for c in self.cpu if c[1] is not None]
        return {
            "p50_ms": round(statistics.median(every), 1),
            "p99_ms": round(every[min(len(every) - 1, round(0.99 * (len(every) - 1)))], 1),
            "p50_ms_by_filters": {name: round(statistics.median(ts), 1) for name, ts in self.timings.items()},
            "p50_python_cpu_ms": round(statistics.median(c[0] for c in self.cpu) * 1000, 1),
            "p50_postgres_cpu_ms": round(statistics.median(pg_cpu) * 1000, 1) if pg_cpu else None,
            "reference_ms": round(statistics.median(self.reference), 1),
            "reference_over_p50_all": round(
                statistics.median(self.reference) / statistics.median(self.timings["all"]), 2),
            "load_average": os.getloadavg(),
            "answers": self.answers,
        }


async def _decision_pass(pool: asyncpg.Pool, tenant_id: str, organization_id: str) -> None:
    """The reference: the preview's reads and decisions as they were before (everyone's filters)."""
    async with pool.acquire() as conn:
        org = await tenants.org_context_with(conn, tenant_id, organization_id, parse_filters(ALL_FILTERS))
        after = ""
        while users := await mirror.mirror_users_after(conn, tenant_id, after, limit=CHUNK, with_groups=False):
            linked, by_email = await sync_writes.load_end_users(conn, organization_id=organization_id,
                                                          tenant_id=tenant_id, users=users)
            reconcile(users, org=org, linked=linked, by_email=by_email)
            after = users[-1].id


async def _backend_pids(pool: asyncpg.Pool) -> list[int]:
    async with pool.acquire() as conn:
        return [r[0] for r in await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()")]


def _cpu_seconds(pids: list[int]) -> float | None:
    """User and system CPU seconds of these processes so far, or None when /proc does not show them."""
    total = 0
    try:
        for pid in pids:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    except OSError:
        return None
    return total / os.sysconf("SC_CLK_TCK")
