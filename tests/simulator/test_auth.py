"""Tokens: the simulator's authority behaves like Entra for azure-identity; tokens are bound to one tenant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity.aio import ClientSecretCredential

from simulator import Simulator
from tests.simulator.conftest import SCOPE, Graph


async def test_client_secret_credential_gets_a_graph_token(graph: Graph) -> None:
    token = await graph.credential.get_token(SCOPE)
    assert token.token.count(".") == 2
    assert token.expires_on > 0


async def test_wrong_secret_is_rejected_like_entra(sim: Simulator) -> None:
    tenant = sim.info.tenants[0]
    credential = ClientSecretCredential(tenant["tenant_id"], tenant["client_id"], "wrong",
                                        authority=sim.info.authority_url, disable_instance_discovery=True,
                                        connection_verify=sim.info.ca_file)  # fmt: skip
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        await credential.get_token(SCOPE)
    await credential.close()


async def test_missing_token_is_401_invalid_authentication_token(graph: Graph) -> None:
    async with graph.http.get(f"{graph.base}/users") as response:
        body = await response.json()
    assert response.status == 401
    assert body["error"]["code"] == "InvalidAuthenticationToken"


async def test_a_token_for_one_tenant_never_reads_another(graph: Graph, graph2: Graph) -> None:
    other_user = next(iter(graph2.sim.state.tenants[graph2.tenant["tenant_id"]].users))
    status, body, _ = await graph.call("GET", f"/users/{other_user}")
    assert status == 404
    assert body["error"]["code"] == "Request_ResourceNotFound"
    status, body, _ = await graph2.call("GET", f"/users/{other_user}")
    assert status == 200


async def test_a_delta_link_of_one_tenant_is_refused_to_another(graph: Graph, graph2: Graph) -> None:
    _, page, _ = await graph.call("GET", "/users/delta?$select=displayName")
    link = page.get("@odata.nextLink") or page["@odata.deltaLink"]
    status, _, _ = await graph2.call("GET", link)
    assert status == 403


async def test_openid_configuration_names_the_token_endpoint(graph: Graph) -> None:
    tenant_id = graph.tenant["tenant_id"]
    url = f"{graph.sim.info.authority_url}/{tenant_id}/v2.0/.well-known/openid-configuration"
    async with graph.http.get(url) as response:
        body = await response.json()
    assert body["token_endpoint"].endswith(f"/{tenant_id}/oauth2/v2.0/token")


async def test_simulator_json_shape(sim: Simulator, tmp_path: Path) -> None:
    from simulator.server import write_info

    path = write_info(tmp_path, sim.info)
    data = json.loads(path.read_text())
    assert set(data) == {"graph_url", "authority_url", "ca_file", "tenants"}
    assert set(data["tenants"][0]) == {"tenant_id", "client_id", "client_secret", "default_domain"}
    assert data["graph_url"] == data["authority_url"] + "/v1.0"
    assert Path(data["ca_file"]).read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")


async def test_credentials_of_one_tenant_do_not_sign_in_to_another(sim: Simulator) -> None:
    first, second = sim.info.tenants[0], sim.info.tenants[1]
    credential = ClientSecretCredential(second["tenant_id"], first["client_id"], first["client_secret"],
                                        authority=sim.info.authority_url, disable_instance_discovery=True,
                                        connection_verify=sim.info.ca_file)  # fmt: skip
    with pytest.raises(ClientAuthenticationError, match="AADSTS700016"):
        await credential.get_token(SCOPE)
    await credential.close()


async def test_revoked_consent_refuses_tokens_like_entra_until_restored(sim: Simulator) -> None:
    tenant = sim.info.tenants[0]

    async def token() -> None:
        credential = ClientSecretCredential(tenant["tenant_id"], tenant["client_id"], tenant["client_secret"],
                                            authority=sim.info.authority_url, disable_instance_discovery=True,
                                            connection_verify=sim.info.ca_file)  # fmt: skip
        try:
            await credential.get_token(SCOPE)
        finally:
            await credential.close()

    sim.state.tenants[tenant["tenant_id"]].faults.consent_revoked = True
    try:
        with pytest.raises(ClientAuthenticationError, match=r"unauthorized_client\) AADSTS700016.*consented"):
            await token()
    finally:
        sim.state.tenants[tenant["tenant_id"]].faults.consent_revoked = False
    await token()
