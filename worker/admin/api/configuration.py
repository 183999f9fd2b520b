"""Admin API handlers for configuration and mapping: Microsoft tenants (registered with a tested credential),
PSA tenants and their mapping, Organizations. They parse input (a 400 names the field) and shape output;
the store and the operations do the rest.
"""

from __future__ import annotations

from aiohttp import web

from worker.admin import inputs
from worker.admin.errors import BadRequest

from .context import Routes, items, operations, store


async def list_microsoft_tenants(request: web.Request) -> web.Response:
    return items(await store(request).list_microsoft_tenants())


def _tenant_path(request: web.Request) -> str:
    return inputs.tenant_ref(request.match_info["id"])


async def microsoft_tenant_sync_status(request: web.Request) -> web.Response:
    return web.json_response(await store(request).tenant_sync_status(_tenant_path(request)))


async def create_microsoft_tenant(request: web.Request) -> web.Response:
    """Register a tenant: its id a GUID (stored lower-case), its credential tested before anything is stored."""
    body = await inputs.json_body(
        request, allowed=("tenant_id", "display_name", "client_id", "client_secret", "default_domain")
    )
    created = await operations(request).register_tenant(
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
    updated = await operations(request).update_tenant(
        tenant_id, display_name=inputs.optional_text(body, "display_name"),
        client_id=inputs.optional_text(body, "client_id"),
        client_secret=inputs.optional_text(body, "client_secret", max_len=1024),
    )
    return web.json_response(updated)


async def delete_microsoft_tenant(request: web.Request) -> web.Response:
    return web.json_response(await operations(request).remove_tenant(_tenant_path(request)))


async def list_psa_tenants(request: web.Request) -> web.Response:
    return items(await store(request).list_psa_tenants())


async def create_psa_tenant(request: web.Request) -> web.Response:
    body = await inputs.json_body(request, allowed=("name",))
    return web.json_response(await store(request).create_psa_tenant(inputs.text(body, "name")), status=201)


async def map_psa_tenant(request: web.Request) -> web.Response:
    psa_id = inputs.path_id(request)
    body = await inputs.json_body(request, allowed=("microsoft_tenant_id",))
    tenant_id = inputs.tenant_ref(inputs.text(body, "microsoft_tenant_id", max_len=128))
    return web.json_response(await operations(request).map_psa_tenant(psa_id, tenant_id))


async def unmap_psa_tenant(request: web.Request) -> web.Response:
    return web.json_response(await operations(request).unmap_psa_tenant(inputs.path_id(request)))


async def list_organizations(request: web.Request) -> web.Response:
    psa_id = inputs.query_uuid(request, "psa_tenant_id")
    return items(await store(request).list_organizations(psa_tenant_id=psa_id))


async def create_organization(request: web.Request) -> web.Response:
    body = await inputs.json_body(request, allowed=("name", "psa_tenant_id"))
    name = inputs.text(body, "name")
    psa_id = inputs.uuid_value(body.get("psa_tenant_id"), "psa_tenant_id")
    return web.json_response(await store(request).create_organization(name=name, psa_tenant_id=psa_id), status=201)


async def assign_organization(request: web.Request) -> web.Response:
    org_id = inputs.path_id(request)
    body = await inputs.json_body(request, allowed=("psa_tenant_id",))
    psa_id = inputs.uuid_value(body.get("psa_tenant_id"), "psa_tenant_id")
    return web.json_response(await operations(request).assign_organization(org_id, psa_id))


ROUTES: Routes = (
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
)
