"""The worker's Graph clients: one `TenantGraph` per tenant credential, over one shared HTTP connection pool."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
import structlog

from worker.config import GraphSettings
from worker.credentials import TenantCredentials
from worker.graph.client import TenantGraph

log = structlog.get_logger(__name__)

SHARED_CONNECTIONS = 256  # Graph connections of a worker, every tenant's together (a tenant takes at most
# GRAPH_MAX_CONCURRENCY_PER_TENANT of them at once)
KEEPALIVE_S = 30.0  # an idle Graph connection is kept this long for the next request of any tenant


def credential_key(creds: TenantCredentials) -> tuple[str, str, str]:
    """What identifies a tenant's credential in the client cache: tenant, application and a fingerprint of
    the secret (the secret itself is kept only inside the client that uses it)."""
    fingerprint = hashlib.sha256(creds.client_secret.encode()).hexdigest()[:16]
    return creds.tenant_id, creds.client_id, fingerprint


@dataclass
class _Cached:
    client: TenantGraph
    key: tuple[str, str, str]
    leases: int = 0
    retired: bool = False


class GraphClients:
    """One TenantGraph per tenant credential, created on first use and kept (tokens and connections are reused).

    Keyed by the credential, not the tenant alone: when a unit of work brings a tenant's changed credential
    (an operator rotated the secret), a new client is made and the old one is retired — closed as soon as no
    unit of work still holds it (`lease`), so a change takes effect at the next unit of work without a restart.
    """

    def __init__(self, settings: GraphSettings) -> None:
        self._settings = settings
        self._connections: aiohttp.ClientSession | None = None
        self._clients: dict[str, _Cached] = {}
        self._retired: list[_Cached] = []
        self._closing: set[asyncio.Task[None]] = set()

    def for_tenant(self, creds: TenantCredentials) -> TenantGraph:
        """The client for this credential (without a lease: for callers that never see a credential change)."""
        return self._current(creds).client

    @asynccontextmanager
    async def lease(self, creds: TenantCredentials) -> AsyncIterator[TenantGraph]:
        """The client for this credential, held for one unit of work; a retired client closes when its last
        lease ends."""
        cached = self._current(creds)
        cached.leases += 1
        try:
            yield cached.client
        finally:
            cached.leases -= 1
            if cached.retired and cached.leases == 0:
                self._retired.remove(cached)
                await cached.client.close()

    def _current(self, creds: TenantCredentials) -> _Cached:
        key = credential_key(creds)
        cached = self._clients.get(creds.tenant_id)
        if cached is not None and cached.key == key:
            return cached
        if cached is not None:
            self._retire(cached)
        client = TenantGraph(creds, self._settings, connections=self._shared_connections())
        cached = self._clients[creds.tenant_id] = _Cached(client, key)
        return cached

    def _shared_connections(self) -> aiohttp.ClientSession:
        """One HTTP connection pool for every tenant's client: connections to Graph (and the authority) carry no
        tenant state — the bearer token is per request — so a tenant's resync reuses warm TLS connections
        instead of opening its own, which a fleet's hourly resyncs did for every tenant (a TLS handshake on
        both ends each time, a visible share of the worker's CPU in a wave of resyncs)."""
        if self._connections is None or self._connections.closed:
            verify: Any = ssl.create_default_context(cafile=self._settings.ca_file) if self._settings.ca_file else True
            connector = aiohttp.TCPConnector(ssl=httpx.create_ssl_context(verify=verify),
                                             limit=SHARED_CONNECTIONS, keepalive_timeout=KEEPALIVE_S)
            self._connections = aiohttp.ClientSession(connector=connector)
        return self._connections

    def _retire(self, cached: _Cached) -> None:
        log.info("graph.credential_changed", tenant_id=cached.client.tenant_id)
        cached.retired = True
        if cached.leases:
            self._retired.append(cached)  # closed by its last lease
            return
        task = asyncio.get_running_loop().create_task(cached.client.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        clients = [c.client for c in (*self._clients.values(), *self._retired)]
        self._clients, self._retired = {}, []
        for client in clients:
            await client.close()
        if self._connections is not None:
            await self._connections.close()
            self._connections = None
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

