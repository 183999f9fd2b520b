"""The Microsoft Graph adapter: the only module that talks to Graph.

Two paths (ARCHITECTURE.md): bulk pages (delta, listings) are read as raw JSON, with an `azure-identity`
credential, and parsed into small msgspec structs; control-plane calls (subscriptions) go through the httpx
client msgraph-core's `GraphClientFactory` builds. Both travel on aiohttp's connections (`httpx-aiohttp`);
reads of pages skip httpx's client layer, which msgraph-core's middleware never runs for raw requests anyway
(docs/graph-notes.md). Errors are mapped here, once, into the small class tree below.

Retries live here rather than in the SDK's retry handler, because throttling is per tenant: a 429 for one
tenant pauses that tenant's requests only, honouring a (possibly fractional) Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import random
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import aiohttp
import httpx
import msgspec
import structlog
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseError
from azure.identity.aio import ClientSecretCredential
from httpx_aiohttp import AiohttpTransport
from kiota_http.middleware import RedirectHandler
from msgraph_core import GraphClientFactory

from worker.config import GraphSettings
from worker.core.directory import GraphGroup, GraphUser
from worker.core.model import USER_PROPERTIES
from worker.core.text import json_without_lone_surrogates, may_hold_unstorable, scrub
from worker.credentials import TenantCredentials

log = structlog.get_logger(__name__)

SCOPE = "https://graph.microsoft.com/.default"
SHARED_CONNECTIONS = 256  # Graph connections of a worker, every tenant's together (a tenant takes at most
# GRAPH_MAX_CONCURRENCY_PER_TENANT of them at once)
KEEPALIVE_S = 30.0  # an idle Graph connection is kept this long for the next request of any tenant
T = TypeVar("T")

def _user_select() -> str:
    """`$select` of user pages: the declared user properties (`UserProperties`) and licences, as Graph spells them."""
    wire = dict(zip(GraphUser.__struct_fields__, GraphUser.__struct_encode_fields__, strict=True))
    return ",".join(wire[f] for f in ("id", *USER_PROPERTIES, "assigned_licenses"))


USER_SELECT = _user_select()
REGISTRATION_SELECT = (  # what an End User's MFA data needs: a sixth of the report's row
    "id,isMfaRegistered,isMfaCapable,methodsRegistered,userPreferredMethodForSecondaryAuthentication,"
    "systemPreferredAuthenticationMethods"
)


# ---- Errors, mapped once ---------------------------------------------------------------------------------

class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"Graph {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class GraphTransient(GraphError):
    """Throttled, 5xx or network trouble that outlived our retries: retry later, don't commit."""


