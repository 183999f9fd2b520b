"""Fixtures wiring the sync engine to real parts: the simulator over HTTPS and the session database."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from azure.identity.aio import ClientSecretCredential

from simulator.server import Simulator
from worker.bench.common import register_organization
from worker.config import GraphSettings, Settings
from worker.engine.subscriptions import SubscriptionManager
from worker.engine.sync import SyncEngine
from worker.graph import GraphClients
from worker.store import Conn
from worker.store.pool import create_pool


@pytest.fixture(scope="session")
async def sim(tmp_state: Path) -> AsyncIterator[Simulator]:
    async with Simulator(state_dir=tmp_state / "sim", tenants=5, users=60, seed=7) as simulator:
        yield simulator


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, max_size=6)
    yield p
    await p.close()


@dataclass
class GraphAdmin:
    """Changes a simulated tenant the way an administrator would: Graph's write API over HTTPS."""

    graph_url: str
    token: str
    ca_file: str

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"}) as http, \
                http.request(method, self.graph_url + path, json=body, ssl=ctx) as resp:
            assert resp.status < 400, f"{method} {path}: {resp.status} {await resp.text()}"
            return await resp.json() if resp.status != 204 else None


@dataclass
class Env:
    engine: SyncEngine
    subs: SubscriptionManager
    settings: Settings
    tenant: dict[str, str]
    admin: GraphAdmin
    org_id: str


async def graph_admin(sim: Simulator, tenant: dict[str, str]) -> GraphAdmin:
    cred = ClientSecretCredential(
        tenant["tenant_id"], tenant["client_id"], tenant["client_secret"], authority=sim.info.authority_url,
        disable_instance_discovery=True, connection_verify=sim.info.ca_file,
    )
    token = (await cred.get_token("https://graph.microsoft.com/.default")).token
    await cred.close()
    return GraphAdmin(sim.info.graph_url, token, sim.info.ca_file)


async def make_org(conn: Conn, tenant: dict[str, str], filters: dict[str, Any]) -> str:
    """Register the tenant (once), a PSA tenant mapped to it and an Organization with sync enabled."""
    return await register_organization(conn, tenant, filters)


ALL = {"user_types": "all", "domains": "all", "office_locations": "all", "departments": "all", "groups": "all"}


@pytest.fixture
async def tenant_env(sim: Simulator, pool: asyncpg.Pool, request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    """A tenant of its own per test (the simulator has several), with one enabled Organization."""
    index = getattr(request, "param", 0)
    tenant = sim.info.tenants[index]
    settings = Settings(graph=GraphSettings(url=sim.info.graph_url, authority_url=sim.info.authority_url,
                                            ca_file=sim.info.ca_file, max_retries=3))
    graph = GraphClients(settings.graph)
    async with pool.acquire() as conn:
        org = await make_org(conn, tenant, ALL)
    env = Env(SyncEngine(pool=pool, graph=graph, settings=settings),
              SubscriptionManager(pool=pool, graph=graph, settings=settings),
              settings, tenant, await graph_admin(sim, tenant), org)
    yield env
    await graph.close()
