"""`entra-sync bench resync`: a full initial sync of an N-user simulated tenant into one Organization.

The simulator runs as a child process (`python -m worker.cli simulator`), so its CPU and memory are not ours;
PostgreSQL is `DATABASE_URL`'s server (a fresh database, dropped after) or an embedded one. Timed: the
Organization's initial sync through `SyncEngine.org_sync` (delta walk into the mirror, then every user
projected into End Users). In the same run:

- a second, full `resync` with nothing changed (the hourly job's steady state), which must write no End User
  row (`second_run_end_user_writes` and `second_run_seconds`, extra fields);
- `fetch_only_users_per_s`: the same delta walk with `TenantGraph.users_delta` (raw pages, msgspec parse,
  no database) — the ceiling our own Graph path allows;
- `sdk_users_per_s`: the msgraph-sdk typed path (`GraphServiceClient.users.delta`) on a sample of at least
  `SDK_SAMPLE_USERS` users or `SDK_SAMPLE_SECONDS` — the reference the issue compares against.

`peak_rss_mb` is this process's peak RSS (ru_maxrss), the simulator being another process.
"""

from __future__ import annotations

import resource
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from worker.bench.common import one_tenant
from worker.engine.sync import SyncEngine
from worker.graph import SCOPE, USER_SELECT, GraphClients, TenantCredentials

SDK_SAMPLE_USERS = 2000
SDK_SAMPLE_SECONDS = 10.0


async def bench_resync(*, users: int, state_dir: Path | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the CONTRACTS.md JSON object (plus `second_run_end_user_writes`)."""
    async with one_tenant(users, state_dir) as one:
        tenant, pool, graph = one.tenant, one.pool, one.graph
        engine = SyncEngine(pool=pool, graph=graph, settings=one.settings)

        started = time.perf_counter()
        counts = await engine.org_sync(tenant["tenant_id"], one.org_id, None)
        seconds = time.perf_counter() - started
        if not counts.get("created"):
            raise RuntimeError(f"the initial sync created no End User: {counts}")

        started = time.perf_counter()
        second_writes = await _second_run_writes(engine, pool, tenant["tenant_id"])
        second_seconds = time.perf_counter() - started
        fetch_rate = await _fetch_only(graph, tenant)
        sdk_rate = await _sdk_rate(one.info, tenant)
    return {
        "bench": "resync",
        "users": users,
        "seconds": round(seconds, 3),
        "users_per_s": round(users / seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "fetch_only_users_per_s": round(fetch_rate, 1),
        "sdk_users_per_s": round(sdk_rate, 1),
        "second_run_end_user_writes": second_writes,
        "second_run_seconds": round(second_seconds, 3),
        "initial_sync_counts": counts,
    }


async def _second_run_writes(engine: SyncEngine, pool: Any, tenant_id: str) -> int:
    """A full resync with nothing changed: End User rows whose updated_at moved plus journal rows added."""
    async with pool.acquire() as conn:
        since = await conn.fetchval("SELECT clock_timestamp()")
        journal_before = await conn.fetchval("SELECT count(*) FROM end_user_changes")
    await engine.resync(tenant_id)
    async with pool.acquire() as conn:
        touched = await conn.fetchval("SELECT count(*) FROM end_users WHERE updated_at >= $1", since)
        journal_after = await conn.fetchval("SELECT count(*) FROM end_user_changes")
    return int(touched) + int(journal_after - journal_before)


async def _fetch_only(graph: GraphClients, tenant: dict[str, str]) -> float:
    """Our raw path alone: walk the whole users delta (page fetch + msgspec parse), no database."""
    client = graph.for_tenant(TenantCredentials(tenant["tenant_id"], tenant["client_id"], tenant["client_secret"]))
    started = time.perf_counter()
    seen = 0
    async for page in client.users_delta(None):
        seen += len(page.value)
    return seen / (time.perf_counter() - started)


async def _sdk_rate(info: dict[str, Any], tenant: dict[str, str]) -> float:
    """The msgraph-sdk typed path: pages of `users.delta` as model objects, on a sample.

    Long because it spells out the SDK's own client set-up, as Microsoft's samples do, to time that path."""
    from azure.identity.aio import ClientSecretCredential
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph.generated.users.delta.delta_request_builder import DeltaRequestBuilder
    from msgraph_core import GraphClientFactory

    credential = ClientSecretCredential(
        tenant["tenant_id"], tenant["client_id"], tenant["client_secret"], authority=info["authority_url"],
        disable_instance_discovery=True, connection_verify=info["ca_file"],
    )
    host = urlsplit(info["graph_url"]).hostname or "127.0.0.1"
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[SCOPE], allowed_hosts=[host],
                                               is_cae_enabled=False)
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(verify=ssl.create_default_context(cafile=info["ca_file"]), timeout=60.0)
    )
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = info["graph_url"]
    client = GraphServiceClient(request_adapter=adapter)
    config = RequestConfiguration(
        query_parameters=DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(select=USER_SELECT.split(",")),
    )
    try:
        started = time.perf_counter()
        page = await client.users.delta.get(request_configuration=config)
        seen = 0
        while page is not None:
            seen += len(page.value or [])
            if seen >= SDK_SAMPLE_USERS or time.perf_counter() - started >= SDK_SAMPLE_SECONDS:
                break
            if not page.odata_next_link:
                break
            page = await client.users.delta.with_url(page.odata_next_link).get()
        elapsed = time.perf_counter() - started
    finally:
        await http.aclose()
        await credential.close()
    if seen == 0:
        raise RuntimeError("the msgraph-sdk sample returned no users")
    return seen / elapsed
