"""The admin HTTP API (CONTRACTS.md): every operator flow under `/api/v1`, bearer token, JSON errors.

`create_admin_app` builds the aiohttp application from a pool and a publisher it is given (tests pass a fake
publisher); `run_admin_api` is the production process: it opens both from the settings and serves until
cancelled. The handlers live in one module per resource (`configuration`, `user_sync`, `end_users`, `runs`);
they only parse input and shape output: SQL lives in the store's resource modules (`worker.store.admin`),
state changes that enqueue work in `worker.admin.operations`. `/healthz`, `/readyz` and `/metrics` sit beside
the API, unauthenticated; the operator console (`worker.console`) is served at `/` by the same application.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from worker import store as db
from worker.admin.errors import ApiError, error_response, from_store
from worker.admin.openapi import openapi_document
from worker.admin.operations import AdminOperations
from worker.bus import KafkaPublisher, Publisher, ensure_topics
from worker.config import ConfigError, Settings
from worker.console.app import setup_console
from worker.processes.http import BodyGuard, serve
from worker.store.admin import AdminStore
from worker.store.end_user_actions import EndUserActions
from worker.store.pool import create_pool
from worker.store.records import StoreError

from . import configuration, end_users, runs, user_sync
from .context import END_USERS, OPERATIONS, POOL, STORE, Handler, Routes, store

log = structlog.get_logger(__name__)

PREFIX = "/api/v1"
PUBLIC = frozenset({f"{PREFIX}/openapi.json"})
MAX_BODY_BYTES = 1024 * 1024  # aiohttp's default, made explicit for the body guard


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    seconds: Histogram


TOKEN = web.AppKey("token", str)
METRICS = web.AppKey("metrics", Metrics)


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


# ---- service endpoints -----------------------------------------------------------------------------------

async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await asyncio.wait_for(store(request).ping(), timeout=2.0)
    except Exception as exc:
        log.warning("admin.not_ready", error=type(exc).__name__)
        return web.json_response({"status": "unavailable", "database": "unreachable"}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


ROUTES: Routes = (
    *configuration.ROUTES, *user_sync.ROUTES, *end_users.ROUTES, *runs.ROUTES,
    ("GET", "/openapi.json", openapi),
)
"""Every route of the API, below PREFIX."""


def create_admin_app(settings: Settings, *, pool: db.Pool, publisher: Publisher) -> web.Application:
    """The admin application over an open pool and a started publisher (the caller owns both)."""
    # The body guard comes first: a slow or vanished client is answered (408/503) before anything else runs.
    guard = BodyGuard("admin", timeout_s=settings.admin.body_timeout_s,
                      max_in_flight=settings.admin.max_bodies_in_flight, max_body_bytes=MAX_BODY_BYTES)
    app = web.Application(middlewares=[guard, _observe, _errors, _auth], client_max_size=MAX_BODY_BYTES)
    admin_store = AdminStore(pool)
    app[STORE] = admin_store
    app[POOL] = pool
    app[END_USERS] = EndUserActions(pool)
    app[OPERATIONS] = AdminOperations(admin_store, publisher, graph=settings.graph,
                                      notification_url=settings.webhook.public_url.rstrip("/") + "/notifications")
    app[TOKEN] = settings.admin.token.get_secret_value()
    app[METRICS] = _metrics()
    for method, path, handler in ROUTES:
        app.router.add_route(method, PREFIX + path, handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    # The operator console (worker/console/) at `/`, served by this process over the same store and operations.
    setup_console(app, pool=pool, store=admin_store, operations=app[OPERATIONS], token=app[TOKEN])
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
