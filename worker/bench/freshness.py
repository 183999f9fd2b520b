"""`entra-sync bench freshness`: how long a user changed in the tenant takes to show on its End User.

A whole stack (`worker.dev.stack.Stack` on a scratch database, `common.scratch_database`: embedded Tansu, the
simulator, webhook, worker, scheduler and admin API as child processes, and the demo Organizations) runs in a
state dir. Once the demo
End Users are synced and the tenant has its users subscription and delta link, N users are changed in the
simulator through Graph (`PATCH /users/{id}` with a unique `jobTitle`) at `rate` changes/s, open loop. Each
change's clock starts at its 204. Nothing else is triggered: the change travels the real path (simulator
notification → webhook → Kafka → worker delta → PostgreSQL). PostgreSQL is polled directly (one query every
~50 ms for the target End Users' `job_title`), and a change is shown when every End User of that Entra user
carries its title. `lost` counts changes not shown within `LOST_AFTER_S` of the last PATCH.

A user is changed again only once its previous change was shown, so a later title never hides an earlier
one (the demo has fewer End Users than a typical N); with latencies well below N / rate this never waits.

The change load (`ChangeRun`, `patch_open_loop`, `watch_end_users`, `latency_figures`) is shared with
`bench fleet`, which changes users of many tenants while their full resyncs run.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from azure.identity.aio import ClientSecretCredential

from worker.bench.common import scratch_database
from worker.dev.stack import Stack

POLL_S = 0.05
LOST_AFTER_S = 60.0
READY_TIMEOUT_S = 120.0
GRAPH_SCOPE = "https://graph.microsoft.com/.default"


@dataclass
class _Change:
    index: int
    tenant_id: str
    object_id: str
    title: str
    patched_at: float | None = None
    shown_at: float | None = None


@dataclass
class ChangeRun:
    """The changes of one measurement: made, pending (patched, not yet shown) and busy users."""

    changes: list[_Change] = field(default_factory=list)
    pending: dict[str, _Change] = field(default_factory=dict)  # object id → its unshown patched change
    busy: set[str] = field(default_factory=set)  # object ids with a change in flight or not yet shown
    patch_errors: int = 0
    last_patch_at: float = 0.0
    patching_done: bool = False

    @property
    def shown(self) -> int:
        return sum(1 for c in self.changes if c.shown_at is not None)

    async def settle(self, watcher: asyncio.Task[None]) -> None:
        """Wait until every patched change is shown, or `LOST_AFTER_S` after the last patch."""
        deadline = self.last_patch_at + LOST_AFTER_S
        while self.pending and time.monotonic() < deadline and not watcher.done():
            await asyncio.sleep(POLL_S)


def latency_figures(run: ChangeRun) -> dict[str, float]:
    """p50, p99 and max of patch → shown, in seconds (0 when nothing was shown)."""
    latencies = sorted(c.shown_at - c.patched_at for c in run.changes
                       if c.shown_at is not None and c.patched_at is not None) or [0.0]
    return {"p50_s": round(_percentile(latencies, 0.50), 3), "p99_s": round(_percentile(latencies, 0.99), 3),
            "max_s": round(latencies[-1], 3)}


async def bench_freshness(*, changes: int, rate: float, state_dir: Path | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the CONTRACTS.md JSON object."""
    with contextlib.ExitStack() as cleanup:
        if state_dir is None:
            state_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bench-freshness-")))
        # A database of its own (on DATABASE_URL's server, else an embedded PostgreSQL), as `bench fleet` does: the
        # stack's demo tenant and Organizations never land in DATABASE_URL's database, and a second run never
        # finds the first one's.
        async with scratch_database(state_dir) as database_url:
            stack = Stack(state_dir, database_url=database_url)
            try:
                info = await stack.start()
                run = await _measure(info, changes=changes, rate=rate)
            finally:
                await asyncio.to_thread(stack.stop)
    return _result(run, changes)