class GraphThrottled(GraphTransient):
    """Graph asked this tenant to wait longer than a unit of work may wait in place: park the tenant until
    `retry_after` seconds have passed (already capped), then try again."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: float) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after


class GraphNotFound(GraphError):
    """The object is gone: treat as removal."""


class DeltaTokenExpired(GraphError):
    """410 Gone or syncStateNotFound: restart with a full listing."""


class GraphForbidden(GraphError):
    """Missing permission, licence or capability (P1/P2, Intune), or a quota."""


class GraphAuthFailed(GraphForbidden):
    """The tenant's credentials were refused (unknown tenant, wrong or expired secret, consent revoked).

    `code` is Entra's `error` (`invalid_client`, `unauthorized_client`, `invalid_request` …) and `message`
    starts with its AADSTS code, e.g. `AADSTS7000215: Invalid client secret provided.`
    """

    def __init__(self, status: int, code: str, message: str, *, entra_codes: tuple[int, ...] = ()) -> None:
        super().__init__(status, code, message)
        self.entra_codes = entra_codes


class GraphBadRequest(GraphError):
    """Our request was wrong: a bug or bad configuration, never retried."""


class _ErrorBody(msgspec.Struct):
    code: str = ""
    message: str = ""


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorBody = msgspec.field(default_factory=_ErrorBody)


def entra_refusal(exc: ClientAuthenticationError) -> GraphAuthFailed:
    """Entra's answer to a refused token request: its `error` (`invalid_client` …) and AADSTS code and text,
    read from the response body; never the secret (Entra does not echo it)."""
    status, error, description = 401, "authentication", str(exc).splitlines()[0]
    codes: tuple[int, ...] = ()
    response = getattr(exc, "response", None)
    if response is not None:
        status = getattr(response, "status_code", None) or status
        with contextlib.suppress(Exception):  # a body that is not Entra's JSON keeps the exception's text
            body = json.loads(response.text())
            error = str(body.get("error") or error)
            codes = tuple(int(c) for c in body.get("error_codes") or ())
            description = str(body.get("error_description") or description)
    # Entra appends trace and correlation ids and a timestamp: not what an operator needs to read.
    description = description.split(" Trace ID:")[0].strip()
    return GraphAuthFailed(status, error, description[:300], entra_codes=codes)


def map_error(response: httpx.Response) -> GraphError:
    try:
        body = msgspec.json.decode(response.content, type=_ErrorEnvelope).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        body = _ErrorBody(message=response.text[:200])
    status = response.status_code
    if status == 410 or body.code == "syncStateNotFound" or "resyncRequired" in body.code:
        return DeltaTokenExpired(status, body.code, body.message)
    if status == 404:
        return GraphNotFound(status, body.code, body.message)
    if status in (401, 403):
        return GraphForbidden(status, body.code, body.message)
    if status == 429 or status >= 500:
        return GraphTransient(status, body.code, body.message)
    return GraphBadRequest(status, body.code, body.message)


# ---- Typed pages --------------------------------------------------------------------------------------
# Users and groups are decoded into the directory's types of `worker.core.directory`.

class UserPage(msgspec.Struct):
    value: list[GraphUser] = []
    next_link: str | None = msgspec.field(default=None, name="@odata.nextLink")
    delta_link: str | None = msgspec.field(default=None, name="@odata.deltaLink")
    # Not Graph's: values of this page stored without characters PostgreSQL cannot store ("<id> jobTitle").
    scrubbed: list[str] = msgspec.field(default_factory=list, name="@entra-sync.scrubbed")


_user_page_decoder = msgspec.json.Decoder(UserPage)


class GroupPage(msgspec.Struct):
    value: list[GraphGroup] = []
    next_link: str | None = msgspec.field(default=None, name="@odata.nextLink")
    delta_link: str | None = msgspec.field(default=None, name="@odata.deltaLink")


_group_page_decoder = msgspec.json.Decoder(GroupPage)


class Sku(msgspec.Struct, rename="camel"):
    sku_id: str
    sku_part_number: str = ""


class SignIn(msgspec.Struct, rename="camel"):
    """Parsed as datetimes while the page is decoded; Graph writes 0001-01-01T00:00:00Z for "never"."""

    last_sign_in_date_time: datetime | None = None
    last_successful_sign_in_date_time: datetime | None = None
    last_non_interactive_sign_in_date_time: datetime | None = None


class UserSignIn(msgspec.Struct, rename="camel"):
    id: str
    sign_in_activity: SignIn | None = None


class RegistrationDetail(msgspec.Struct, rename="camel"):
    id: str
    is_mfa_registered: bool = False
    is_mfa_capable: bool = False
    methods_registered: list[str] = []
    user_preferred_method_for_secondary_authentication: str | None = None
    system_preferred_authentication_methods: list[str] = []


class ManagedDevice(msgspec.Struct, rename="camel"):
    id: str
    user_id: str | None = None
    wi_fi_mac_address: str | None = None
    ethernet_mac_address: str | None = None


class _Listing(msgspec.Struct, Generic[T]):
    value: list[T] = []
    next_link: str | None = msgspec.field(default=None, name="@odata.nextLink")


@functools.cache
def _listing_decoder(item: type[T]) -> msgspec.json.Decoder[_Listing[T]]:
    """A decoder for pages of `item`: the whole page is parsed in one pass, items typed as it goes."""
    return msgspec.json.Decoder(_Listing[item])  # type: ignore[valid-type]


class Subscription(msgspec.Struct, rename="camel"):
    id: str
    resource: str = ""
    change_type: str = ""
    notification_url: str = ""
    expiration_date_time: str = ""
    client_state: str | None = None


class _Organization(msgspec.Struct):
    id: str


class _SubscriptionList(msgspec.Struct):
    value: list[Subscription] = []


def decode_page(decoder: msgspec.json.Decoder[Any], content: bytes, what: str) -> tuple[Any, list[str]]:
    """Decode a page whose `value` items have an `id`; text PostgreSQL cannot store (U+0000, lone surrogates)
    is removed at this boundary and named ("<id> <field>"), so one odd value never fails a tenant's work."""
    if not may_hold_unstorable(content):
        return decoder.decode(content), []
    page = decoder.decode(json_without_lone_surrogates(content))
    changed = [f"{getattr(item, 'id', '?')} {path}" for item in page.value for path in scrub(item)]
    if changed:
        log.warning("graph.unstorable_text", what=what, values=len(changed), first=changed[:5])
    return page, changed


