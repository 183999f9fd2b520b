"""Scale-out: two `entra-sync worker` replicas in one consumer group on the whole embedded stack (`Stack`:
simulator with several tenants, Tansu, webhook, scheduler, admin API; PostgreSQL from the session).

Tenants spread across the replicas (both do work); one replica is SIGKILLed right after a round of changes,
then more changes follow: its partitions move to the survivor within the session timeout and every change,
before and after the kill, lands in its End User. Across both replicas' logs, no two units of work of one
tenant ever overlap in time (the per-tenant advisory lock), the rebalance included.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.faults.conftest import ChangeTracker
from tests.integration.conftest import GraphAdmin, graph_admin
from tests.integration.test_sync_rules import sim_control
from worker.config import KafkaSettings
from worker.dev.embedded import create_database, drop_database
from worker.dev.stack import Stack

pytestmark = pytest.mark.slow

TENANTS, USERS = 6, 8
UNITS_OF_WORK = ("sync.delta", "sync.resync", "sync.org")
SLOW_GRAPH_MS = 300
SESSION_TIMEOUT_S = KafkaSettings().session_timeout_ms / 1000


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory, postgres_server_url: str) -> AsyncIterator[Stack]:
    database_url = await create_database(postgres_server_url, "entra_sync_scaleout")
    saved = {k: os.environ.get(k) for k in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    os.environ["DATABASE_URL"] = database_url
    os.environ.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # its own broker: the consumer group names are the product's
    s = Stack(tmp_path_factory.mktemp("scaleout"), tenants=TENANTS, users=USERS, workers=2)
    try:
        await s.start()
        yield s
    finally:
        s.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        await drop_database(postgres_server_url, database_url)


@dataclass
class Fleet(ChangeTracker):
    stack: Stack
    pool: asyncpg.Pool
    admins: dict[str, GraphAdmin]
    users: dict[str, list[str]]  # tenant id → Entra object ids of its synced End Users
    org_id: None = None

    async def patch_round(self, tag: str, index: int) -> dict[str, str]:
        """One user of every tenant gets a new job title through Graph."""
        wanted = {self.users[t][index]: f"{tag} {t[:8]}" for t in self.users}
        by_user = {oid: t for t, oids in self.users.items() for oid in oids}
        await asyncio.gather(*(self.admins[by_user[oid]].call("PATCH", f"/users/{oid}", {"jobTitle": title})
                               for oid, title in wanted.items()))
        return wanted

    async def admin(self, method: str, path: str) -> Any:
        info = self.stack.info
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {info['admin_token']}"}) as http, \
                http.request(method, f"{info['admin_url']}/api/v1{path}") as resp:
            assert resp.status < 400, await resp.text()
            data = await resp.json()
            return data["items"] if isinstance(data, dict) and "items" in data else data

    async def sim_control(self, method: str, path: str, body: Any = None) -> Any:
        sim = SimpleNamespace(info=SimpleNamespace(graph_url=self.stack.info["graph_url"],
                                                   ca_file=self.stack.info["ca_file"]))
        return await sim_control(sim, method, path, body)  # type: ignore[arg-type]

    async def run_now_everywhere(self) -> list[str]:
        orgs = await self.admin("GET", "/organizations")
        started = await asyncio.gather(*(self.admin("POST", f"/organizations/{o['id']}/user-sync/runs")
                                         for o in orgs))
        return [str(r["run_id"]) for r in started]

    async def runs_succeed(self, run_ids: list[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while (statuses := [(await self.admin("GET", f"/sync-runs/{r}"))["status"] for r in run_ids]) != \
                ["succeeded"] * len(run_ids):
            assert time.monotonic() < deadline, f"runs not done: {statuses}"
            await asyncio.sleep(0.5)

    def check_alive(self) -> None:
        dead = [n for n in self.stack.children.exited() if n != "worker-2"]
        assert not dead, f"stack processes exited: {dead}; see {self.stack.children.log_dir}"


@pytest.fixture(scope="module")
async def fleet(stack: Stack) -> AsyncIterator[Fleet]:
    pool = await asyncpg.create_pool(stack.info["database_url"], min_size=1, max_size=2)
    sim = SimpleNamespace(info=SimpleNamespace(**{k: stack.info[k] for k in ("graph_url", "authority_url", "ca_file")}))
    admins = {t["tenant_id"]: await graph_admin(sim, t) for t in stack.info["tenants"]}  # type: ignore[arg-type]
    deadline = time.monotonic() + 120
    while True:  # every tenant synced and subscribed (its users subscription exists)
        rows = await pool.fetch(
            "SELECT e.entra_tenant_id AS tenant_id, array_agg(DISTINCT e.entra_object_id ORDER BY e.entra_object_id)"
            " AS users FROM end_users e WHERE e.sync_state = 'synced' GROUP BY 1")
        subscribed = await pool.fetchval(
            "SELECT count(DISTINCT tenant_id) FROM graph_subscriptions WHERE lower(resource) = 'users'")
        users = {r["tenant_id"]: list(r["users"]) for r in rows}
        if len(users) == TENANTS and subscribed == TENANTS and all(len(u) >= 3 for u in users.values()):
            break
        assert time.monotonic() < deadline, f"the fleet never synced: {len(users)} tenants, {subscribed} subscribed"
        await asyncio.sleep(0.5)
    yield Fleet(stack, pool, admins, users)
    await pool.close()


def units_of_work(log: Path) -> list[dict[str, Any]]:
    """The canonical sync lines of one worker's log: tenant, and when the unit of work started and ended."""
    units = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("event") in UNITS_OF_WORK:
            end = datetime.fromisoformat(entry["timestamp"])
            units.append({"tenant_id": entry["tenant_id"], "event": entry["event"], "log": log.name,
                          "start": end - timedelta(milliseconds=entry["duration_ms"]), "end": end})
    return units