def _result(run: ChangeRun, changes: int) -> dict[str, Any]:
    return {"bench": "freshness", "changes": changes, **latency_figures(run), "lost": changes - run.shown}


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


# --- readiness ------------------------------------------------------------------------------------------------


async def _wait_ready(info: dict[str, Any], db: asyncpg.Connection) -> tuple[list[str], list[str]]:
    """The demo Organizations' ids and the Entra object ids of their synced End Users, once stable."""
    tenant_id = info["tenants"][0]["tenant_id"]
    headers = {"Authorization": f"Bearer {info['admin_token']}"}
    api = info["admin_url"] + "/api/v1"
    deadline = time.monotonic() + READY_TIMEOUT_S
    previous: list[str] | None = None
    async with aiohttp.ClientSession(headers=headers) as http:
        while True:
            org_ids, object_ids = await _synced_users(http, api)
            infra = await db.fetchval(
                "SELECT EXISTS (SELECT 1 FROM graph_subscriptions WHERE tenant_id = $1 AND lower(resource) = 'users')"
                " AND EXISTS (SELECT 1 FROM delta_links WHERE tenant_id = $1 AND resource = 'users')", tenant_id)
            if infra and len(org_ids) >= 2 and object_ids and object_ids == previous:
                return org_ids, object_ids
            previous = object_ids
            if time.monotonic() > deadline:
                raise TimeoutError(f"demo not ready within {READY_TIMEOUT_S}s (subscription/delta link: {infra},"
                                   f" organizations: {len(org_ids)}, synced users: {len(object_ids)})")
            await asyncio.sleep(1.0)


async def _synced_users(http: aiohttp.ClientSession, api: str) -> tuple[list[str], list[str]]:
    org_ids: list[str] = []
    object_ids: set[str] = set()
    for org in _items(await _get(http, f"{api}/organizations")):
        org_ids.append(str(org["id"]))
        for user in _items(await _get(http, f"{api}/organizations/{org['id']}/end-users")):
            if user.get("sync_state") == "synced" and user.get("entra_object_id"):
                object_ids.add(str(user["entra_object_id"]))
    return org_ids, sorted(object_ids)


async def _get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        if resp.status != 200:
            raise RuntimeError(f"GET {url} -> {resp.status}: {await resp.text()}")
        return await resp.json()


def _items(data: Any) -> list[dict[str, Any]]:
    return list(data["items"] if isinstance(data, dict) and "items" in data else data)


# --- measurement ----------------------------------------------------------------------------------------------


async def _measure(info: dict[str, Any], *, changes: int, rate: float) -> ChangeRun:
    db = await asyncpg.connect(info["database_url"])
    try:
        org_ids, object_ids = await _wait_ready(info, db)
        tenant = info["tenants"][0]
        tokens = {tenant["tenant_id"]: await graph_token(info, tenant)}
        run = ChangeRun()
        watcher = asyncio.create_task(watch_end_users(db, run, org_ids))
        try:
            await patch_open_loop(info, tokens, run, [(tenant["tenant_id"], o) for o in object_ids],
                                  changes=changes, rate=rate)
            await run.settle(watcher)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        return run
    finally:
        await db.close()


async def graph_token(info: dict[str, Any], tenant: dict[str, str]) -> str:
    """A Graph token for `tenant`, from the (simulated) Entra token endpoint, as a Graph client gets one."""
    credential = ClientSecretCredential(
        tenant["tenant_id"], tenant["client_id"], tenant["client_secret"], authority=info["authority_url"],
        disable_instance_discovery=True, connection_verify=info["ca_file"] or True,
    )
    try:
        return (await credential.get_token(GRAPH_SCOPE)).token
    finally:
        await credential.close()


