"""The demo `entra-sync up` creates on simulated tenants, through the admin API as an operator would.

The first simulated tenant gets one PSA tenant ("Demo MSP") and two Organizations with different filters;
with `up --tenants N`, each further tenant gets its own PSA tenant and one Organization that syncs everyone.
`onboard_tenant` is the operator's sequence for one tenant (register, map, create, enable) and is also what
`bench fleet` times.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

log = structlog.get_logger(__name__)

ALL_FILTERS: dict[str, Any] = {
    "user_types": "all", "domains": "all", "office_locations": "all", "departments": "all", "groups": "all",
}
DEMO_ORGANIZATIONS = (
    ("Contoso Sales & Support", {"user_types": ["Member"], "domains": "all", "office_locations": "all",
                                 "departments": ["Sales", "Support"], "groups": "all"}),
    ("Contoso Engineering", {"user_types": "all", "domains": "all", "office_locations": "all",
                             "departments": ["Engineering"], "groups": "all"}),
)
PARALLEL_TENANTS = 8  # operator calls in flight while onboarding many tenants; the admin API is one process


class DemoError(RuntimeError):
    pass


@dataclass
class Onboarded:
    """What onboarding one tenant created: its PSA tenant, Organizations and their initial runs (if enabled now)."""

    tenant_id: str
    psa_tenant_id: str
    organization_ids: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)


@dataclass
class Existing:
    """What the admin API already holds, so onboarding again (a restarted stack) creates nothing twice."""

    tenants: set[str]
    psa_tenants: dict[str, dict[str, Any]]  # name → PSA tenant
    organizations: dict[str, dict[str, Any]]  # name → Organization

    @classmethod
    async def read(cls, http: aiohttp.ClientSession, api: str) -> Existing:
        return cls(
            tenants={t["tenant_id"] for t in _items(await call(http, "GET", f"{api}/microsoft-tenants"))},
            psa_tenants={p["name"]: p for p in _items(await call(http, "GET", f"{api}/psa-tenants"))},
            organizations={o["name"]: o for o in _items(await call(http, "GET", f"{api}/organizations"))},
        )


async def call(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> Any:
    """One admin API call; an error answer raises `DemoError` with the status and body."""
    async with http.request(method, url, json=body) as resp:
        data = await resp.json(content_type=None)
        if resp.status >= 400:
            raise DemoError(f"{method} {url} -> {resp.status}: {data}")
        return data


def _items(data: Any) -> list[dict[str, Any]]:
    return list(data["items"] if isinstance(data, dict) and "items" in data else data)


def api_session(token: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"},
                                 timeout=aiohttp.ClientTimeout(total=120))


async def onboard_tenant(
    http: aiohttp.ClientSession, api: str, tenant: dict[str, str], *, psa_name: str,
    organizations: Sequence[tuple[str, dict[str, Any]]], existing: Existing | None = None,
) -> Onboarded:
    """Register the Microsoft tenant, create a PSA tenant mapped to it, and each Organization with user sync
    enabled (which queues its initial sync). Whatever `existing` already holds is reused, not created again."""
    existing = existing or Existing(set(), {}, {})
    if tenant["tenant_id"] not in existing.tenants:
        await call(http, "POST", f"{api}/microsoft-tenants", {
            "tenant_id": tenant["tenant_id"], "display_name": tenant.get("default_domain") or psa_name,
            "client_id": tenant["client_id"], "client_secret": tenant["client_secret"],
        })
    psa = existing.psa_tenants.get(psa_name) or await call(http, "POST", f"{api}/psa-tenants", {"name": psa_name})
    await call(http, "PUT", f"{api}/psa-tenants/{psa['id']}/microsoft-tenant",
               {"microsoft_tenant_id": tenant["tenant_id"]})
    done = Onboarded(tenant["tenant_id"], str(psa["id"]))
    for name, filters in organizations:
        if name in existing.organizations:
            done.organization_ids.append(str(existing.organizations[name]["id"]))
            continue
        org = await call(http, "POST", f"{api}/organizations", {"name": name, "psa_tenant_id": psa["id"]})
        run = await call(http, "PUT", f"{api}/organizations/{org['id']}/user-sync", {"filters": filters})
        done.organization_ids.append(str(org["id"]))
        if isinstance(run, dict) and run.get("run_id"):
            done.run_ids.append(str(run["run_id"]))
    return done


def demo_plan(index: int, tenant: dict[str, str]) -> tuple[str, Sequence[tuple[str, dict[str, Any]]]]:
    """The PSA tenant and Organizations of the demo's `index`-th simulated tenant (0-based)."""
    if index == 0:
        return "Demo MSP", DEMO_ORGANIZATIONS
    domain = tenant.get("default_domain") or tenant["tenant_id"]
    return f"Demo MSP {index + 1}", ((f"Customer {index + 1} ({domain})", ALL_FILTERS),)


async def create_demo(admin_url: str, token: str, tenants: Sequence[dict[str, str]]) -> list[Onboarded]:
    """Each simulated tenant onboarded as `demo_plan` says, a few at a time. Idempotent: a restarted stack
    finds its demo in place and creates nothing."""
    api = admin_url.rstrip("/") + "/api/v1"
    limit = asyncio.Semaphore(PARALLEL_TENANTS)
    async with api_session(token) as http:
        existing = await Existing.read(http, api)

        async def one(index: int, tenant: dict[str, str]) -> Onboarded:
            psa_name, organizations = demo_plan(index, tenant)
            async with limit:
                return await onboard_tenant(http, api, tenant, psa_name=psa_name, organizations=organizations,
                                            existing=existing)

        done = await asyncio.gather(*(one(i, t) for i, t in enumerate(tenants)))
    log.info("demo.created", tenants=len(done), organizations=sum(len(d.organization_ids) for d in done))
    return list(done)
