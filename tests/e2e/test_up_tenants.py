"""End to end: `entra-sync up --tenants 3 --users 20` maps every simulated tenant to its own PSA tenant with an
enabled Organization whose End Users sync; stack.json lists them all, is private (0600) and holds only
absolute paths even when the state dir was given relative."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from tests.integration.conftest import graph_admin
from worker.dev.embedded import create_database, drop_database

pytestmark = pytest.mark.slow

TENANTS, USERS = 3, 20


@pytest.fixture(scope="module")
async def fleet_stack(tmp_path_factory: pytest.TempPathFactory, postgres_server_url: str) -> AsyncIterator[Path]:
    root = tmp_path_factory.mktemp("up-tenants")
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    database_url = None
    if "DATABASE_URL" in os.environ:
        env["DATABASE_URL"] = database_url = await create_database(postgres_server_url, "entra_sync_up")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])  # run from `root`, a relative state dir
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "up", "--state-dir", "state", "--tenants", str(TENANTS),
         "--users", str(USERS)], cwd=root, env=env, stdout=subprocess.DEVNULL,
        stderr=open(root / "up.log", "wb"))  # noqa: SIM115
    path = root / "state" / "stack.json"
    try:
        deadline = time.monotonic() + 120
        while not path.exists():
            assert proc.poll() is None, f"up exited with {proc.returncode}: {(root / 'up.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "stack.json not written within 120 s"
            await asyncio.sleep(0.2)
        yield path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        if database_url is not None:
            await drop_database(postgres_server_url, database_url)


async def _get(info: dict[str, Any], path: str) -> Any:
    headers = {"Authorization": f"Bearer {info['admin_token']}"}
    async with aiohttp.ClientSession(headers=headers) as http, http.get(info["admin_url"] + "/api/v1" + path) as r:
        assert r.status == 200, await r.text()
        data = await r.json()
        return data["items"] if isinstance(data, dict) and "items" in data else data


async def test_stack_json_lists_every_tenant_privately_with_absolute_paths(fleet_stack: Path) -> None:
    assert stat.S_IMODE(fleet_stack.stat().st_mode) == 0o600
    assert [p.name for p in fleet_stack.parent.iterdir() if p.name.endswith(".tmp")] == []  # no half-written copy
    info = json.loads(fleet_stack.read_text())
    assert len(info["tenants"]) == TENANTS
    assert len({t["tenant_id"] for t in info["tenants"]}) == TENANTS
    assert info["console_url"] == info["admin_url"] + "/"
    assert Path(info["ca_file"]).is_absolute() and Path(info["ca_file"]).is_file()
    for key, value in info.items():  # anything path-like, e.g. an embedded PostgreSQL's socket directory
        if isinstance(value, str) and "/" in value and "://" not in value:
            assert Path(value).is_absolute(), (key, value)
    if "host=" in info["database_url"]:
        assert info["database_url"].split("host=")[1].startswith("/"), info["database_url"]


async def test_every_tenant_has_its_own_psa_tenant_and_a_syncing_organization(fleet_stack: Path) -> None:
    info = json.loads(fleet_stack.read_text())
    wanted = {t["tenant_id"] for t in info["tenants"]}
    registered = {t["tenant_id"] for t in await _get(info, "/microsoft-tenants")}
    assert wanted <= registered
    psa = await _get(info, "/psa-tenants")
    mapped = {p["microsoft_tenant_id"]: p["id"] for p in psa if p.get("microsoft_tenant_id")}
    assert set(mapped) == wanted  # one PSA tenant per Microsoft tenant
    assert len(set(mapped.values())) == TENANTS
    orgs = await _get(info, "/organizations")
    for tenant_id, psa_id in mapped.items():
        mine = [o for o in orgs if o["psa_tenant_id"] == psa_id]
        assert mine, f"no Organization for tenant {tenant_id}"
        deadline = time.monotonic() + 90
        for org in mine:
            status = await _get(info, f"/organizations/{org['id']}/user-sync")
            assert status["status"] == "enabled", status
            while not (users := await _get(info, f"/organizations/{org['id']}/end-users")):
                assert time.monotonic() < deadline, f"Organization {org['name']} never got End Users"
                await asyncio.sleep(0.5)
            assert all(u["sync_state"] == "synced" for u in users)
    # The further tenants' Organizations sync everyone: each enabled Entra user of that tenant is an End User.
    sim = SimpleNamespace(info=SimpleNamespace(**{k: info[k] for k in ("graph_url", "authority_url", "ca_file")}))
    by_psa = {p["id"]: p["microsoft_tenant_id"] for p in psa if p.get("microsoft_tenant_id")}
    customers = [o for o in orgs if o["name"].startswith("Customer ")]
    assert len(customers) == TENANTS - 1
    for org in customers:
        tenant = next(t for t in info["tenants"] if t["tenant_id"] == by_psa[org["psa_tenant_id"]])
        admin = await graph_admin(sim, tenant)  # type: ignore[arg-type]
        listed = (await admin.call("GET", "/users?$select=id,accountEnabled"))["value"]
        assert len(listed) == USERS
        enabled = {u["id"] for u in listed if u["accountEnabled"]}
        linked = {u["entra_object_id"] for u in await _get(info, f"/organizations/{org['id']}/end-users")}
        assert linked == enabled


@pytest.mark.parametrize("args", [["--tenants", "0"], ["--users", "-1"], ["--tenants", "many"]])
def test_bad_counts_are_refused(args: list[str], tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "worker.cli", "up", "--state-dir", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert args[0] in done.stderr
    assert not (tmp_path / "stack.json").exists()
