"""End to end: `entra-sync up` starts the whole product; a user changed in the simulated tenant reaches the
End User through notification → webhook → Kafka → worker → PostgreSQL, with no manual step."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from azure.identity.aio import ClientSecretCredential

from worker.dev.embedded import create_database, drop_database

pytestmark = pytest.mark.slow


async def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.poll() is None, f"entra-sync up exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"{path} not written within {timeout_s}s"
        await asyncio.sleep(0.2)
    return dict(json.loads(path.read_text()))


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory, postgres_server_url: str) -> AsyncIterator[dict[str, Any]]:
    state = tmp_path_factory.mktemp("stack")
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    database_url = None
    if "DATABASE_URL" in os.environ:
        env["DATABASE_URL"] = database_url = await create_database(postgres_server_url, "entra_sync_e2e")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "up", "--state-dir", str(state)], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(state / "up.log", "wb"))  # noqa: SIM115
    try:
        info = await _wait_for(state / "stack.json", proc, timeout_s=90)
        info["_ready_s"] = time.monotonic() - started
        info["_proc"] = proc
        info["_state"] = state
        yield info
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        if database_url is not None:  # a shared server keeps no database of ours
            await drop_database(postgres_server_url, database_url)


async def _admin(stack: dict[str, Any], path: str) -> Any:
    headers = {"Authorization": f"Bearer {stack['admin_token']}"}
    async with aiohttp.ClientSession(headers=headers) as http, http.get(stack["admin_url"] + "/api/v1" + path) as r:
        assert r.status == 200, await r.text()
        return await r.json()


def _items(data: Any) -> list[dict[str, Any]]:
    return list(data["items"] if isinstance(data, dict) and "items" in data else data)


async def _end_users(stack: dict[str, Any], org_id: str, query: str = "") -> list[dict[str, Any]]:
    return _items(await _admin(stack, f"/organizations/{org_id}/end-users{query}"))


async def _eventually(check: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


async def test_stack_json_has_the_contract_fields(stack: dict[str, Any]) -> None:
    for key in ("webhook_url", "admin_url", "admin_token", "graph_url", "authority_url", "ca_file",
                "database_url", "kafka_bootstrap_servers", "tenants"):
        assert key in stack, key
    assert {"tenant_id", "client_id", "client_secret", "default_domain"} <= set(stack["tenants"][0])
    assert stack["_ready_s"] < 60, f"stack.json took {stack['_ready_s']:.1f}s"


async def test_demo_organizations_list_end_users(stack: dict[str, Any]) -> None:
    orgs = _items(await _admin(stack, "/organizations"))
    assert len(orgs) >= 2
    for org in orgs:
        users = await _eventually(lambda org=org: _end_users(stack, org["id"]), timeout_s=60)
        assert all(u["sync_state"] == "synced" for u in users)


async def test_patched_user_reaches_end_user_within_seconds(stack: dict[str, Any]) -> None:
    org = next(o for o in _items(await _admin(stack, "/organizations")) if o["name"] == "Contoso Engineering")
    users = await _eventually(lambda: _end_users(stack, org["id"]), timeout_s=60)
    target = users[0]
    tenant = stack["tenants"][0]
    credential = ClientSecretCredential(
        tenant["tenant_id"], tenant["client_id"], tenant["client_secret"], authority=stack["authority_url"],
        disable_instance_discovery=True, connection_verify=stack["ca_file"],
    )
    token = (await credential.get_token("https://graph.microsoft.com/.default")).token
    await credential.close()
    new_title = f"Principal Engineer {int(time.time())}"
    import ssl

    ctx = ssl.create_default_context(cafile=stack["ca_file"])
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        url = f"{stack['graph_url']}/users/{target['entra_object_id']}"
        async with http.patch(url, json={"jobTitle": new_title}, ssl=ctx) as resp:
            assert resp.status == 204, await resp.text()
    patched_at = time.monotonic()

    async def changed() -> bool:
        one = await _admin(stack, f"/end-users/{target['id']}")
        return bool(one["job_title"] == new_title)

    await _eventually(changed, timeout_s=10)
    assert time.monotonic() - patched_at < 10


async def test_sigterm_stops_everything(stack: dict[str, Any]) -> None:
    proc: subprocess.Popen[bytes] = stack["_proc"]
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert children, "up should have started child processes"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    await asyncio.sleep(0.5)
    alive = [pid for pid in children if Path(f"/proc/{pid}").exists()
             and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()]
    assert alive == [], f"left behind: {alive}"