async def patch_open_loop(
    info: dict[str, Any], tokens: dict[str, str], run: ChangeRun, targets: list[tuple[str, str]], *,
    rate: float, changes: int | None = None, stop: asyncio.Event | None = None,
) -> None:
    """Open loop at `rate`: change i is due at i / rate; each goes to the least recently changed free user of
    `targets` ((tenant id, object id) pairs, signed in with that tenant's token). Ends after `changes` changes
    or once `stop` is set."""
    nonce = secrets.token_hex(4)
    ctx = ssl.create_default_context(cafile=info["ca_file"]) if info["ca_file"] else None
    order = list(targets)  # rotation: least recently changed first
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession() as http:
        started = time.monotonic()
        i = 0
        while (changes is None or i < changes) and not (stop is not None and stop.is_set()):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            while (target := next((t for t in order if t[1] not in run.busy), None)) is None:
                if stop is not None and stop.is_set():  # every target's change is still unshown
                    break
                await asyncio.sleep(0.01)
            if target is None:
                break
            order.remove(target)
            order.append(target)
            change = _Change(i, target[0], target[1], f"bench-{i}-{nonce}")
            run.changes.append(change)
            run.busy.add(change.object_id)
            task = asyncio.create_task(_patch(http, info["graph_url"], ctx, tokens[change.tenant_id], change, run))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.gather(*tasks)
    run.patching_done = True


async def _patch(
    http: aiohttp.ClientSession, graph_url: str, ctx: ssl.SSLContext | None, token: str, change: _Change,
    run: ChangeRun,
) -> None:
    url = f"{graph_url}/users/{change.object_id}"
    headers = {"Authorization": f"Bearer {token}"}
    for attempt in range(5):
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.patch(url, json={"jobTitle": change.title}, headers=headers,
                                  ssl=ctx if ctx else True) as resp:
                await resp.read()
                if resp.status == 204:
                    change.patched_at = time.monotonic()
                    run.last_patch_at = max(run.last_patch_at, change.patched_at)
                    run.pending[change.object_id] = change
                    return
        await asyncio.sleep(0.1 * (attempt + 1))
    run.patch_errors += 1  # never applied: stays unshown, so counted in `lost`
    run.last_patch_at = max(run.last_patch_at, time.monotonic())


async def watch_end_users(
    db: asyncpg.Connection, run: ChangeRun, org_ids: list[str] | None, *, org_of: dict[str, str] | None = None
) -> None:
    """Every POLL_S, the titles of the End Users with a pending change (in `org_ids`, or in every
    Organization); marks the changes they show. `org_of` (object id → its Organization) makes each look-up one
    probe of the End Users' unique key: a fleet's watcher otherwise scans every End User 20 times a second,
    a PostgreSQL core's worth of work beside the system it measures."""
    query = ("SELECT t.object_id, t.title, bool_and(e.job_title IS NOT DISTINCT FROM t.title)"
             " FROM unnest($1::text[], $2::text[]) AS t (object_id, title)"
             " JOIN end_users e ON e.entra_object_id = t.object_id"
             " AND ($3::uuid[] IS NULL OR e.organization_id = ANY ($3::uuid[]))"
             " GROUP BY t.object_id, t.title")
    by_key = ("SELECT t.object_id, t.title, e.job_title IS NOT DISTINCT FROM t.title"
              " FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[]) AS t (object_id, title, org, tenant)"
              " JOIN end_users e ON e.organization_id = t.org AND e.entra_tenant_id = t.tenant"
              " AND e.entra_object_id = t.object_id")
    while True:
        began = time.monotonic()
        pending = list(run.pending.values())
        if pending and org_of is not None:
            rows = await db.fetch(by_key, [c.object_id for c in pending], [c.title for c in pending],
                                  [org_of[c.object_id] for c in pending], [c.tenant_id for c in pending])
        elif pending:
            rows = await db.fetch(query, [c.object_id for c in pending], [c.title for c in pending], org_ids)
        else:
            rows = []
        if rows:
            now = time.monotonic()
            for object_id, title, shown in rows:
                change = run.pending.get(object_id)
                if shown and change is not None and change.title == title:
                    change.shown_at = now
                    del run.pending[object_id]
                    run.busy.discard(object_id)
        await asyncio.sleep(max(0.0, POLL_S - (time.monotonic() - began)))
