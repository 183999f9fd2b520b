"""Fixtures for the console's browser tests: the whole product (`entra-sync up`) and Debian's Chromium.

The stack is the real one — admin API process (which serves the console), worker, webhook, PostgreSQL, the
Tansu broker and the Graph simulator — started once for the module. The browser is `/usr/bin/chromium`
driven by Playwright (never a downloaded browser: `playwright install` is not used).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from azure.identity.aio import ClientSecretCredential

from worker.dev.embedded import create_database, drop_database

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory, postgres_server_url: str) -> AsyncIterator[dict[str, Any]]:
    state = tmp_path_factory.mktemp("console-stack")
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    database_url = None
    if "DATABASE_URL" in os.environ:
        env["DATABASE_URL"] = database_url = await create_database(postgres_server_url, "entra_sync_console")
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "up", "--state-dir", str(state)], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(state / "up.log", "wb"))  # noqa: SIM115
    try:
        deadline = time.monotonic() + 90
        while not (state / "stack.json").exists():
            assert proc.poll() is None, f"entra-sync up exited with {proc.returncode}; see {state / 'up.log'}"
            assert time.monotonic() < deadline, "stack.json not written within 90 s"
            await asyncio.sleep(0.2)
        info = dict(json.loads((state / "stack.json").read_text()))
        info["_state"] = state
        yield info
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        if database_url is not None:
            await drop_database(postgres_server_url, database_url)


class Admin:
    """The admin API as a test calls it, to set up worlds and to check what the console did."""

    def __init__(self, stack: dict[str, Any]) -> None:
        self.url = stack["admin_url"] + "/api/v1"
        self.headers = {"Authorization": f"Bearer {stack['admin_token']}"}

    async def call(self, method: str, path: str, body: Any = None, *, expect: int | None = None) -> Any:
        async with aiohttp.ClientSession(headers=self.headers) as http, \
                http.request(method, self.url + path, json=body) as resp:
            data = await resp.json(content_type=None)
            assert expect is None or resp.status == expect, (resp.status, data)
            return data

    async def items(self, path: str) -> list[dict[str, Any]]:
        data = await self.call("GET", path)
        return list(data["items"] if isinstance(data, dict) and "items" in data else data)


class Graph:
    """The simulated tenant changed the way an administrator would: Graph's write API with a real token."""

    def __init__(self, stack: dict[str, Any], token: str) -> None:
        self.url = stack["graph_url"]
        self.sim_url = stack["authority_url"]
        self.tenant_id = stack["tenants"][0]["tenant_id"]
        self.token = token
        self.ssl = ssl.create_default_context(cafile=stack["ca_file"])

    async def sim(self, method: str, path: str, body: Any = None) -> Any:
        """The simulator's own controls (`/_sim/`, no token)."""
        async with aiohttp.ClientSession() as http, \
                http.request(method, self.sim_url + path, json=body, ssl=self.ssl) as resp:
            assert resp.status < 400, (method, path, resp.status, await resp.text())
            return await resp.json(content_type=None)

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"}) as http, \
                http.request(method, self.url + path, json=body, ssl=self.ssl) as resp:
            assert resp.status < 400, (method, path, resp.status, await resp.text())
            return await resp.json() if resp.status != 204 else None


@pytest.fixture(scope="module")
def admin(stack: dict[str, Any]) -> Admin:
    return Admin(stack)


@pytest.fixture(scope="module")
async def graph(stack: dict[str, Any]) -> Graph:
    tenant = stack["tenants"][0]
    credential = ClientSecretCredential(
        tenant["tenant_id"], tenant["client_id"], tenant["client_secret"], authority=stack["authority_url"],
        disable_instance_discovery=True, connection_verify=stack["ca_file"],
    )
    token = (await credential.get_token("https://graph.microsoft.com/.default")).token
    await credential.close()
    return Graph(stack, token)


async def eventually(check: Callable[[], Awaitable[Any]], timeout_s: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what} not met within {timeout_s} s"
        await asyncio.sleep(0.25)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where every page's screenshot goes: CONSOLE_SCREENSHOTS when set, else the pytest tmp dir."""
    wanted = os.environ.get("CONSOLE_SCREENSHOTS")
    path = Path(wanted) if wanted else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does it)")
    from playwright.async_api import expect

    expect.set_options(timeout=15_000)  # a loaded 2-core machine: a preview over the mirror can take seconds
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()
