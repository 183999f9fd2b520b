"""The admin HTTP API (CONTRACTS.md): every operator flow under `/api/v1`, bearer token, JSON errors.

`create_admin_app` builds the aiohttp application from a pool and a publisher it is given (tests pass a fake
publisher); `run_admin_api` is the production process: it opens both from the settings and serves until
cancelled. Handlers only parse input and shape output: SQL lives in `worker.store.admin`, state changes that
enqueue work in `worker.admin.service`. `/healthz`, `/readyz` and `/metrics` sit beside the API, unauthenticated.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from worker import store as db
from worker.bus import KafkaPublisher, Publisher, ensure_topics
from worker.config import ConfigError, Settings
from worker.core.filters import FilterError, filters_to_json, parse_filters
from worker.core.macs import normalize_mac
from worker.core.model import END_USER_FIELDS, SYNC_STATES, Filters
from worker.engine.explain import explain_user
from worker.serve import BodyGuard, serve
from worker.store import holds
from worker.store.admin import AdminStore, StoreError
from worker.store.end_users import EndUserStore
from worker.store.pool import create_pool

from . import end_users_api, inputs
from .errors import ApiError, BadRequest, error_response, from_store
from .openapi import openapi_document
from .service import AdminService

log = structlog.get_logger(__name__)

PREFIX = "/api/v1"
PUBLIC = frozenset({f"{PREFIX}/openapi.json"})
MAX_BODY_BYTES = 1024 * 1024  # aiohttp's default, made explicit for the body guard
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    seconds: Histogram


STORE = web.AppKey("store", AdminStore)
SERVICE = web.AppKey("service", AdminService)
TOKEN = web.AppKey("token", str)
METRICS = web.AppKey("metrics", Metrics)
POOL = web.AppKey("pool", db.Pool)


def _metrics() -> Metrics:
    registry = CollectorRegistry()
    return Metrics(
        registry=registry,
        requests=Counter("admin_api_requests", "Admin API requests.", ["method", "route", "status"],
                         registry=registry),
        seconds=Histogram("admin_api_request_seconds", "Admin API request duration.", ["route"],
                          registry=registry),
    )


# ---- middlewares -----------------------------------------------------------------------------------------

def _route_name(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


@web.middleware
async def _observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Metrics and one canonical log line per request (never the Authorization header)."""
    started = time.perf_counter()
    response = await handler(request)
    elapsed = time.perf_counter() - started
    route = _route_name(request)
    metrics = request.app[METRICS]
    metrics.requests.labels(request.method, route, str(response.status)).inc()
    metrics.seconds.labels(route).observe(elapsed)
    if route not in ("/healthz", "/readyz", "/metrics"):
        log.info("admin.request", method=request.method, route=route, status=response.status,
                 duration_ms=round(elapsed * 1000, 1))
    return response


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes `{"error": {"code", "message"}}`."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except StoreError as exc:
        return error_response(from_store(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(ApiError(exc.status, exc.reason))
    except (db.DataError, UnicodeEncodeError) as exc:
        # A value PostgreSQL refuses (too long, out of range, not storable) that no input check caught: the
        # client's input, so a 400, never a 500. The error names no value (it may be a secret).
        log.warning("admin.unstorable_input", route=_route_name(request), error=type(exc).__name__)
        return error_response(ApiError(400, f"a value in the request cannot be stored ({type(exc).__name__})"))
    except db.UNAVAILABLE as exc:
        log.warning("admin.unavailable", error=repr(exc))
        return error_response(ApiError(503, "the database is unavailable"))
    except Exception:
        log.exception("admin.internal_error", route=_route_name(request))
        return error_response(ApiError(500, "internal error"))


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer token on everything under /api/v1 but the OpenAPI document; constant-time compare."""
    if request.path.startswith(PREFIX) and request.path not in PUBLIC:
        expected = request.app[TOKEN].encode()
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # aiohttp decodes header bytes that are not UTF-8 as surrogate escapes; encode them back the same way.
        token = given.strip().encode("utf-8", "surrogateescape")
        ok = bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(token, expected)
        if not ok:
            return error_response(
                ApiError(401, "a valid bearer token is required"), headers={"WWW-Authenticate": "Bearer"}
            )
    return await handler(request)


# ---- helpers ---------------------------------------------------------------------------------------------

def _store(request: web.Request) -> AdminStore:
    return request.app[STORE]


def _items(items: list[dict[str, Any]], **extra: Any) -> web.Response:
    return web.json_response({"items": items, **extra})


def _filters(body: dict[str, Any]) -> Filters:
    if "filters" not in body:
        raise BadRequest("filters", "is required")
    try:
        return parse_filters(body["filters"])
    except FilterError as exc:
        raise BadRequest(exc.field, exc.message) from None


# ---- service endpoints -----------------------------------------------------------------------------------

async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await asyncio.wait_for(_store(request).ping(), timeout=2.0)
    except Exception as exc:
        log.warning("admin.not_ready", error=type(exc).__name__)
        return web.json_response({"status": "unavailable", "database": "unreachable"}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


# ---- Microsoft tenants, PSA tenants, Organizations -------------------------------------------------------

async def list_microsoft_tenants(request: web.Request) -> web.Response:
    return _items(await _store(request).list_microsoft_tenants())


def _tenant_path(request: web.Request) -> str:
    return inputs.tenant_ref(request.match_info["id"])


async def microsoft_tenant_sync_status(request: web.Request) -> web.Response:
    return web.json_response(await _store(request).tenant_sync_status(_tenant_path(request)))


async def create_microsoft_tenant(request: web.Request) -> web.Response:
    """Register a tenant: its id a GUID (stored lower-case), its credential tested before anything is stored."""
    body = await inputs.json_body(
        request, allowed=("tenant_id", "display_name", "client_id", "client_secret", "default_domain")
    )
    created = await request.app[SERVICE].register_tenant(
        tenant_id=inputs.tenant_guid(body, "tenant_id"), display_name=inputs.text(body, "display_name"),
        client_id=inputs.text(body, "client_id"), client_secret=inputs.text(body, "client_secret", max_len=1024),
        default_domain=inputs.optional_text(body, "default_domain"),
    )
    return web.json_response(created, status=201)


async def update_microsoft_tenant(request: web.Request) -> web.Response:
    """Rename a tenant or change its credential (tested first; in effect at every worker's next unit of work)."""
    tenant_id = _tenant_path(request)
    body = await inputs.json_body(request, allowed=("display_name", "client_id", "client_secret"))
    if not body:
        raise BadRequest("body", "give at least one of display_name, client_id, client_secret")
    for name in body:  # present means "change it": null or blank is a mistake, not "keep"
        inputs.text(body, name, max_len=1024 if name == "client_secret" else inputs.MAX_TEXT)
    updated = await request.app[SERVICE].update_tenant(
        tenant_id, display_name=inputs.optional_text(body, "display_name"),
        client_id=inputs.optional_text(body, "client_id"),
        client_secret=inputs.optional_text(body, "client_secret", max_len=1024),
    )
    return web.json_response(updated)


async def delete_microsoft_tenant(request: web.Request) -> web.Response:
    return web.json_response(await request.app[SERVICE].remove_tenant(_tenant_path(request)))


async def list_psa_tenants(request: web.Request) -> web.Response:
    return _items(await _store(request).list_psa_tenants())


async def create_psa_tenant(request: web.Request) -> web.Response:
    body = await inputs.json_body(request, allowed=("name",))
    return web.json_response(await _store(request).create_psa_tenant(inputs.text(body, "name")), status=201)


async def map_psa_tenant(request: web.Request) -> web.Response:
    psa_id = inputs.path_id(request)
    body = await inputs.json_body(request, allowed=("microsoft_tenant_id",))
    tenant_id = inputs.tenant_ref(inputs.text(body, "microsoft_tenant_id", max_len=128))
    return web.json_response(await request.app[SERVICE].map_psa_tenant(psa_id, tenant_id))


async def unmap_psa_tenant(request: web.Request) -> web.Response:
    return web.json_response(await request.app[SERVICE].unmap_psa_tenant(inputs.path_id(request)))


async def list_organizations(request: web.Request) -> web.Response:
    psa_id = inputs.query_uuid(request, "psa_tenant_id")
    return _items(await _store(request).list_organizations(psa_tenant_id=psa_id))


async def create_organization(request: web.Request) -> web.Response:
    body = await inputs.json_body(request, allowed=("name", "psa_tenant_id"))
    name = inputs.text(body, "name")
    psa_id = inputs.uuid_value(body.get("psa_tenant_id"), "psa_tenant_id")
    return web.json_response(await _store(request).create_organization(name=name, psa_tenant_id=psa_id), status=201)


async def assign_organization(request: web.Request) -> web.Response:
    org_id = inputs.path_id(request)
    body = await inputs.json_body(request, allowed=("psa_tenant_id",))
    psa_id = inputs.uuid_value(body.get("psa_tenant_id"), "psa_tenant_id")
    return web.json_response(await request.app[SERVICE].assign_organization(org_id, psa_id))


# ---- User sync -------------------------------------------------------------------------------------------

async def get_user_sync(request: web.Request) -> web.Response:
    return web.json_response(await _store(request).get_user_sync(inputs.path_id(request)))


async def put_user_sync(request: web.Request) -> web.Response:
    org_id = inputs.path_id(request)
    filters = _filters(await inputs.json_body(request, allowed=("filters",)))
    run_id = await request.app[SERVICE].enable_sync(org_id, filters_to_json(filters))
    return web.json_response({"run_id": run_id}, status=202)


async def delete_user_sync(request: web.Request) -> web.Response:
    return web.json_response(await request.app[SERVICE].disable_sync(inputs.path_id(request)))


async def run_user_sync(request: web.Request) -> web.Response:
    run_id = await request.app[SERVICE].run_now(inputs.path_id(request))
    return web.json_response({"run_id": run_id}, status=202)


async def user_sync_options(request: web.Request) -> web.Response:
    return web.json_response(await _store(request).options(inputs.path_id(request)))


async def user_sync_preview(request: web.Request) -> web.Response:
    org_id = inputs.path_id(request)
    filters = _filters(await inputs.json_body(request, allowed=("filters",)))
    return web.json_response(await request.app[SERVICE].preview(org_id, filters))


async def user_sync_explain(request: web.Request) -> web.Response:
    org_id = inputs.path_id(request)
    object_id = inputs.query_text(request, "entra_object_id")
    email = inputs.query_text(request, "email")
    if (object_id is None) == (email is None):
        raise BadRequest("entra_object_id", "give exactly one of entra_object_id and email")
    tenant_id = await _store(request).mapped_tenant(org_id)
    return web.json_response(await explain_user(
        request.app[POOL], organization_id=org_id, tenant_id=tenant_id, entra_object_id=object_id, email=email))


# ---- End Users and Assets --------------------------------------------------------------------------------

async def list_end_users(request: web.Request) -> web.Response:
    result = await _store(request).list_end_users(
        inputs.path_id(request),
        email=inputs.query_text(request, "email"),
        sync_state=inputs.query_text(request, "sync_state", choices=SYNC_STATES),
        q=inputs.query_text(request, "q"),
        limit=inputs.query_int(request, "limit", default=100, maximum=1000),
        offset=inputs.query_int(request, "offset", default=0, maximum=10_000_000),
    )
    return web.json_response(result)


async def create_end_user(request: web.Request) -> web.Response:
    org_id = inputs.path_id(request)
    body = await inputs.json_body(request, allowed=END_USER_FIELDS)
    fields = {name: inputs.optional_text(body, name) for name in END_USER_FIELDS if name != "email"}
    fields["email"] = inputs.email(body)
    if not (fields["first_name"] or fields["last_name"] or fields["email"]):
        raise BadRequest("first_name", "an End User needs a first name, a last name or an email")
    return web.json_response(await _store(request).create_manual_end_user(org_id, fields), status=201)


async def get_end_user(request: web.Request) -> web.Response:
    return web.json_response(await _store(request).get_end_user(inputs.path_id(request)))


async def list_assets(request: web.Request) -> web.Response:
    return _items(await _store(request).list_assets(inputs.path_id(request)))


async def create_asset(request: web.Request) -> web.Response:
    org_id = inputs.path_id(request)
    body = await inputs.json_body(request, allowed=("name", "mac_addresses"))
    name = inputs.text(body, "name")
    macs = _macs(body.get("mac_addresses", []))
    return web.json_response(await _store(request).create_asset(org_id, name=name, macs=macs), status=201)


def _macs(raw: Any) -> list[str]:
    if not isinstance(raw, list):
        raise BadRequest("mac_addresses", "must be a list of MAC addresses")
    macs: dict[str, None] = {}
    for i, value in enumerate(raw):
        mac = normalize_mac(value) if isinstance(value, str) else None
        if mac is None:
            raise BadRequest(f"mac_addresses[{i}]", "must be a MAC address such as AA:BB:CC:DD:EE:FF")
        macs[mac] = None
    return list(macs)


# ---- Runs and review items -------------------------------------------------------------------------------

async def list_runs(request: web.Request) -> web.Response:
    runs = await _store(request).list_runs(
        organization_id=inputs.query_uuid(request, "organization_id"),
        tenant_id=inputs.tenant_ref(inputs.query_text(request, "tenant_id") or "") or None,
        limit=inputs.query_int(request, "limit", default=100, maximum=1000),
        offset=inputs.query_int(request, "offset", default=0, maximum=10_000_000),
    )
    return _items(runs)


async def get_run(request: web.Request) -> web.Response:
    return web.json_response(await _store(request).get_run(inputs.path_id(request)))


async def confirm_run(request: web.Request) -> web.Response:
    run_id = await request.app[SERVICE].confirm_run(inputs.path_id(request))
    return web.json_response({"run_id": run_id}, status=202)


async def dismiss_held_run(pool: db.Pool, run_id: str) -> None:
    """Keep everyone a held run would deactivate, and end its hold (404/409 as API errors; the console too)."""
    try:
        await holds.dismiss_run(pool, run_id)
    except LookupError:
        raise ApiError(404, f"no sync run {run_id}") from None
    except holds.NotHeld as exc:
        raise ApiError(409, str(exc)) from None


async def dismiss_run(request: web.Request) -> web.Response:
    """Keep everyone a held run would deactivate, and end its hold."""
    run_id = inputs.path_id(request)
    await dismiss_held_run(request.app[POOL], run_id)
    return web.json_response(await _store(request).get_run(run_id))


async def list_review_items(request: web.Request) -> web.Response:
    status = inputs.query_text(request, "status", choices=("open", "resolved", "all")) or "open"
    items = await _store(request).list_review_items(
        organization_id=inputs.query_uuid(request, "organization_id"),
        status=None if status == "all" else status,
    )
    return _items(items)


async def resolve_review_item(request: web.Request) -> web.Response:
    review_id = inputs.path_id(request)
    body = await inputs.json_body(request, allowed=("end_user_id", "create"))
    create = inputs.flag(body, "create")
    has_link = body.get("end_user_id") is not None
    if create == has_link:
        raise BadRequest("end_user_id", 'give either {"end_user_id": …} or {"create": true}')
    end_user_id = inputs.uuid_value(body["end_user_id"], "end_user_id") if has_link else None
    result = await request.app[SERVICE].resolve_review(review_id, end_user_id=end_user_id, create=create)
    return web.json_response(result)


# ---- the app ---------------------------------------------------------------------------------------------

ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/microsoft-tenants", list_microsoft_tenants),
    ("POST", "/microsoft-tenants", create_microsoft_tenant),
    ("PATCH", "/microsoft-tenants/{id}", update_microsoft_tenant),
    ("DELETE", "/microsoft-tenants/{id}", delete_microsoft_tenant),
    ("GET", "/microsoft-tenants/{id}/sync-status", microsoft_tenant_sync_status),
    ("GET", "/psa-tenants", list_psa_tenants),
    ("POST", "/psa-tenants", create_psa_tenant),
    ("PUT", "/psa-tenants/{id}/microsoft-tenant", map_psa_tenant),
    ("DELETE", "/psa-tenants/{id}/microsoft-tenant", unmap_psa_tenant),
    ("GET", "/organizations", list_organizations),
    ("POST", "/organizations", create_organization),
    ("PUT", "/organizations/{id}/psa-tenant", assign_organization),
    ("GET", "/organizations/{id}/user-sync", get_user_sync),
    ("PUT", "/organizations/{id}/user-sync", put_user_sync),
    ("DELETE", "/organizations/{id}/user-sync", delete_user_sync),
    ("GET", "/organizations/{id}/user-sync/options", user_sync_options),
    ("POST", "/organizations/{id}/user-sync/preview", user_sync_preview),
    ("GET", "/organizations/{id}/user-sync/explain", user_sync_explain),
    ("POST", "/organizations/{id}/user-sync/runs", run_user_sync),
    ("GET", "/organizations/{id}/end-users", list_end_users),
    ("POST", "/organizations/{id}/end-users", create_end_user),
    ("GET", "/end-users/{id}", get_end_user),
    ("GET", "/organizations/{id}/assets", list_assets),
    ("POST", "/organizations/{id}/assets", create_asset),
    ("GET", "/sync-runs", list_runs),
    ("GET", "/sync-runs/{id}", get_run),
    ("POST", "/sync-runs/{id}/confirm", confirm_run),
    ("POST", "/sync-runs/{id}/dismiss", dismiss_run),
    ("GET", "/review-items", list_review_items),
    ("POST", "/review-items/{id}/resolve", resolve_review_item),
    ("GET", "/openapi.json", openapi),
)


def create_admin_app(settings: Settings, *, pool: db.Pool, publisher: Publisher) -> web.Application:
    """The admin application over an open pool and a started publisher (the caller owns both)."""
    # The body guard comes first: a slow or vanished client is answered (408/503) before anything else runs.
    guard = BodyGuard("admin", timeout_s=settings.admin.body_timeout_s,
                      max_in_flight=settings.admin.max_bodies_in_flight, max_body_bytes=MAX_BODY_BYTES)
    app = web.Application(middlewares=[guard, _observe, _errors, _auth], client_max_size=MAX_BODY_BYTES)
    store = AdminStore(pool)
    app[STORE] = store
    app[POOL] = pool
    app[end_users_api.END_USERS] = EndUserStore(pool)
    app[end_users_api.ADMIN_STORE] = store
    app[SERVICE] = AdminService(store, publisher, graph=settings.graph,
                                notification_url=settings.webhook.public_url.rstrip("/") + "/notifications")
    app[TOKEN] = settings.admin.token.get_secret_value()
    app[METRICS] = _metrics()
    for method, path, handler in ROUTES + end_users_api.ROUTES:
        app.router.add_route(method, PREFIX + path, handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    # The operator console (worker/console/) at `/`, served by this process over the same store and service.
    from worker.console.app import setup_console

    setup_console(app, pool=pool, store=store, service=app[SERVICE], token=app[TOKEN])
    return app


@contextlib.asynccontextmanager
async def _resources(settings: Settings) -> AsyncIterator[tuple[db.Pool, KafkaPublisher]]:
    pool = await create_pool(
        settings.database.url, min_size=settings.database.pool_min, max_size=settings.database.pool_max
    )
    try:
        await ensure_topics(settings.kafka)
        publisher = KafkaPublisher(settings.kafka)
        await publisher.start()
        try:
            yield pool, publisher
        finally:
            await publisher.stop()
    finally:
        await pool.close()


async def run_admin_api(settings: Settings, *, ready: Callable[[str], None] | None = None) -> None:
    """Serve the admin API on settings.admin.host/port (0 = any free port) until cancelled."""
    if not settings.admin.token.get_secret_value():
        raise ConfigError("ADMIN_TOKEN must be set: the admin API refuses to run without a token")
    async with _resources(settings) as (pool, publisher):
        await serve(create_admin_app(settings, pool=pool, publisher=publisher), name="admin",
                    host=settings.admin.host, port=settings.admin.port, ready=ready)
