"""The simulator-only `/_sim/` controls and the passage of simulated time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp

from simulator import Simulator, run_simulator
from simulator.model import Tenant
from simulator.server import _is_loopback
from tests.simulator.conftest import Graph, make_graph
from tests.simulator.test_users import new_user


async def test_state_summary(graph: Graph) -> None:
    state = await graph.sim_call("GET", "/_sim/state")
    tenant = state["tenants"][0]
    assert tenant["tenant_id"] == graph.tenant["tenant_id"]
    assert tenant["users"] > 100 and tenant["groups"] > 5 and tenant["devices"] > 50
    assert tenant["capabilities"] == {"p1p2": True, "intune": True}
    assert {"delivered", "pending", "dropped_expired"} <= set(state["delivery"])
    assert state["clock"]["offset_seconds"] == 0


async def test_bulk_seed_adds_users_groups_and_devices(graph: Graph) -> None:
    before = await graph.sim_call("GET", "/_sim/state")
    after = await graph.sim_call("POST", "/_sim/seed", json={"tenant_id": graph.tenant["tenant_id"], "users": 500})
    assert after["users"] == before["tenants"][0]["users"] + 500
    assert after["devices"] > before["tenants"][0]["devices"]


async def test_new_tenant_on_demand_signs_in_like_the_others(sim: Simulator, graph: Graph) -> None:
    created = await graph.sim_call("POST", "/_sim/tenants", json={"users": 30})
    assert sim.info.tenants[-1] == created
    other = await make_graph(sim, len(sim.info.tenants) - 1)
    status, body, _ = await other.call("GET", "/users?$select=id&$top=999")
    await other.close()
    assert status == 200 and len(body["value"]) == 30


async def test_clock_advances_and_purges_soft_deleted_users_after_30_days(graph: Graph) -> None:
    user = await graph.sdk.users.post(new_user(graph.tenant["default_domain"]))
    assert user is not None and user.id
    await graph.sdk.users.by_user_id(user.id).delete()
    await graph.sim_call("POST", "/_sim/clock", json={"days": 29})
    assert (await graph.call("GET", f"/directory/deletedItems/{user.id}"))[0] == 200
    clock = await graph.sim_call("POST", "/_sim/clock", json={"days": 1, "minutes": 1})
    assert clock["offset_seconds"] >= 30 * 86_400
    assert (await graph.call("GET", f"/directory/deletedItems/{user.id}"))[0] == 404


async def test_clock_never_goes_back(graph: Graph) -> None:
    async with graph.http.post(f"{graph.sim.info.authority_url}/_sim/clock", json={"seconds": -5}) as response:
        assert response.status == 400


def test_controls_are_for_loopback_clients_only() -> None:
    assert _is_loopback("127.0.0.1") and _is_loopback("::1")
    assert not _is_loopback("10.1.2.3") and not _is_loopback(None)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


async def test_run_simulator_writes_and_updates_simulator_json_then_stops(tmp_path: Path) -> None:
    info_path = tmp_path / "simulator.json"
    task = asyncio.create_task(run_simulator(state_dir=tmp_path, users=20, seed=5))
    while (info := read_json(info_path)) is None:
        assert not task.done()
        await asyncio.sleep(0.02)
    assert len(info["tenants"]) == 1
    context = ssl.create_default_context(cafile=info["ca_file"])
    url = f"{info['authority_url']}/_sim/tenants"
    async with aiohttp.ClientSession() as http, http.post(url, json={"users": 5}, ssl=context) as response:
        assert response.status == 201
    assert len(read_json(info_path)["tenants"]) == 2  # type: ignore[index]
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_purge_takes_only_objects_soft_deleted_past_retention() -> None:
    tenant = Tenant("t", "c", "s", "n", "N", domains=[])
    users = [tenant.add_user({"id": f"u{i}", "userPrincipalName": f"u{i}@x"}, notify=False) for i in range(4)]
    groups = [tenant.add_group({"id": f"g{i}"}, notify=False) for i in range(2)]
    day = 86_400.0
    tenant.soft_delete_user(users[0], 0.0)
    tenant.soft_delete_user(users[1], 0.0)
    tenant.restore_user(users[1])  # restored: kept whatever its old deletion time
    tenant.soft_delete_user(users[2], 10 * day)
    tenant.soft_delete_group(groups[0], 0.0)
    assert tenant.purge_expired(29 * day) == 0
    assert tenant.purge_expired(30 * day + 1) == 2
    assert set(tenant.users) == {"u1", "u2", "u3"} and set(tenant.groups) == {"g1"}
    assert tenant.purge_expired(40 * day + 1) == 1
    assert set(tenant.users) == {"u1", "u3"} and not tenant.deleted_users and not tenant.deleted_groups
