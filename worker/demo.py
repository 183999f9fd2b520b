"""The demo `entra-sync up` creates on a simulated tenant, through the admin API as an operator would:
one PSA tenant mapped to the first simulated tenant and two Organizations with different filters."""

from __future__ import annotations

from typing import Any

import aiohttp
import structlog

log = structlog.get_logger(__name__)

DEMO_ORGANIZATIONS = (
    ("Contoso Sales & Support", {"user_types": ["Member"], "domains": "all", "office_locations": "all",
                                 "departments": ["Sales", "Support"], "groups": "all"}),
    ("Contoso Engineering", {"user_types": "all", "domains": "all", "office_locations": "all",
                             "departments": ["Engineering"], "groups": "all"}),
)


class DemoError(RuntimeError):
    pass


async def _call(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> Any:
    async with http.request(method, url, json=body) as resp:
        data = await resp.json(content_type=None)
        if resp.status >= 400:
            raise DemoError(f"{method} {url} -> {resp.status}: {data}")
        return data


def _items(data: Any) -> list[dict[str, Any]]:
    return list(data["items"] if isinstance(data, dict) and "items" in data else data)


async def create_demo(admin_url: str, token: str, tenant: dict[str, str]) -> None:
    """Idempotent: does nothing when the demo Organizations exist already (a restarted stack)."""
    api = admin_url.rstrip("/") + "/api/v1"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        existing = {o["name"] for o in _items(await _call(http, "GET", f"{api}/organizations"))}
        if all(name in existing for name, _ in DEMO_ORGANIZATIONS):
            return
        tenants = {t["tenant_id"] for t in _items(await _call(http, "GET", f"{api}/microsoft-tenants"))}
        if tenant["tenant_id"] not in tenants:
            await _call(http, "POST", f"{api}/microsoft-tenants", {
                "tenant_id": tenant["tenant_id"], "display_name": tenant.get("default_domain", "Simulated"),
                "client_id": tenant["client_id"], "client_secret": tenant["client_secret"],
            })
        psa = {p["name"]: p for p in _items(await _call(http, "GET", f"{api}/psa-tenants"))}.get("Demo MSP")
        if psa is None:
            psa = await _call(http, "POST", f"{api}/psa-tenants", {"name": "Demo MSP"})
        await _call(http, "PUT", f"{api}/psa-tenants/{psa['id']}/microsoft-tenant",
                    {"microsoft_tenant_id": tenant["tenant_id"]})
        for name, filters in DEMO_ORGANIZATIONS:
            if name in existing:
                continue
            org = await _call(http, "POST", f"{api}/organizations", {"name": name, "psa_tenant_id": psa["id"]})
            await _call(http, "PUT", f"{api}/organizations/{org['id']}/user-sync", {"filters": filters})
        log.info("demo.created", organizations=[n for n, _ in DEMO_ORGANIZATIONS])
