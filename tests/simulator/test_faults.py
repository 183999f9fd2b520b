"""Throttling and latency on demand, per tenant: 429 with integer, fractional or long Retry-After, 503/504
without it, Graph's error body, and the request budgets per app and tenant."""

from __future__ import annotations

import time

import pytest

from tests.simulator.conftest import Graph


async def throttle(graph: Graph, **rule: object) -> None:
    await graph.sim_call("POST", "/_sim/faults", json={"tenant_id": graph.tenant["tenant_id"], "throttle": rule})


@pytest.mark.parametrize("retry_after", ["2", "2.128", "300"])
async def test_429_with_retry_after_and_too_many_requests_body(graph: Graph, retry_after: str) -> None:
    await throttle(graph, status=429, retry_after=retry_after, count=1)
    status, body, headers = await graph.call("GET", "/users?$select=id")
    assert status == 429
    assert headers["Retry-After"] == retry_after
    assert body["error"]["code"] == "TooManyRequests"
    status, _, _ = await graph.call("GET", "/users?$select=id")
    assert status == 200


@pytest.mark.parametrize("status_code", [503, 504])
async def test_5xx_without_retry_after(graph: Graph, status_code: int) -> None:
    await throttle(graph, status=status_code, retry_after=None, count=2)
    for _ in range(2):
        status, body, headers = await graph.call("GET", "/users/delta?$select=id")
        assert status == status_code and "Retry-After" not in headers and body["error"]["code"]
    status, _, _ = await graph.call("GET", "/users/delta?$select=id")
    assert status == 200


async def test_faults_are_per_tenant_and_per_path(graph: Graph, graph2: Graph) -> None:
    await throttle(graph, status=429, retry_after="1", count=5, path_prefix="/v1.0/subscribedSkus")
    assert (await graph2.call("GET", "/subscribedSkus"))[0] == 200
    assert (await graph.call("GET", "/organization"))[0] == 200
    assert (await graph.call("GET", "/subscribedSkus"))[0] == 429


async def test_sdk_retry_handler_honours_integer_retry_after(graph: Graph) -> None:
    await throttle(graph, status=429, retry_after="1", count=1, path_prefix="/v1.0/organization")
    started = time.monotonic()
    orgs = await graph.sdk.organization.get()
    assert orgs is not None and orgs.value
    assert time.monotonic() - started >= 1.0


async def test_latency(graph: Graph) -> None:
    await graph.sim_call("POST", "/_sim/faults", json={"tenant_id": graph.tenant["tenant_id"], "latency_ms": 250})
    started = time.monotonic()
    await graph.call("GET", "/organization")
    assert time.monotonic() - started >= 0.25
    await graph.sim_call("DELETE", f"/_sim/faults?tenant_id={graph.tenant['tenant_id']}")
    faults = await graph.sim_call("GET", f"/_sim/faults?tenant_id={graph.tenant['tenant_id']}")
    assert faults[graph.tenant["tenant_id"]]["latency_ms"] == 0


async def test_identity_budget_per_app_and_tenant(graph: Graph) -> None:
    await graph.sim_call("POST", "/_sim/faults", json={"tenant_id": graph.tenant["tenant_id"], "rate_limits": True})
    tenant = graph.sim.state.tenants[graph.tenant["tenant_id"]]
    assert 50 <= len(tenant.users) <= 500  # 5,000 resource units per 10 s
    limiter = graph.sim.services.limiter
    window = limiter.windows.get((tenant.tenant_id, "identity"))
    used_before = window.used if window else 0
    await graph.call("GET", "/users")  # 2 units without $select
    await graph.call("GET", "/users?$select=id")  # 1 unit with it
    await graph.call("GET", "/subscribedSkus")  # 3 units
    assert limiter.windows[(tenant.tenant_id, "identity")].used - used_before == 6
    limiter.windows[(tenant.tenant_id, "identity")].used = 4_999
    status, body, headers = await graph.call("GET", "/users")
    assert status == 429 and int(headers["Retry-After"]) >= 1 and body["error"]["code"] == "TooManyRequests"


async def test_intune_budget_is_2000_requests_per_20_seconds(graph: Graph) -> None:
    await graph.sim_call("POST", "/_sim/faults", json={"tenant_id": graph.tenant["tenant_id"], "rate_limits": True})
    assert (await graph.call("GET", "/deviceManagement/managedDevices?$top=1"))[0] == 200
    window = graph.sim.services.limiter.windows[(graph.tenant["tenant_id"], "intune")]
    window.used = 2_000
    status, _, headers = await graph.call("GET", "/deviceManagement/managedDevices?$top=1")
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= 20


async def test_reports_budget_is_about_5_requests_per_10_seconds(graph: Graph) -> None:
    await graph.sim_call("POST", "/_sim/faults", json={"tenant_id": graph.tenant["tenant_id"], "rate_limits": True})
    statuses = [(await graph.call("GET", "/reports/authenticationMethods/userRegistrationDetails"))[0]
                for _ in range(6)]  # fmt: skip
    assert statuses == [200] * 5 + [429]
