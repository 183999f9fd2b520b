"""Registering a Microsoft tenant: a GUID stored lower-case, the credential tested against the authority and
Graph (the simulator over HTTPS) before anything is stored, Entra's error code when it is refused; and a
removal while the worker is at the tenant's work."""

from __future__ import annotations

import pytest

from .conftest import Api, sim_tenant, unique


async def _stored(api: Api, tenant_id: str) -> int:
    return int(await api.pool.fetchval(
        "SELECT count(*) FROM microsoft_tenants WHERE lower(tenant_id) = lower($1)", tenant_id))


async def test_upper_case_guid_is_stored_lower_case_and_found_in_any_case(api: Api) -> None:
    tenant = await sim_tenant(api.sim)
    typed = "{" + tenant["tenant_id"].upper() + "}"  # as some portals copy it
    created = await api.ok("POST", "/microsoft-tenants", {
        "tenant_id": typed, "display_name": unique("Shouting"), "client_id": tenant["client_id"],
        "client_secret": tenant["client_secret"]}, status=201)
    assert created["tenant_id"] == tenant["tenant_id"]
    assert await api.pool.fetchval("SELECT tenant_id FROM microsoft_tenants WHERE tenant_id = $1",
                                   tenant["tenant_id"]) == tenant["tenant_id"]
    again = {"tenant_id": tenant["tenant_id"], "display_name": "again", "client_id": tenant["client_id"],
             "client_secret": tenant["client_secret"]}
    assert (await api.call("POST", "/microsoft-tenants", again)).status == 409
    status = await api.ok("GET", f"/microsoft-tenants/{tenant['tenant_id'].upper()}/sync-status")
    assert status["tenant_id"] == tenant["tenant_id"]
    psa = await api.psa_tenant()
    mapped = await api.ok("PUT", f"/psa-tenants/{psa['id']}/microsoft-tenant",
                          {"microsoft_tenant_id": tenant["tenant_id"].upper()})
    assert mapped["microsoft_tenant_id"] == tenant["tenant_id"]


async def test_domain_name_is_refused_naming_the_field_even_when_the_authority_knows_it(api: Api) -> None:
    tenant = await sim_tenant(api.sim)  # the simulator, like Entra, issues tokens for a domain name too
    resp = await api.call("POST", "/microsoft-tenants", {
        "tenant_id": tenant["default_domain"], "display_name": "x", "client_id": tenant["client_id"],
        "client_secret": tenant["client_secret"]})
    assert resp.status == 400 and resp.body["error"]["field"] == "tenant_id", resp.body
    assert "GUID" in resp.body["error"]["message"]
    assert await _stored(api, tenant["tenant_id"]) == 0


@pytest.mark.parametrize(("change", "code", "field", "aadsts"), [
    ({"client_secret": "wrong-secret-value"}, "invalid_client", "client_secret", 7000215),
    ({"client_id": "00000000-0000-4000-8000-00000000abcd"}, "unauthorized_client", "client_id", 700016),
    ({"tenant_id": "0c0ffee0-0000-4000-8000-000000000000"}, "invalid_request", "tenant_id", 90002),
], ids=["wrong-secret", "unknown-application", "unknown-tenant"])
async def test_refused_credential_is_400_with_entras_code_and_nothing_stored(
    api: Api, change: dict[str, str], code: str, field: str, aadsts: int
) -> None:
    tenant = await sim_tenant(api.sim)
    body = {"tenant_id": tenant["tenant_id"], "display_name": unique("Refused"), "client_id": tenant["client_id"],
            "client_secret": tenant["client_secret"]} | change
    resp = await api.call("POST", "/microsoft-tenants", body)
    assert resp.status == 400, resp.body
    error = resp.body["error"]
    assert (error["code"], error["field"], error["entra_error_codes"]) == (code, field, [aadsts])
    assert error["message"].startswith(f"{field}: ") and f"AADSTS{aadsts}" in error["message"]
    assert body["client_secret"] not in str(resp.body)
    assert await _stored(api, body["tenant_id"]) == 0
    # The same registration with the right values then succeeds.
    assert (await api.call("POST", "/microsoft-tenants", body | {
        k: tenant[k] for k in ("tenant_id", "client_id", "client_secret")})).status == 201


async def test_credential_of_another_tenant_does_not_register_this_one(api: Api) -> None:
    """Entra answers for the tenant in the URL: another tenant's app is unknown there (unauthorized_client)."""
    mine, theirs = await sim_tenant(api.sim), await sim_tenant(api.sim)
    resp = await api.call("POST", "/microsoft-tenants", {
        "tenant_id": mine["tenant_id"], "display_name": "x", "client_id": theirs["client_id"],
        "client_secret": theirs["client_secret"]})
    assert resp.status == 400 and resp.body["error"]["code"] == "unauthorized_client", resp.body
    assert await _stored(api, mine["tenant_id"]) == 0


async def test_unreachable_authority_is_503_and_nothing_stored(api: Api, database_url: str) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from worker.admin.api import create_admin_app
    from worker.config import GraphSettings

    from .conftest import Api as ApiClient
    from .conftest import FakePublisher, make_settings

    settings = make_settings(database_url, sim=api.sim)
    settings = settings.model_copy(update={"graph": GraphSettings(
        url="https://127.0.0.1:9/v1.0", authority_url="https://127.0.0.1:9", ca_file=api.sim.info.ca_file,
        max_retries=0, timeout_s=2)})
    client = TestClient(TestServer(create_admin_app(settings, pool=api.pool, publisher=FakePublisher()),
                                   host="127.0.0.1"))
    await client.start_server()
    try:
        tenant = await sim_tenant(api.sim)
        resp = await ApiClient(client, api.pool, api.sim).call("POST", "/microsoft-tenants", {
            "tenant_id": tenant["tenant_id"], "display_name": "x", "client_id": tenant["client_id"],
            "client_secret": tenant["client_secret"]})
        assert resp.status == 503 and "nothing was stored" in resp.body["error"]["message"], resp.body
        assert await _stored(api, tenant["tenant_id"]) == 0
    finally:
        await client.close()


async def test_removal_waits_for_no_one_while_the_worker_holds_the_tenant(api: Api) -> None:
    """The worker's advisory lock on the tenant (a unit of work under way) makes a removal a 409 to retry,
    never a wait nor a removal under the worker's feet."""
    from worker.store.tenants import lock_tenant, unlock_tenant

    tenant_id = await api.microsoft_tenant()
    async with api.pool.acquire() as worker:
        await lock_tenant(worker, tenant_id)
        try:
            resp = await api.call("DELETE", f"/microsoft-tenants/{tenant_id}")
            assert resp.status == 409 and "retry" in resp.body["error"]["message"], resp.body
            assert await _stored(api, tenant_id) == 1
        finally:
            await unlock_tenant(worker, tenant_id)
    removed = await api.ok("DELETE", f"/microsoft-tenants/{tenant_id.upper()}")
    assert removed["tenant_id"] == tenant_id and await _stored(api, tenant_id) == 0