async def prefetch(pages: AsyncIterator[T], *, depth: int) -> AsyncIterator[T]:
    """Iterate `pages` while up to `depth` further pages are fetched (and parsed) in the background.

    The consumer's database writes then overlap Graph's latency. An error of the producer surfaces at the
    point of the page that failed; leaving the loop early stops the producer.
    """
    queue: asyncio.Queue[tuple[T | None, BaseException | None, bool]] = asyncio.Queue(maxsize=depth)

    async def produce() -> None:
        try:
            async for page in pages:
                await queue.put((page, None, False))
            await queue.put((None, None, True))
        except Exception as exc:  # handed to the consumer, raised there
            await queue.put((None, exc, True))

    task = asyncio.create_task(produce())
    try:
        while True:
            page, error, done = await queue.get()
            if error is not None:
                raise error
            if done:
                return
            yield page  # type: ignore[misc]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# ---- Per-tenant throttle --------------------------------------------------------------------------------

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


# ---- The client -----------------------------------------------------------------------------------------

class TenantGraph:
    """Graph calls for one Microsoft tenant."""

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
        # aiohttp's connections beneath: its C parser and asyncio's TLS take a third less CPU per page than
        # httpcore's, which matters on a resync's 834 sequential sign-in pages. msgraph-core's transport runs its
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
        raise map_error(last) if last is not None else GraphTransient(0, "retries", "exhausted")

    async def _send(
        self, method: str, url: str, *, params: Mapping[str, str] | None, json: Any, headers: Mapping[str, str]
    ) -> httpx.Response:
        """One HTTP exchange, its body read. Reads of pages go straight onto the transport: msgraph-core's wrapper
        runs no middleware for a raw request anyway (docs/graph-notes.md), and httpx's client layer (auth flow,
        redirect loop, cookie jar, event hooks) costs a fifth of a page's worker CPU (sign-in page 0.56 → 0.45
        ms, users page ~1.15 → ~0.95 ms) — on a resync's longest chain, 834 pages one after another."""
        if method != "GET":
            return await self._http.request(method, url, params=params, json=json, headers=headers)
        request = httpx.Request(method, url, params=params, headers=headers, extensions={"timeout": self._timeout})
        response = await self._transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    # -- bulk: users delta -----------------------------------------------------------------------------

    async def users_delta(self, delta_link: str | None) -> AsyncIterator[UserPage]:
        """Walk /users/delta from `delta_link` (or from scratch) page by page, empty pages included.

        The last page carries `delta_link`. Raises DeltaTokenExpired when Graph wants a full restart.
        """
        url: str | None = delta_link or "/users/delta"
        params: dict[str, str] | None = None if delta_link else {"$select": USER_SELECT}
        while url:
            response = await self.request("GET", url, params=params)
            page: UserPage
            page, scrubbed = decode_page(_user_page_decoder, response.content, "users")
            page.scrubbed = scrubbed
            yield page
            url, params = page.next_link, None

    async def groups_delta(self, delta_link: str | None) -> AsyncIterator[GroupPage]:
        """Walk /groups/delta with members; a large group may repeat across pages with other members."""
        url: str | None = delta_link or "/groups/delta"
        params: dict[str, str] | None = None if delta_link else {"$select": "id,displayName,members"}
        while url:
            response = await self.request("GET", url, params=params)
            page, _ = decode_page(_group_page_decoder, response.content, "groups")
            yield page
            url, params = page.next_link, None

    async def _list(self, path: str, item: type[T], params: Mapping[str, str] | None = None) -> AsyncIterator[list[T]]:
        """Pages of a plain OData collection, each item parsed as `item`."""
        url: str | None = path
        while url:
            response = await self.request("GET", url, params=params)
            page, _ = decode_page(_listing_decoder(item), response.content, path)  # type: ignore[arg-type]
            yield page.value
            url, params = page.next_link, None

    async def subscribed_skus(self) -> list[Sku]:
        return [sku async for page in self._list("/subscribedSkus", Sku) for sku in page]

    def sign_ins(self) -> AsyncIterator[list[UserSignIn]]:
        """signInActivity, only readable through /users with $select (pages of at most 120); P1/P2."""
        return self._list("/users", UserSignIn, {"$select": "id,signInActivity", "$top": "120"})

    def registration_details(self) -> AsyncIterator[list[RegistrationDetail]]:
        """MFA registration (P1/P2); the report skips disabled users."""
        return self._list("/reports/authenticationMethods/userRegistrationDetails", RegistrationDetail,
                          {"$select": REGISTRATION_SELECT})

    def managed_devices(self) -> AsyncIterator[list[ManagedDevice]]:
        """Intune devices with their MACs (ethernetMacAddress is often null in lists)."""
        return self._list("/deviceManagement/managedDevices", ManagedDevice,
                          {"$select": "id,userId,wiFiMacAddress,ethernetMacAddress"})

    # -- control plane: subscriptions ------------------------------------------------------------------

    async def create_subscription(
        self, *, resource: str, notification_url: str, lifecycle_url: str | None,
        client_state: str, expiration: str,
    ) -> Subscription:
        body: dict[str, Any] = {
            "changeType": "updated,deleted",
            "notificationUrl": notification_url,
            "resource": resource,
            "expirationDateTime": expiration,
            "clientState": client_state,
        }
        if lifecycle_url:
            body["lifecycleNotificationUrl"] = lifecycle_url
        response = await self.request("POST", "/subscriptions", json=body)
        return msgspec.json.decode(response.content, type=Subscription)

    async def renew_subscription(self, subscription_id: str, *, expiration: str) -> Subscription:
        response = await self.request(
            "PATCH", f"/subscriptions/{subscription_id}", json={"expirationDateTime": expiration}
        )
        return msgspec.json.decode(response.content, type=Subscription)

    async def reauthorize_subscription(self, subscription_id: str) -> None:
        await self.request("POST", f"/subscriptions/{subscription_id}/reauthorize")

    async def delete_subscription(self, subscription_id: str) -> None:
        try:
            await self.request("DELETE", f"/subscriptions/{subscription_id}")
        except GraphNotFound:
            pass

    async def list_subscriptions(self) -> list[Subscription]:
        response = await self.request("GET", "/subscriptions")
        return msgspec.json.decode(response.content, type=_SubscriptionList).value


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
        both ends each time: a tenth of the worker's CPU in a 500-tenant wave)."""
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


