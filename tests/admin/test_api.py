"""Cross-cutting behaviour: bearer auth on every route, JSON errors, health, readiness, metrics, OpenAPI."""

from __future__ import annotations

import re

import pytest
from aiohttp import web

from worker.admin.api import METRICS, PREFIX, ROUTES
from worker.admin.openapi import openapi_document

from .conftest import Api, Client

SAMPLE_ID = "00000000-0000-0000-0000-000000000001"
PROTECTED = [(m, p) for m, p, _ in ROUTES if p != "/openapi.json"]


@pytest.mark.parametrize(("method", "path"), PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
async def test_every_route_requires_the_bearer_token(api: Api, method: str, path: str) -> None:
    concrete = path.replace("{id}", SAMPLE_ID)
    for token in (None, "wrong-token", ""):
        resp = await api.call(method, concrete, {}, token=token)
        assert resp.status == 401, (token, resp.body)
        assert resp.body == {"error": {"code": "unauthorized", "message": "a valid bearer token is required"}}
    async with api.client.request(method, PREFIX + concrete, headers={"Authorization": "Basic abc"}) as r:
        assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"


async def test_unknown_route_and_method_answer_json_errors(api: Api) -> None:
    resp = await api.call("GET", "/nothing-here")
    assert resp.status == 404 and resp.body["error"]["code"] == "not_found"
    resp = await api.call("PATCH", "/organizations")
    assert resp.status == 405 and resp.body["error"]["code"] == "method_not_allowed"


async def test_health_readiness_and_metrics(client: Client, api: Api) -> None:
    await api.ok("GET", "/psa-tenants")
    async with client.get("/healthz") as r:
        assert r.status == 200 and await r.json() == {"status": "ok"}
    async with client.get("/readyz") as r:
        assert r.status == 200 and (await r.json())["status"] == "ready"
    async with client.get("/metrics") as r:
        text = await r.text()
        assert r.status == 200 and "admin_api_requests_total" in text
    registry = client.app[METRICS].registry
    assert registry.get_sample_value(
        "admin_api_requests_total", {"method": "GET", "route": "/api/v1/psa-tenants", "status": "200"}) == 1.0


async def test_readyz_fails_when_the_database_is_unreachable(database_url: str) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from worker.admin.api import create_admin_app
    from worker.store.pool import create_pool

    from .conftest import FakePublisher, make_settings

    pool = await create_pool(database_url, min_size=0, max_size=1)
    await pool.close()
    app = create_admin_app(make_settings(database_url), pool=pool, publisher=FakePublisher())
    client: Client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        async with client.get("/readyz") as r:
            assert r.status == 503
    finally:
        await client.close()


def _openapi_routes() -> set[tuple[str, str]]:
    doc = openapi_document()
    return {(method.upper(), path) for path, item in doc["paths"].items()
            for method in item if method != "parameters"}


def _app_routes(app: web.Application) -> set[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if path.startswith(PREFIX) and route.method != "HEAD":
            routes.add((route.method, path.removeprefix(PREFIX)))
    return routes


async def test_openapi_describes_exactly_the_registered_routes(client: Client, api: Api) -> None:
    assert _app_routes(client.app) == _openapi_routes()
    async with client.get(PREFIX + "/openapi.json") as r:
        served = await r.json()
    assert r.status == 200 and served["openapi"].startswith("3.1")
    refs = set(re.findall(r'"#/components/schemas/(\w+)"', str(served).replace("'", '"')))
    assert refs <= set(served["components"]["schemas"])
