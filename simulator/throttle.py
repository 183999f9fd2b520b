"""Graph's request budgets per application and tenant, enforced on real time when a tenant enables them.

Identity: 3,500 / 5,000 / 8,000 resource units per 10 s for tenants of < 50 / 50-500 / > 500 users;
`GET users` costs 2 (1 with `$select`), `subscribedSkus` 3, other identity calls 1. Reports
(`userRegistrationDetails`): 5 requests per 10 s. Intune: 2,000 requests per 20 s. Off by default (so
benchmarks measure the product, not the budget); `POST /_sim/faults {"rate_limits": true}` turns them on.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from aiohttp import web

from simulator.model import Tenant


@dataclass
class Window:
    started: float
    used: int = 0


@dataclass
class RateLimiter:
    """Fixed windows per (tenant, budget); `charge` answers how long to wait when a request is over budget."""

    windows: dict[tuple[str, str], Window] = field(default_factory=dict)

    def charge(self, tenant: Tenant, request: web.Request) -> int | None:
        budget, limit, period, cost = classify(tenant, request)
        now = time.monotonic()
        window = self.windows.get((tenant.tenant_id, budget))
        if window is None or now - window.started >= period:
            window = self.windows[(tenant.tenant_id, budget)] = Window(now)
        if window.used + cost > limit:
            return max(1, math.ceil(window.started + period - now))
        window.used += cost
        return None


def identity_limit(user_count: int) -> int:
    if user_count < 50:
        return 3_500
    return 5_000 if user_count <= 500 else 8_000


def classify(tenant: Tenant, request: web.Request) -> tuple[str, int, float, int]:
    """(budget name, limit, period in seconds, cost) of a request."""
    path = request.path
    if path.startswith("/v1.0/reports/"):
        return "reports", 5, 10.0, 1
    if path.startswith("/v1.0/deviceManagement/"):
        return "intune", 2_000, 20.0, 1
    limit = identity_limit(len(tenant.users))
    if request.method == "GET" and path.rstrip("/") == "/v1.0/users":
        cost = 1 if ("$select" in request.query or "select" in request.query) else 2
    elif path == "/v1.0/subscribedSkus":
        cost = 3
    else:
        cost = 1
    return "identity", limit, 10.0, cost