def deltas_since(log: Path, since: datetime) -> set[str]:
    """Tenants whose change notifications this worker turned into a delta call since `since`."""
    return {u["tenant_id"] for u in units_of_work(log) if u["event"] == "sync.delta" and u["end"] >= since}


async def test_killed_replica_hands_its_tenants_over_and_nothing_is_lost(fleet: Fleet) -> None:
    logs = fleet.stack.children.log_dir
    round_a = datetime.now(UTC)
    await fleet.converge(await fleet.patch_round("Before kill", 0), timeout_s=60)
    deadline = time.monotonic() + 30
    while True:  # a change may land first through a replayed start-up command; its notification follows
        first, second = deltas_since(logs / "worker.log", round_a), deltas_since(logs / "worker-2.log", round_a)
        if first | second == set(fleet.users):
            break
        assert time.monotonic() < deadline, f"notifications never handled: {set(fleet.users) - first - second}"
        await asyncio.sleep(0.5)
    print(f"before the kill, change notifications of {len(first)} tenants on worker, {len(second)} on worker-2")
    assert first and second, "the tenants' notifications must spread over both replicas"

    # Around the kill, each tenant has commands (a run-now of every Organization) and notifications in
    # flight at once, in two consumer groups that may sit on different replicas: only the tenant lock keeps
    # them serial (second test).
    # Graph answers slowly meanwhile, so that work is still running when the replica dies.
    await fleet.sim_control("POST", "/_sim/faults", {"latency_ms": SLOW_GRAPH_MS})
    try:
        runs = await fleet.run_now_everywhere()
        in_flight = await fleet.patch_round("In flight at the kill", 1)  # not waited for
        victim = fleet.stack.children.procs["worker-2"]
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        killed, killed_at = time.monotonic(), datetime.now(UTC)
        after = await fleet.patch_round("After kill", 2)
    finally:
        await fleet.sim_control("DELETE", "/_sim/faults")

    took = await fleet.converge(in_flight | after, timeout_s=60)
    print(f"SIGKILL of one of two replicas: every change landed {took:.1f}s after the kill "
          f"(session timeout {SESSION_TIMEOUT_S:.0f}s)")
    assert time.monotonic() - killed < SESSION_TIMEOUT_S + 20, "the survivor took too long to take over"
    # The notifications group's partitions moved too (a change may land first through a replayed command
    # of the commands group, which rebalances on its own).
    while not second <= (taken := deltas_since(logs / "worker.log", killed_at)):
        assert time.monotonic() - killed < SESSION_TIMEOUT_S + 30, \
            f"the survivor never took these tenants' notifications over: {second - taken}"
        await asyncio.sleep(0.5)
    await fleet.runs_succeed(runs, timeout_s=60)  # and no command was lost with the killed replica
    assert fleet.stack.children.procs["worker"].poll() is None


async def test_no_tenant_ever_had_two_units_of_work_at_once(fleet: Fleet) -> None:
    logs = fleet.stack.children.log_dir
    units = units_of_work(logs / "worker.log") + units_of_work(logs / "worker-2.log")
    assert {u["log"] for u in units} == {"worker.log", "worker-2.log"}
    by_tenant: dict[str, list[dict[str, Any]]] = {}
    for unit in units:
        by_tenant.setdefault(unit["tenant_id"], []).append(unit)
    for tenant_id, mine in by_tenant.items():
        mine.sort(key=lambda u: u["start"])
        for a, b in itertools.pairwise(mine):
            assert b["start"] >= a["end"], f"tenant {tenant_id}: {a} overlaps {b}"
