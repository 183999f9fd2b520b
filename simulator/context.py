"""What every request handler needs, stored on the aiohttp application under typed keys."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from simulator.delta import DeltaEngine
from simulator.model import Tenant
from simulator.notify import Notifier
from simulator.state import SimState
from simulator.throttle import RateLimiter


@dataclass
class Services:
    state: SimState
    delta: DeltaEngine
    notifier: Notifier
    session: aiohttp.ClientSession
    limiter: RateLimiter = field(default_factory=RateLimiter)
    housekeeping: Callable[[], None] = lambda: None  # apply the passage of simulated time now
    tenant_added: Callable[[Tenant], None] = lambda tenant: None  # a tenant was added at run time


SERVICES = web.AppKey("services", Services)
TENANT = web.RequestKey("tenant", Tenant)
REQUEST_ID = web.RequestKey("request_id", str)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def tenant_of(request: web.Request) -> Tenant:
    """The tenant the request's bearer token belongs to (set by the auth middleware)."""
    return request[TENANT]


def graph_base(request: web.Request) -> str:
    """The Graph base URL as the client reached it, e.g. `https://127.0.0.1:8443/v1.0`."""
    return f"https://{request.host}/v1.0"
