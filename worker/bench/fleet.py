"""`entra-sync bench fleet`: an MSP's fleet of T tenants of U users, onboarded, then all resynced at once
while one tenant is throttled, one holds a poison user and users of the healthy tenants keep changing.

A whole stack (`worker.dev.stack.Stack` without its demo: the simulator with T tenants, Tansu, webhook, N worker
replicas in one consumer group, scheduler and admin API as child processes) on a fresh database
(`common.scratch_database`: on `DATABASE_URL`'s server, else an embedded PostgreSQL). Then:

1. **Onboard** every tenant through the admin API as an operator would (`worker.dev.demo.onboard_tenant`:
   register, PSA tenant, map, Organization, enable sync with every section "all"), a few at a time.
   `onboard_seconds` runs from the first call until every Organization's initial sync has ended and every
   tenant has its users subscription.
2. **The wave.** Tenant 1 gets a fault for the whole run: every Graph call answers 429 with `Retry-After: 60`.
   Tenant 2 gets a poison user: a `jobTitle` holding U+0000 (PostgreSQL text cannot store it), set through
   Graph, so its notification and its resync both carry it. Then the hourly work of every tenant is enqueued
   at once (`scheduler.enqueue_tenants`: renew-subscriptions + resync, what the scheduler did before it spread
   them). `resync_seconds` runs until every healthy tenant's full resync has finished
   (`tenant_sync_status.last_full_resync_at`), `resync_cpu_seconds` is the CPU the worker replicas used
   meanwhile (`/proc`, user + system; per-process figures in `resync_cpu_seconds_by_process`).
3. **Freshness during the wave.** From the moment the wave is enqueued until it has finished (and for at
   least `MIN_CHANGE_S`), users of the healthy tenants are changed through Graph at `rate`/s (`bench
   freshness`'s change load: the real path, simulator → notification → webhook → Kafka → worker →
   PostgreSQL); `freshness_*` are those changes' latencies to their End User, `lost` the ones never shown
   within 60 s of the last change.

Healthy tenants are measured whatever the faulty ones do: if the wave does not finish within
`RESYNC_TIMEOUT_S`, `resync_seconds` is that timeout and `resync_unfinished_tenants` says how many healthy
tenants were left. `throttled_tenants` and `poisoned_tenants` count the tenants given each fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from worker.bench.common import scratch_database, state_directory
from worker.bench.freshness import (
    POLL_S,
    ChangeRun,
    graph_token,
    latency_figures,
    patch_open_loop,
    watch_end_users,
)
from worker.bus import KafkaPublisher
from worker.config import KafkaSettings
from worker.dev.demo import ALL_FILTERS, PARALLEL_TENANTS, api_session, onboard_tenant
from worker.dev.stack import Stack
from worker.processes.scheduler import enqueue_tenants

RESYNC_TIMEOUT_S = 300.0
ONBOARD_TIMEOUT_S_PER_TENANT = 4.0  # initial syncs take about 2 s a tenant of 200 users on a busy 2-core machine
THROTTLE = {"status": 429, "retry_after": 60, "count": 1_000_000_000, "path_prefix": "/v1.0/"}
POISON_TITLE = "Poison\u0000Title"
MIN_CHANGE_S = 30.0  # changes go on at least this long, so a fast wave still shows what the faults cost
TARGETS_PER_TENANT = 2  # users changed per healthy tenant, in rotation
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


async def bench_fleet(
    *, tenants: int, users: int, workers: int = 1, rate: float = 10.0, state_dir: Path | None = None,
    resync_timeout_s: float = RESYNC_TIMEOUT_S,
) -> dict[str, Any]:
    """Run the benchmark; returns the CONTRACTS.md JSON object (plus a few explanatory fields)."""
    if tenants < 3:
        raise ValueError("bench fleet needs at least 3 tenants: one throttled, one poisoned, one healthy")
    with state_directory(state_dir) as root:
        async with scratch_database(root) as database_url:
            stack = Stack(root / "stack", tenants=tenants, users=users, workers=workers, demo=False,
                          database_url=database_url)
            try:
                info = await stack.start()
                figures = await _measure(stack, info, rate=rate, resync_timeout_s=resync_timeout_s)
            finally:
                await asyncio.to_thread(stack.stop)
    return {"bench": "fleet", "tenants": tenants, "users": users, **figures, "workers": workers}


async def _measure(stack: Stack, info: dict[str, Any], *, rate: float, resync_timeout_s: float) -> dict[str, Any]:
    db = await asyncpg.connect(info["database_url"])
    try:
        onboard_seconds = await _onboard(info, db)
        throttled, poisoned, *healthy = (t["tenant_id"] for t in info["tenants"])
        tokens = {t["tenant_id"]: await graph_token(info, t) for t in info["tenants"]}
        await _sim_control(info, "/_sim/faults", {"tenant_id": throttled, "throttle": THROTTLE})
        await _poison(info, db, tokens[poisoned], poisoned)
        wave = await _wave(stack, info, db, tokens, healthy, rate=rate, resync_timeout_s=resync_timeout_s)
    finally:
        await db.close()
    return {"onboard_seconds": round(onboard_seconds, 1), **wave, "throttled_tenants": 1, "poisoned_tenants": 1}


# --- onboarding -----------------------------------------------------------------------------------------------


async def _onboard(info: dict[str, Any], db: asyncpg.Connection) -> float:
    api = info["admin_url"] + "/api/v1"
    limit = asyncio.Semaphore(PARALLEL_TENANTS)
    started = time.monotonic()
    async with api_session(info["admin_token"]) as http:

        async def one(index: int, tenant: dict[str, str]) -> list[str]:
            async with limit:
                done = await onboard_tenant(http, api, tenant, psa_name=f"Fleet PSA {index + 1}",
                                            organizations=[(f"Fleet Org {index + 1}", ALL_FILTERS)])
                return done.run_ids

        run_ids = [r for rs in await asyncio.gather(*(one(i, t) for i, t in enumerate(info["tenants"]))) for r in rs]
    tenant_ids = [t["tenant_id"] for t in info["tenants"]]
    while True:
        open_runs = await db.fetchval(
            "SELECT count(*) FROM sync_runs WHERE id = ANY ($1::uuid[]) AND status IN ('queued', 'running')", run_ids)
        subscribed = await db.fetchval(
            "SELECT count(DISTINCT tenant_id) FROM graph_subscriptions"
            " WHERE tenant_id = ANY ($1::text[]) AND lower(resource) = 'users'", tenant_ids)
        if open_runs == 0 and subscribed == len(tenant_ids):
            break
        if time.monotonic() - started > (timeout := 300 + ONBOARD_TIMEOUT_S_PER_TENANT * len(tenant_ids)):
            raise TimeoutError(f"onboarding not done within {timeout:.0f}s: {open_runs} initial syncs open, "
                               f"{subscribed}/{len(tenant_ids)} tenants subscribed")
        await asyncio.sleep(0.2)
    seconds = time.monotonic() - started
    failed = await db.fetchval("SELECT count(*) FROM sync_runs WHERE id = ANY ($1::uuid[]) AND status <> 'succeeded'",
                               run_ids)
    if failed:
        raise RuntimeError(f"{failed} of {len(run_ids)} initial syncs did not succeed")
    return seconds


# --- faults -----------------------------------------------------------------------------------------------------


async def _sim_control(info: dict[str, Any], path: str, body: Any) -> None:
    ctx = ssl.create_default_context(cafile=info["ca_file"])
    async with aiohttp.ClientSession() as http, \
            http.post(info["authority_url"] + path, json=body, ssl=ctx) as resp:
        if resp.status >= 400:
            raise RuntimeError(f"POST {path} -> {resp.status}: {await resp.text()}")


async def _poison(info: dict[str, Any], db: asyncpg.Connection, token: str, tenant_id: str) -> None:
    """One user of the tenant gets a job title PostgreSQL cannot store, changed through Graph."""
    object_id = await db.fetchval(
        "SELECT entra_object_id FROM end_users WHERE entra_tenant_id = $1 AND sync_state = 'synced' LIMIT 1",
        tenant_id)
    ctx = ssl.create_default_context(cafile=info["ca_file"])
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http, \
            http.patch(f"{info['graph_url']}/users/{object_id}", json={"jobTitle": POISON_TITLE}, ssl=ctx) as resp:
        if resp.status != 204:
            raise RuntimeError(f"the poison change was refused: {resp.status} {await resp.text()}")


# --- the wave ---------------------------------------------------------------------------------------------------


async def _wave(
    stack: Stack, info: dict[str, Any], db: asyncpg.Connection, tokens: dict[str, str], healthy: list[str], *,
    rate: float, resync_timeout_s: float,
) -> dict[str, Any]:
    """The wave: changes at `rate` across the healthy tenants while every tenant resyncs; its figures.
    One script, top to bottom: start, drive, wait, measure (dev tooling)."""
    targets, org_of = await _targets(db, healthy)
    run = ChangeRun()
    stop = asyncio.Event()
    watch_db = await asyncpg.connect(info["database_url"])  # the watcher polls beside this function's queries
    watcher = asyncio.create_task(watch_end_users(watch_db, run, None, org_of=org_of))
    publisher = KafkaPublisher(KafkaSettings(bootstrap_servers=info["kafka_bootstrap_servers"],
                                             enable_idempotence=stack.env.get("KAFKA_ENABLE_IDEMPOTENCE") == "true"))
    await publisher.start()
    try:
        since = await db.fetchval("SELECT clock_timestamp()")
        cpu_before = _cpu(stack)
        started = time.monotonic()
        changes = asyncio.create_task(patch_open_loop(info, tokens, run, targets, rate=rate, stop=stop))
        await enqueue_tenants(publisher, [t["tenant_id"] for t in info["tenants"]], reason="bench")
        unfinished = await _resyncs_done(db, healthy, since, changes, timeout_s=resync_timeout_s)
        resync_seconds = time.monotonic() - started
        cpu_after = _cpu(stack)
        await asyncio.sleep(max(0.0, started + MIN_CHANGE_S - time.monotonic()))
        stop.set()
        await changes
        await run.settle(watcher)
    finally:
        stop.set()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await publisher.stop()
        await watch_db.close()
    by_process = {name: round(cpu_after.get(name, 0.0) - cpu_before.get(name, 0.0), 1) for name in cpu_after}
    latency = latency_figures(run)
    return {
        "resync_seconds": round(resync_seconds, 1),
        "resync_cpu_seconds": round(sum(v for k, v in by_process.items() if k.startswith("worker")), 1),
        "freshness_p50_s": latency["p50_s"], "freshness_p99_s": latency["p99_s"],
        "freshness_max_s": latency["max_s"], "lost": len(run.changes) - run.shown,
        "changes": len(run.changes), "resync_unfinished_tenants": unfinished,
        "resync_cpu_seconds_by_process": by_process,
    }


async def _targets(db: asyncpg.Connection, healthy: list[str]) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """A few synced users of every healthy tenant, interleaved so consecutive changes hit different tenants;
    and each one's Organization (for the watcher's look-ups)."""
    rows = await db.fetch(
        "SELECT tenant_id, object_id, org FROM (SELECT entra_tenant_id AS tenant_id, entra_object_id AS object_id,"
        " organization_id::text AS org,"
        " row_number() OVER (PARTITION BY entra_tenant_id ORDER BY entra_object_id) AS n FROM end_users"
        " WHERE entra_tenant_id = ANY ($1::text[]) AND sync_state = 'synced') u WHERE n <= $2 ORDER BY n, tenant_id",
        healthy, TARGETS_PER_TENANT)
    return [(r["tenant_id"], r["object_id"]) for r in rows], {r["object_id"]: r["org"] for r in rows}


async def _resyncs_done(
    db: asyncpg.Connection, healthy: list[str], since: Any, changes: asyncio.Task[None], *, timeout_s: float
) -> int:
    """Wait until every healthy tenant's full resync has finished since `since` (or the timeout); returns how
    many had not."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = await db.fetchval(
            "SELECT count(*) FROM tenant_sync_status WHERE tenant_id = ANY ($1::text[])"
            " AND last_full_resync_at >= $2", healthy, since)
        if done == len(healthy) or time.monotonic() > deadline:
            return len(healthy) - int(done)
        if changes.done():
            changes.result()  # the change load died: show why
        await asyncio.sleep(POLL_S * 4)


def _cpu(stack: Stack) -> dict[str, float]:
    """CPU seconds (user + system) each live child of the stack has used so far."""
    used = {}
    for name, proc in stack.children.procs.items():
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            used[name] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    return used
