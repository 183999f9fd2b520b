"""Fixtures of the simulator conformance suite: simulators, real clients, and a notification receiver.

Clients are the real ones: `azure-identity` for tokens, `msgraph-sdk` for typed calls and `aiohttp` over
HTTPS (trusting the simulator's CA) where the SDK cannot express a case. No HTTP is mocked.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from azure.identity.aio import ClientSecretCredential
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from msgraph import GraphServiceClient
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph_core import GraphClientFactory

from simulator import Simulator

SCOPE = "https://graph.microsoft.com/.default"


@dataclass
class Graph:
    """Real clients for one simulated tenant."""

    sim: Simulator
    tenant: dict[str, str]
    credential: ClientSecretCredential
    sdk: GraphServiceClient
    http: aiohttp.ClientSession
    _httpx: httpx.AsyncClient

    @property
    def base(self) -> str:
        return self.sim.info.graph_url

    async def token(self) -> str:
        return (await self.credential.get_token(SCOPE)).token

    async def call(self, method: str, path: str, *, json: Any = None, headers: dict[str, str] | None = None,
                   data: Any = None) -> tuple[int, Any, dict[str, str]]:  # fmt: skip
        """A raw HTTPS call; `path` is relative to graph_url or absolute. Returns (status, JSON or text, headers)."""
        url = path if path.startswith("https://") else f"{self.base}{path}"
        all_headers = {"Authorization": f"Bearer {await self.token()}", **(headers or {})}
        async with self.http.request(method, url, json=json, data=data, headers=all_headers) as response:
            text = await response.text()
            body: Any = text
            if response.content_type == "application/json" and text:
                body = await response.json(content_type=None)
            return response.status, body, dict(response.headers)

    async def sim_call(self, method: str, path: str, *, json: Any = None) -> Any:
        async with self.http.request(method, f"{self.sim.info.authority_url}{path}", json=json) as response:
            assert response.status < 300, await response.text()
            return await response.json() if response.status != 204 else None

    async def close(self) -> None:
        await self.credential.close()
        await self._httpx.aclose()
        await self.http.close()


async def make_graph(sim: Simulator, index: int = 0) -> Graph:
    tenant = sim.info.tenants[index]
    credential = ClientSecretCredential(
        tenant["tenant_id"], tenant["client_id"], tenant["client_secret"], authority=sim.info.authority_url,
        disable_instance_discovery=True, connection_verify=sim.info.ca_file,
    )  # fmt: skip
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[SCOPE], allowed_hosts=["127.0.0.1"])
    context = ssl.create_default_context(cafile=sim.info.ca_file)
    http_client = httpx.AsyncClient(verify=context, timeout=30)
    adapter = GraphRequestAdapter(auth, GraphClientFactory.create_with_default_middleware(client=http_client))
    adapter.base_url = sim.info.graph_url
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))
    return Graph(sim, tenant, credential, GraphServiceClient(request_adapter=adapter), session, http_client)


@pytest.fixture(scope="session")
async def shared_sim(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Simulator]:
    """One simulator for read-mostly tests: two tenants of 300 users. Tests must not move its clock."""
    async with Simulator(state_dir=tmp_path_factory.mktemp("sim-shared"), tenants=2, users=300, seed=7) as sim:
        yield sim


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Simulator]:
    """A fresh simulator per test (cheap: ~0.1 s): for clock, faults and counting changes."""
    async with Simulator(state_dir=tmp_path / "sim", tenants=2, users=120, seed=3) as simulator:
        simulator.state.tunables.batch_window_s = 0.02
        yield simulator


@pytest.fixture
async def graph(sim: Simulator) -> AsyncIterator[Graph]:
    client = await make_graph(sim, 0)
    yield client
    await client.close()


@pytest.fixture
async def graph2(sim: Simulator) -> AsyncIterator[Graph]:
    client = await make_graph(sim, 1)
    yield client
    await client.close()


@pytest.fixture
async def shared_graph(shared_sim: Simulator) -> AsyncIterator[Graph]:
    client = await make_graph(shared_sim, 0)
    yield client
    await client.close()


@dataclass
class Receiver:
    """A tiny notification endpoint on 127.0.0.1: answers handshakes, records POSTed bodies."""

    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    validations: list[tuple[str, str, str, bytes]] = field(default_factory=list)  # path, token, content type, body
    raw_queries: list[str] = field(default_factory=list)
    status: int = 202
    delay_s: float = 0.0
    handshake: str = "echo"  # echo | wrong | json | error | slow
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def items(self) -> list[dict[str, Any]]:
        return [item for body in self.bodies for item in body.get("value", [])]

    async def wait_items(self, count: int, within: float = 5.0) -> list[dict[str, Any]]:
        async def enough() -> None:
            while len(self.items()) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(enough(), within)
        return self.items()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def handle(request: web.Request) -> web.Response:
        token = request.query.get("validationToken")
        if token is not None:
            state.raw_queries.append(request.rel_url.raw_query_string)
            state.validations.append((request.path, token, request.headers.get("Content-Type", ""),
                                      await request.read()))  # fmt: skip
            return await _handshake_answer(state, token)
        await asyncio.sleep(state.delay_s)
        state.bodies.append(await request.json())
        state.arrived.set()
        return web.Response(status=state.status)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}"
    yield state
    await runner.cleanup()


async def _handshake_answer(state: Receiver, token: str) -> web.Response:
    if state.handshake == "wrong":
        return web.Response(text="not the token", content_type="text/plain")
    if state.handshake == "json":
        return web.json_response(token)
    if state.handshake == "error":
        return web.Response(status=500)
    if state.handshake == "slow":
        await asyncio.sleep(1.0)
    return web.Response(text=token, content_type="text/plain")


Poll = Callable[[Callable[[], bool], float], Awaitable[None]]


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll `predicate` every 20 ms until it holds (for effects of the simulator's background tasks)."""
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
