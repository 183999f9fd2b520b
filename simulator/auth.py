"""The Entra token endpoint look-alike and bearer-token checks for Graph requests.

Serves `/{tenant}/oauth2/v2.0/token` (client credentials), the OpenID configuration and instance discovery
documents MSAL may ask for, and `authenticate`, which maps a Graph request's bearer token to its tenant.
Access tokens are HS256 JWTs bound to one tenant and application; their lifetime runs on real time.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiohttp import web

from simulator.context import SERVICES
from simulator.errors import GraphError
from simulator.model import Tenant
from simulator.state import SimState
from simulator.tokens import make_jwt, read_jwt

GRAPH_AUDIENCE = "https://graph.microsoft.com"
GRAPH_SCOPES = {"https://graph.microsoft.com/.default", "00000003-0000-0000-c000-000000000000/.default"}
TOKEN_LIFETIME_S = 3599
APP_ROLES = ["User.Read.All", "Group.Read.All", "AuditLog.Read.All", "Directory.Read.All",
             "DeviceManagementManagedDevices.Read.All", "Organization.Read.All", "User.ReadWrite.All",
             "Group.ReadWrite.All", "Reports.Read.All"]  # fmt: skip


def _aad_error(status: int, error: str, code: int, description: str) -> web.Response:
    body = {
        "error": error,
        "error_description": f"AADSTS{code}: {description} Trace ID: {uuid.uuid4()} Correlation ID: "
        f"{uuid.uuid4()} Timestamp: {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())}",
        "error_codes": [code],
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
        "trace_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
    }
    return web.json_response(body, status=status)


def issue_token(state: SimState, tenant: Tenant) -> dict[str, Any]:
    """The token response of a successful client-credentials grant."""
    now = int(time.time())
    claims = {
        "aud": GRAPH_AUDIENCE, "iss": f"https://sts.windows.net/{tenant.tenant_id}/", "iat": now, "nbf": now,
        "exp": now + TOKEN_LIFETIME_S, "appid": tenant.client_id, "azp": tenant.client_id,
        "idtyp": "app", "oid": tenant.client_id, "sub": tenant.client_id, "roles": APP_ROLES,
        "tid": tenant.tenant_id, "ver": "1.0", "uti": uuid.uuid4().hex[:22], "sim_gen": tenant.token_generation,
    }  # fmt: skip
    token = make_jwt(claims, state.key)
    return {"token_type": "Bearer", "expires_in": TOKEN_LIFETIME_S, "ext_expires_in": TOKEN_LIFETIME_S,
            "access_token": token}  # fmt: skip


async def token_endpoint(request: web.Request) -> web.Response:
    state = request.app[SERVICES].state
    tenant = state.tenant_by_id_or_domain(request.match_info["tenant"])
    if tenant is None:
        return _aad_error(400, "invalid_request", 90002, f"Tenant '{request.match_info['tenant']}' not found.")
    form = await request.post()
    if form.get("grant_type") != "client_credentials":
        return _aad_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
    if form.get("client_id") != tenant.client_id:
        message = f"Application with identifier '{form.get('client_id')!s}' was not found in the directory."
        return _aad_error(400, "unauthorized_client", 700016, message)
    if form.get("client_secret") != tenant.client_secret:
        return _aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
    if tenant.faults.consent_revoked:  # Entra's answer once the app is no longer installed/consented in the tenant
        return _aad_error(400, "unauthorized_client", 700016, f"Application with identifier '{tenant.client_id}' "
                          f"was not found in the directory '{tenant.display_name}'. This can happen if the "
                          "application has not been installed by the administrator of the tenant or consented "
                          "to by any user in the tenant. You may have sent your authentication request to the "
                          "wrong tenant.")  # fmt: skip
    if str(form.get("scope", "")).strip() not in GRAPH_SCOPES:
        return _aad_error(400, "invalid_scope", 1002012, f"The provided value for scope "
                          f"{form.get('scope')!s} is not valid. Client credential flows must have a scope value "
                          "with /.default suffixed to the resource identifier.")  # fmt: skip
    return web.json_response(issue_token(state, tenant))


async def openid_configuration(request: web.Request) -> web.Response:
    """`/{tenant}/v2.0/.well-known/openid-configuration`, as MSAL reads it for tenant discovery."""
    tenant = request.match_info["tenant"]
    base = f"{request.scheme}://{request.host}"
    return web.json_response({
        "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{base}/{tenant}/v2.0",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"{base}/oidc/userinfo",
        "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{base}/{tenant}/oauth2/v2.0/logout",
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid", "oid"],
        "kerberos_endpoint": f"{base}/{tenant}/kerberos",
        "tenant_region_scope": "EU",
        "cloud_instance_name": request.host,
        "cloud_graph_host_name": request.host,
        "msgraph_host": request.host,
    })  # fmt: skip


async def instance_discovery(request: web.Request) -> web.Response:
    """`/common/discovery/instance`: this host is its own (only) cloud instance."""
    host = request.host
    return web.json_response({
        "tenant_discovery_endpoint": f"https://{host}/common/v2.0/.well-known/openid-configuration",
        "api-version": "1.1",
        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
    })  # fmt: skip


def authenticate(state: SimState, header: str | None) -> Tenant:
    """The tenant a Graph request's `Authorization: Bearer …` header was issued for, or Graph's 401."""
    if not header or not header.lower().startswith("bearer "):
        raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
    claims = read_jwt(header[7:].strip(), state.key)
    if claims is None:
        raise GraphError(401, "InvalidAuthenticationToken", "IDX14100: JWT is not well formed, or its signature "
                         "is invalid.")  # fmt: skip
    if float(claims.get("exp", 0)) < time.time():
        raise GraphError(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.")
    tenant = state.tenants.get(str(claims.get("tid")))
    if tenant is None or claims.get("appid") != tenant.client_id or claims.get("aud") != GRAPH_AUDIENCE:
        raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.")
    if claims.get("sim_gen", 0) != tenant.token_generation:
        raise GraphError(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.")
    return tenant


def add_routes(app: web.Application) -> None:
    app.router.add_post("/{tenant}/oauth2/v2.0/token", token_endpoint)
    app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration)
    app.router.add_get("/common/discovery/instance", instance_discovery)
