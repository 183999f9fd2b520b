"""Fixtures for the admin API tests: the real migrated PostgreSQL, a recording publisher, a live server, and
the Graph simulator over HTTPS, against which the API tests each credential it registers.

Every test builds its own Microsoft tenant, PSA tenant and Organizations with fresh ids and names, so these
tests share the session database with other modules without seeing each other's rows. Rows the worker would
write (mirror users, linked End Users, review items) are inserted directly with SQL: the worker is not the
subject here.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from simulator.server import Simulator
from tests.integration.test_sync_rules import sim_control
from worker.admin.api import create_admin_app
from worker.config import AdminSettings, DatabaseSettings, GraphSettings, KafkaSettings, Settings
from worker.store.pool import create_pool

TOKEN = "admin-test-token"
Client = TestClient[web.Request, web.Application]


def make_settings(database_url: str, kafka: KafkaSettings | None = None, sim: Simulator | None = None) -> Settings:
    """The admin API's settings; with `sim`, Graph and the authority are that simulator's (credential tests)."""
    graph = GraphSettings() if sim is None else GraphSettings(
        url=sim.info.graph_url, authority_url=sim.info.authority_url, ca_file=sim.info.ca_file, max_retries=1)
    return Settings(
        database=DatabaseSettings(url=database_url, pool_min=1, pool_max=4),
        kafka=kafka or KafkaSettings(),
        graph=graph,
        admin=AdminSettings(host="127.0.0.1", port=0, token=SecretStr(TOKEN)),
    )


async def sim_tenant(sim: Simulator, users: int = 0) -> dict[str, str]:
    """A new simulated tenant: `{tenant_id, client_id, client_secret, default_domain}`."""
    return dict(await sim_control(sim, "POST", "/_sim/tenants", {"users": users}))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class FakePublisher:
    """Records what would go to Kafka; `fail = True` makes every publish raise like a broker outage."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, msgspec.Struct]] = []
        self.fail = False

    async def publish(self, topic: str, key: str, message: msgspec.Struct) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append((topic, key, message))

    def commands(self, name: str | None = None) -> list[Any]:
        return [m for _, _, m in self.sent if name is None or getattr(m, "command", None) == name]


@dataclass
class Response:
    status: int
    body: Any


class Api:
    """The admin API as an operator calls it, plus builders for a test's own tenants and Organizations."""

    def __init__(self, client: Client, pool: asyncpg.Pool, sim: Simulator) -> None:
        self.client = client
        self.pool = pool
        self.sim = sim

    async def call(self, method: str, path: str, body: Any = None, *, token: str | None = TOKEN,
                   raw: bytes | None = None) -> Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
        async with self.client.request(method, "/api/v1" + path, headers=headers, **kwargs) as resp:
            text = await resp.text()
            data = msgspec.json.decode(text) if text else None
            return Response(resp.status, data)

    async def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        resp = await self.call(method, path, body)
        assert resp.status == status, resp.body
        return resp.body

    async def microsoft_tenant(self) -> str:
        """Register a new simulated tenant (its credential passes the registration's test)."""
        tenant = await sim_tenant(self.sim)
        await self.ok("POST", "/microsoft-tenants", {
            "tenant_id": tenant["tenant_id"], "display_name": unique("Contoso"), "client_id": tenant["client_id"],
            "client_secret": tenant["client_secret"],
        }, status=201)
        return tenant["tenant_id"]

    async def psa_tenant(self, microsoft_tenant_id: str | None = None) -> dict[str, Any]:
        psa = await self.ok("POST", "/psa-tenants", {"name": unique("PSA")}, status=201)
        if microsoft_tenant_id:
            psa = await self.ok("PUT", f"/psa-tenants/{psa['id']}/microsoft-tenant",
                                {"microsoft_tenant_id": microsoft_tenant_id})
        return dict(psa)

    async def organization(self, psa_tenant_id: str) -> dict[str, Any]:
        body = {"name": unique("Org"), "psa_tenant_id": psa_tenant_id}
        return dict(await self.ok("POST", "/organizations", body, status=201))

    async def world(self, *, mapped: bool = True) -> World:
        tenant_id = await self.microsoft_tenant()
        psa = await self.psa_tenant(tenant_id if mapped else None)
        org = await self.organization(psa["id"])
        return World(tenant_id=tenant_id, psa_id=psa["id"], org_id=org["id"])

    async def enable(self, org_id: str, filters: Mapping[str, Any] | None = None) -> str:
        body = await self.ok("PUT", f"/organizations/{org_id}/user-sync",
                             {"filters": dict(filters or ALL_FILTERS)}, status=202)
        return str(body["run_id"])