# ---- Operator actions on a credential -----------------------------------------------------------------

class CredentialRejected(Exception):
    """A credential failed its test: `code` is Entra's error (or ours when Entra accepted but Graph did not
    confirm the tenant), `field` the registration field an operator should look at."""

    def __init__(self, code: str, message: str, *, field: str, entra_codes: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.code, self.message, self.field, self.entra_codes = code, message, field, entra_codes


# AADSTS codes that point at one field of a registration (learn.microsoft.com/entra/identity-platform/
# reference-error-codes); anything else is about the application as a whole, so its id.
_FIELD_OF_AADSTS = {
    90002: "tenant_id", 900023: "tenant_id", 90072: "tenant_id",  # tenant not found / invalid / not in tenant
    7000215: "client_secret", 7000222: "client_secret", 7000216: "client_secret",  # wrong, expired, missing
}


def _for_an_operator(settings: GraphSettings) -> GraphSettings:
    """An operator waits for the answer: a couple of retries and a short timeout, not a worker's patience."""
    return settings.model_copy(update={"max_retries": min(settings.max_retries, 2),
                                       "timeout_s": min(settings.timeout_s, 15.0)})


async def verify_credentials(creds: TenantCredentials, settings: GraphSettings) -> None:
    """Test a credential as the worker will use it: a token from the authority, then `GET /organization`,
    whose id must be the tenant's. Raises CredentialRejected (Entra's error code) when it fails and
    GraphTransient when the authority or Graph cannot be reached."""
    graph = TenantGraph(creds, _for_an_operator(settings))
    try:
        response = await graph.request("GET", "/organization", params={"$select": "id"})
        organizations = msgspec.json.decode(response.content, type=_Listing[_Organization]).value
    except GraphAuthFailed as exc:
        field_name = next((_FIELD_OF_AADSTS[c] for c in exc.entra_codes if c in _FIELD_OF_AADSTS), "client_id")
        raise CredentialRejected(exc.code, exc.message, field=field_name, entra_codes=exc.entra_codes) from exc
    except (GraphForbidden, GraphBadRequest, GraphNotFound) as exc:
        raise CredentialRejected(exc.code or "graph_refused", f"GET /organization: {exc.message}",
                                 field="client_id") from exc
    finally:
        await graph.close()
    ids = [o.id.lower() for o in organizations]
    if creds.tenant_id.lower() not in ids:
        raise CredentialRejected("tenant_mismatch", f"the credential reaches organization {', '.join(ids) or 'none'},"
                                 f" not {creds.tenant_id}", field="tenant_id")


async def delete_subscriptions(
    creds: TenantCredentials, settings: GraphSettings, *, ids: list[str], notification_url: str,
) -> list[str]:
    """Delete these subscriptions, and any other of ours (`notification_url`) Graph lists, in Graph; a
    subscription Graph no longer knows counts as deleted. Returns what was deleted."""
    graph = TenantGraph(creds, _for_an_operator(settings))
    try:
        listed = {s.id for s in await graph.list_subscriptions() if s.notification_url == notification_url}
        deleted = []
        for subscription_id in sorted(set(ids) | listed):
            await graph.delete_subscription(subscription_id)
            deleted.append(subscription_id)
        return deleted
    finally:
        await graph.close()
