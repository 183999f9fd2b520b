"""`run_admin_api` as production runs it: its own pool and a real KafkaPublisher on the Tansu broker."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp

from schemas import topics
from schemas.messages import Command, decode
from simulator.server import Simulator
from worker.admin.api import run_admin_api
from worker.bus import make_consumer
from worker.config import KafkaSettings

from .conftest import ALL_FILTERS, TOKEN, make_settings, sim_tenant, unique


async def _call(http: aiohttp.ClientSession, method: str, url: str, body: object = None) -> dict:
    async with http.request(method, url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        data = await r.json()
        assert r.status < 300, data
        return dict(data)


async def test_enable_lands_an_org_sync_command_on_entra_commands_keyed_by_tenant(
    database_url: str, kafka_settings: KafkaSettings, admin_sim: Simulator,
) -> None:
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    settings = make_settings(database_url, kafka_settings, sim=admin_sim)
    server = asyncio.create_task(run_admin_api(settings, ready=ready.set_result))
    try:
        url = await asyncio.wait_for(ready, 30) + "/api/v1"
        async with aiohttp.ClientSession() as http:
            tenant = await sim_tenant(admin_sim)
            tenant_id = tenant["tenant_id"]
            await _call(http, "POST", f"{url}/microsoft-tenants", {
                "tenant_id": tenant_id, "display_name": "K", "client_id": tenant["client_id"],
                "client_secret": tenant["client_secret"]})
            psa = await _call(http, "POST", f"{url}/psa-tenants", {"name": unique("PSA")})
            await _call(http, "PUT", f"{url}/psa-tenants/{psa['id']}/microsoft-tenant",
                        {"microsoft_tenant_id": tenant_id})
            org = await _call(http, "POST", f"{url}/organizations", {"name": "K", "psa_tenant_id": psa["id"]})
            run = await _call(http, "PUT", f"{url}/organizations/{org['id']}/user-sync", {"filters": ALL_FILTERS})
        command = await _find_command(kafka_settings, tenant_id)
        assert (command.command, command.organization_id, command.run_id) == ("org-sync", org["id"], run["run_id"])
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


async def _find_command(settings: KafkaSettings, tenant_id: str) -> Command:
    consumer = make_consumer(settings, topics.COMMANDS, group_id=unique("admin-test"))
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for record in (r for records in batch.values() for r in records):
                    if record.key == tenant_id.encode():
                        assert json.loads(record.value)["tenant_id"] == tenant_id
                        return decode(record.value, Command)
    finally:
        await consumer.stop()