@dataclass(frozen=True)
class World:
    tenant_id: str
    psa_id: str
    org_id: str


ALL_FILTERS = {"user_types": "all", "domains": "all", "office_locations": "all", "departments": "all",
               "groups": "all"}


# ---- direct SQL for rows the worker writes ---------------------------------------------------------------

MIRROR_COLUMNS = ("tenant_id", "id", "display_name", "given_name", "surname", "mail", "user_principal_name",
                  "department", "office_location", "user_type", "account_enabled", "removed", "content_hash")


def mirror_row(tenant_id: str, user: Mapping[str, Any]) -> tuple[Any, ...]:
    """A mirror row of `user`; its content hash covers its properties, as the mirror's writers' does."""
    defaults = {"tenant_id": tenant_id, "account_enabled": True, "id": str(uuid.uuid4())}
    merged = defaults | dict(user)
    properties = repr([merged.get(c) for c in MIRROR_COLUMNS if c not in ("tenant_id", "id", "content_hash")])
    merged.setdefault("content_hash", hashlib.blake2b(properties.encode(), digest_size=16).digest())
    return tuple(merged.get(c) for c in MIRROR_COLUMNS)


async def seed_mirror(
    pool: asyncpg.Pool, tenant_id: str, users: Iterable[Mapping[str, Any]], *,
    groups: Mapping[str, str] = {}, members: Iterable[tuple[str, str, str]] = (),
) -> None:
    """Mirror users; groups {id: name}; members (group_id, member_id, member_type)."""
    users = list(users)
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "entra_users", records=[mirror_row(tenant_id, u) for u in users], columns=MIRROR_COLUMNS
        )
        await conn.copy_records_to_table(  # the enrichment the full resync writes beside the mirror
            "entra_user_enrichment", columns=("tenant_id", "id", "device_macs"),
            records=[(tenant_id, u["id"], u["device_macs"]) for u in users if u.get("device_macs")],
        )
        await conn.executemany(
            "INSERT INTO entra_groups (tenant_id, id, display_name) VALUES ($1, $2, $3)",
            [(tenant_id, gid, name) for gid, name in groups.items()],
        )
        await conn.executemany(
            "INSERT INTO entra_group_members (tenant_id, group_id, member_id, member_type)"
            " VALUES ($1, $2, $3, $4)", [(tenant_id, *m) for m in members],
        )


async def insert_end_user(
    pool: asyncpg.Pool, org_id: str, *, tenant_id: str | None = None, object_id: str | None = None,
    state: str = "synced", email: str | None = None, first_name: str = "Jane", last_name: str = "Doe",
    microsoft: Mapping[str, Any] | None = None,
) -> str:
    row_id = await pool.fetchval(
        "INSERT INTO end_users (organization_id, first_name, last_name, email, sync_state, entra_tenant_id,"
        " entra_object_id, microsoft) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb) RETURNING id",
        org_id, first_name, last_name, email, state, tenant_id, object_id,
        msgspec.json.encode(microsoft).decode() if microsoft is not None else None,
    )
    return str(row_id)


async def end_user_states(pool: asyncpg.Pool, org_id: str) -> dict[str, tuple[str, str | None]]:
    rows = await pool.fetch(
        "SELECT id::text, sync_state, sync_state_reason FROM end_users WHERE organization_id = $1", org_id
    )
    return {r["id"]: (r["sync_state"], r["sync_state_reason"]) for r in rows}


# ---- fixtures ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
async def admin_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture(scope="session")
async def admin_sim(tmp_state: Path) -> AsyncIterator[Simulator]:
    """The Graph and Entra the admin API tests credentials against; each test adds its own tenants."""
    async with Simulator(state_dir=tmp_state / "admin-sim", tenants=1, users=0, seed=5) as simulator:
        yield simulator


@pytest.fixture
async def client(
    database_url: str, admin_pool: asyncpg.Pool, publisher: FakePublisher, admin_sim: Simulator,
) -> AsyncIterator[Client]:
    app = create_admin_app(make_settings(database_url, sim=admin_sim), pool=admin_pool, publisher=publisher)
    test_client: Client = TestClient(TestServer(app, host="127.0.0.1"))
    await test_client.start_server()
    yield test_client
    await test_client.close()


@pytest.fixture
def api(client: Client, admin_pool: asyncpg.Pool, admin_sim: Simulator) -> Api:
    return Api(client, admin_pool, admin_sim)
