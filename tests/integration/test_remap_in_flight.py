"""An operator's re-assign or unmap while a large tenant's sync is writing End Users: once the admin API has
answered, not one more End User of the old tenant is created or updated in the Organization, and the other
Organization of the same sync goes on to the end. The real admin app (credentials tested against the
simulator, a real KafkaPublisher) and the real engine, on the session's PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from simulator.server import Simulator
from tests.admin.conftest import TOKEN, Api, Client, unique
from tests.integration.test_sync_rules import sim_control
from worker.admin.api import create_admin_app
from worker.bus import KafkaPublisher
from worker.config import AdminSettings, DatabaseSettings, GraphSettings, KafkaSettings, Settings
from worker.engine.projection import CHUNK
from worker.engine.sync import SyncEngine
from worker.graph import GraphClients
from worker.store.pool import create_pool

USERS = 12_000  # six chunks of the projection: a sync in flight for a few seconds


@pytest.fixture
async def setup(
    sim: Simulator, database_url: str, kafka_settings: KafkaSettings
) -> AsyncIterator[tuple[Api, SyncEngine]]:
    settings = Settings(
        database=DatabaseSettings(url=database_url, pool_max=6), kafka=kafka_settings,
        graph=GraphSettings(url=sim.info.graph_url, authority_url=sim.info.authority_url, ca_file=sim.info.ca_file),
        admin=AdminSettings(host="127.0.0.1", port=0, token=SecretStr(TOKEN)),
    )
    pool = await create_pool(database_url, max_size=8)
    publisher = KafkaPublisher(kafka_settings)
    await publisher.start()
    client: Client = TestClient(TestServer(create_admin_app(settings, pool=pool, publisher=publisher),
                                           host="127.0.0.1"))
    await client.start_server()
    graph = GraphClients(settings.graph)
    try:
        yield Api(client, pool, sim), SyncEngine(pool=pool, graph=graph, settings=settings)
    finally:
        await graph.close()
        await client.close()
        await publisher.stop()
        await pool.close()


async def register(api: Api, users: int) -> str:
    tenant = await sim_control(api.sim, "POST", "/_sim/tenants", {"users": users})
    await api.ok("POST", "/microsoft-tenants", {
        "tenant_id": tenant["tenant_id"], "display_name": unique("T"), "client_id": tenant["client_id"],
        "client_secret": tenant["client_secret"]}, status=201)
    return str(tenant["tenant_id"])


async def counts(pool: asyncpg.Pool, org_id: str, tenant_id: str) -> tuple[int, int, int]:
    """End Users of the tenant in the Organization: all, synced, and those with a journal entry."""
    row = await pool.fetchrow(
        """SELECT count(*), count(*) FILTER (WHERE sync_state = 'synced'),
                  (SELECT count(*) FROM end_user_changes c JOIN end_users e ON e.id = c.end_user_id
                   WHERE e.organization_id = $1::uuid)
           FROM end_users WHERE organization_id = $1::uuid AND entra_tenant_id = $2""", org_id, tenant_id)
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


@pytest.mark.parametrize("action", ["reassign", "unmap"])
async def test_operator_action_mid_sync_stops_the_old_tenants_writes(
    setup: tuple[Api, SyncEngine], action: str
) -> None:
    api, engine = setup
    big = await register(api, USERS)
    other = await register(api, 3)
    psa = await api.psa_tenant(big)
    target = await api.psa_tenant(other)
    moved, staying = (await api.organization(psa["id"]))["id"], (await api.organization(psa["id"]))["id"]
    for org in (moved, staying):
        await api.enable(org)  # queues org-syncs nobody consumes here: the resync below does the work

    sync = asyncio.create_task(engine.resync(big))  # a first full sync: every user of both Organizations
    deadline = time.monotonic() + 120
    while (await counts(api.pool, moved, big))[0] < CHUNK:
        assert not sync.done() and time.monotonic() < deadline, "the sync ended before the operator acted"
        await asyncio.sleep(0.005)
    asked = time.monotonic()
    if action == "reassign":
        answer = await api.ok("PUT", f"/organizations/{moved}/psa-tenant", {"psa_tenant_id": target["id"]})
        assert answer["microsoft_tenant_id"] == other
    else:
        answer = await api.ok("DELETE", f"/psa-tenants/{psa['id']}/microsoft-tenant")
        assert answer["microsoft_tenant_id"] is None
    waited = time.monotonic() - asked
    at_answer = await counts(api.pool, moved, big)
    staying_at_answer = await counts(api.pool, staying, big)
    # The API stopped every End User it found; one created or updated by the sync after the operator's commit
    # would be `synced` (this event loop also runs the sync, so it may have gone on before this read).
    stopped = at_answer[0] + (staying_at_answer[0] if action == "unmap" else 0)  # unmap: both Organizations
    assert at_answer[1] == 0 and answer["end_users_stopped"] == stopped
    await sync

    after = await counts(api.pool, moved, big)
    assert after == at_answer, f"End Users of the old tenant written after the API answered: {at_answer} → {after}"
    assert after[0] <= USERS - CHUNK, "the operator acted after the sync had written the Organization"
    run = await api.pool.fetchrow(
        "SELECT status, error FROM sync_runs WHERE organization_id = $1::uuid AND kind = 'resync'", moved)
    assert run is not None and run["status"] == "failed" and run["error"].startswith("stopped"), run
    if action == "reassign":  # the other Organization of the same sync was not held back: it got every user
        # ... and it got some of them after the API answered: the operator did not wait for the whole sync.
        assert (await counts(api.pool, staying, big))[0] > staying_at_answer[0]
        complete = await engine.org_sync(big, staying, None)  # a whole-Organization projection finds nothing
        assert (complete["created"], complete["updated"]) == (0, 0), complete
    else:  # unmapped: its PSA tenant's other Organization stopped the same way
        assert await counts(api.pool, staying, big) == staying_at_answer
    # `waited` includes this event loop running the sync's own CPU work between the API's awaits.
    print(f"{action}: answered in {waited * 1000:.0f} ms with {at_answer[0]} of {USERS} End Users written;"
          f" {after[0]} after the sync")
