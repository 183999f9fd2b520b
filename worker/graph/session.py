"""One tenant's authenticated HTTP to Graph: tokens from `azure-identity`, per-tenant throttling and retries.

Retries live here rather than in the SDK's retry handler, because throttling is per tenant: a 429 for one
tenant pauses that tenant's requests only, honouring a (possibly fractional) Retry-After. Bulk pages travel on
aiohttp's connections (`httpx-aiohttp`) straight onto the transport; control-plane calls go through the httpx
client msgraph-core's `GraphClientFactory` builds (docs/graph-notes.md). Errors are mapped by `errors.py`.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import structlog
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseError
from azure.identity.aio import ClientSecretCredential
from httpx_aiohttp import AiohttpTransport
from kiota_http.middleware import RedirectHandler
from msgraph_core import GraphClientFactory

from worker.config import GraphSettings
from worker.credentials import TenantCredentials
from worker.graph.errors import GraphError, GraphThrottled, GraphTransient, entra_refusal, map_error

log = structlog.get_logger(__name__)

SCOPE = "https://graph.microsoft.com/.default"


@dataclass
class TenantThrottle:
    """Bounds concurrency for one tenant and pauses all its requests after a 429 with Retry-After."""

    concurrency: int
    max_wait_s: float = float("inf")  # a longer pause is not waited out: the caller parks the tenant
    resume_at: float = 0.0
    _sem: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self._sem = asyncio.Semaphore(self.concurrency)

    async def __aenter__(self) -> None:
        await self._sem.acquire()
        delay = self.resume_at - time.monotonic()
        if delay > self.max_wait_s:
            self._sem.release()
            raise GraphThrottled(429, "paused", f"tenant throttled for {delay:.1f} s more", retry_after=delay)
        if delay > 0:
            await asyncio.sleep(delay)

    async def __aexit__(self, *exc: object) -> None:
        self._sem.release()

    def pause(self, seconds: float) -> None:
        self.resume_at = max(self.resume_at, time.monotonic() + seconds)


def retry_delay(response: httpx.Response | None, attempt: int, *, cap: float = 300.0) -> float:
    """Retry-After (seconds, maybe fractional) when given, capped at `cap`, else exponential backoff with full
    jitter."""
    if response is not None:
        after = retry_after(response.headers.get("Retry-After"), cap=cap)
        if after is not None:
            return after
    return random.uniform(0, min(30.0, 0.5 * 2**attempt))


def retry_after(header: str | None, *, cap: float) -> float | None:
    """Seconds a Retry-After header asks for, within [0, cap]; None when absent or not a number of seconds
    (Graph sends seconds, sometimes fractional; an HTTP date is treated as absent)."""
    if not header:
        return None
    try:
        seconds = float(header)
    except ValueError:
        return None
    if seconds != seconds:  # NaN
        return None
    return min(max(0.0, seconds), cap)


class GraphSession:
    """One Microsoft tenant's authenticated, throttled HTTP to Graph: `request` is the one way to call it."""

    def __init__(
        self, creds: TenantCredentials, settings: GraphSettings, *, connections: aiohttp.ClientSession | None = None
    ) -> None:
        """`connections`: an HTTP connection pool shared with other tenants' clients (`GraphClients`), left open
        by `close`; without it the client keeps connections of its own."""
        self.tenant_id = creds.tenant_id
        self._creds = creds
        self._settings = settings
        self._base = settings.url.rstrip("/")
        verify: Any = ssl.create_default_context(cafile=settings.ca_file) if settings.ca_file else True
        self._credential = self._new_credential()
        self._stale_credentials: list[ClientSecretCredential] = []
        self.closed = False
        # httpx's client as msgraph-core builds it (retries are ours, per tenant: see the module docstring), with
        # aiohttp's connections beneath: its C parser and asyncio's TLS take less CPU per page than httpcore's,
        # which matters on a resync's long chains of sequential pages. msgraph-core's transport runs its
        # middleware (the redirect handler) only for requests carrying Kiota request options, which our raw
        # calls do not, and does not close the transport it wraps: close() does (docs/graph-notes.md). Reads of
        # pages skip the client and go to the transport itself (`_send`).
        self._transport = AiohttpTransport(verify=verify, client=connections)
        self._owns_connections = connections is None
        client = httpx.AsyncClient(transport=self._transport, timeout=settings.timeout_s)
        self._http = GraphClientFactory.create_with_custom_middleware(
            middleware=[RedirectHandler()], client=client
        )
        self._throttle = TenantThrottle(settings.max_concurrency_per_tenant, max_wait_s=settings.max_inline_wait_s)
        self._timeout = httpx.Timeout(settings.timeout_s).as_dict()

    async def close(self) -> None:
        self.closed = True
        await self._http.aclose()
        if self._owns_connections:
            await self._transport.aclose()
        for credential in (*self._stale_credentials, self._credential):
            await credential.close()

    def _new_credential(self) -> ClientSecretCredential:
        creds, settings = self._creds, self._settings
        return ClientSecretCredential(
            creds.tenant_id, creds.client_id, creds.client_secret,
            authority=settings.authority_url,
            disable_instance_discovery=True,
            connection_verify=settings.ca_file or True,
        )

    async def _token(self) -> str:
        try:
            return (await self._credential.get_token(SCOPE)).token
        except ClientAuthenticationError as exc:
            # Retrying cannot help until an operator fixes the tenant's registration.
            raise entra_refusal(exc) from exc
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise GraphTransient(0, "token", str(exc)[:300]) from exc

    def _drop_token(self) -> None:
        """Graph refused our cached token (revoked, or issued under a secret since removed): the next request
        asks the authority for a new one, which fails with Entra's own error if the credential is no good.
        azure-identity keeps a token until it nears expiry, so a fresh credential object is the way to skip
        its cache; the old one may be mid-request on another task and is closed with the client."""
        self._stale_credentials.append(self._credential)
        self._credential = self._new_credential()

    def url(self, path: str) -> str:
        return path if path.startswith("https://") or path.startswith("http://") else self._base + path

    async def request(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None,
        json: Any = None, headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One Graph call with per-tenant throttling and retries; raises a GraphError when it fails."""
        url = self.url(path)
        last: httpx.Response | None = None
        fresh_token = False
        for attempt in range(self._settings.max_retries + 1):
            async with self._throttle:
                try:
                    hdrs = {"Authorization": f"Bearer {await self._token()}", **(headers or {})}
                    response = await self._send(method, url, params=params, json=json, headers=hdrs)
                except (httpx.TransportError, GraphTransient) as exc:
                    last = None
                    if attempt == self._settings.max_retries:
                        raise GraphTransient(0, "network", str(exc)) from exc
                    await asyncio.sleep(min(retry_delay(None, attempt), self._settings.max_inline_wait_s))
                    continue
            if response.status_code < 400:
                return response
            if response.status_code == 401 and not fresh_token and attempt < self._settings.max_retries:
                fresh_token = True  # once per call: a second 401 with a brand-new token is Graph's answer
                self._drop_token()
                continue
            error = map_error(response)
            if not isinstance(error, GraphTransient) or attempt == self._settings.max_retries:
                raise error
            last = response
            await self._back_off(response, error, attempt)
        raise map_error(last) if last is not None else GraphTransient(0, "retries", "exhausted")

    async def _back_off(self, response: httpx.Response, error: GraphError, attempt: int) -> None:
        """Wait before retrying a transient answer: a 429 pauses the whole tenant; a wait longer than a unit of
        work may take in place parks the tenant instead (GraphThrottled)."""
        delay = retry_delay(response, attempt, cap=self._settings.max_retry_after_s)
        if response.status_code == 429:
            self._throttle.pause(delay)
        if delay > self._settings.max_inline_wait_s:
            # Waiting this long in place would hold the consumer's other tenants: the tenant is parked.
            self._throttle.pause(delay)
            log.info("graph.throttled", tenant_id=self.tenant_id, status=response.status_code,
                     retry_after_s=round(delay, 3))
            raise GraphThrottled(response.status_code, error.code, error.message, retry_after=delay)
        log.info("graph.retry", tenant_id=self.tenant_id, status=response.status_code,
                 delay_s=round(delay, 3), attempt=attempt + 1)
        await asyncio.sleep(0 if response.status_code == 429 else delay)

    async def _send(
        self, method: str, url: str, *, params: Mapping[str, str] | None, json: Any, headers: Mapping[str, str]
    ) -> httpx.Response:
        """One HTTP exchange, its body read. Reads of pages go straight onto the transport: msgraph-core's wrapper
        runs no middleware for a raw request anyway (docs/graph-notes.md), and httpx's client layer (auth flow,
        redirect loop, cookie jar, event hooks) is a measurable share of a page's worker CPU, paid on every page
        of a resync's longest chains (README: benchmarks)."""
        if method != "GET":
            return await self._http.request(method, url, params=params, json=json, headers=headers)
        request = httpx.Request(method, url, params=params, headers=headers, extensions={"timeout": self._timeout})
        response = await self._transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response
