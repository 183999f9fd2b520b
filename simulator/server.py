"""The simulator as a process: an HTTPS aiohttp server, its background tasks, and `simulator.json`.

`Simulator` is an async context manager used by the CLI, the embedded stack, tests and benchmarks;
`run_simulator` runs one until cancelled or signalled. Requests pass one middleware that authenticates
Graph calls (`/v1.0/…`), applies the tenant's faults, keeps `/_sim/` to loopback clients and renders errors
in Graph's shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from simulator import auth, routes_directory, routes_groups, routes_sim, routes_subscriptions, routes_users
from simulator.context import REQUEST_ID, SERVICES, TENANT, Services
from simulator.delta import DeltaEngine
from simulator.errors import GraphError, error_response
from simulator.model import Tenant
from simulator.notify import Notifier
from simulator.state import SimState
from simulator.tls import CA_FILE, load_or_create_ca, server_ssl_context

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HOUSEKEEPING_INTERVAL_S = 0.2


@dataclass
class SimulatorInfo:
    """Where the simulator listens and how to sign in to each tenant: `simulator.json`."""

    graph_url: str
    authority_url: str
    ca_file: str
    tenants: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"graph_url": self.graph_url, "authority_url": self.authority_url, "ca_file": self.ca_file,
                "tenants": [dict(t) for t in self.tenants]}  # fmt: skip


def _throttle_error(status: int, retry_after: str | None) -> GraphError:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    if status == 429:
        return GraphError(429, "TooManyRequests", "Too many requests.", headers=headers)
    if status == 503:
        return GraphError(503, "serviceNotAvailable", "The service is temporarily unavailable.", headers=headers)
    if status == 504:
        return GraphError(504, "UnknownError", "Gateway timeout.", headers=headers)
    return GraphError(status, "generalException", "An unexpected error occurred.", headers=headers)


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return False


@web.middleware
async def graph_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[REQUEST_ID] = str(uuid.uuid4())
    try:
        if request.path.startswith("/v1.0/"):
            await _before_graph_call(request)
        elif request.path.startswith("/_sim/") and not _is_loopback(request.remote):
            raise GraphError(403, "Forbidden", "Simulator controls are available to loopback clients only.")
        response = await handler(request)
    except GraphError as error:
        response = error_response(request, error)
    except web.HTTPNotFound:
        segment = request.path.rstrip("/").rsplit("/", 1)[-1]
        response = error_response(request, GraphError(400, "BadRequest", f"Resource not found for the segment "
                                                      f"'{segment}'."))  # fmt: skip
    except web.HTTPMethodNotAllowed:
        response = error_response(request, GraphError(405, "Request_BadRequest", "Method not allowed."))
    response.headers["request-id"] = request[REQUEST_ID]
    response.headers["client-request-id"] = request.headers.get("client-request-id", request[REQUEST_ID])
    return response


async def _before_graph_call(request: web.Request) -> None:
    services = request.app[SERVICES]
    tenant = auth.authenticate(services.state, request.headers.get("Authorization"))
    request[TENANT] = tenant
    faults = tenant.faults
    if faults.latency_ms:
        await asyncio.sleep(faults.latency_ms / 1000)
    rule = faults.take_throttle(request.method, request.path) if faults.throttle else None
    if rule is not None:
        raise _throttle_error(rule.status, rule.retry_after)
    wait = services.limiter.charge(tenant, request) if faults.rate_limits else None
    if wait is not None:
        raise _throttle_error(429, str(wait))


def build_app(services: Services) -> web.Application:
    app = web.Application(middlewares=[graph_middleware], client_max_size=8 * 1024 * 1024)
    app[SERVICES] = services
    for module in (auth, routes_users, routes_groups, routes_directory, routes_subscriptions, routes_sim):
        module.add_routes(app)
    return app


class Simulator:
    """A Graph + Entra look-alike over HTTPS: `async with Simulator(state_dir=…) as sim: sim.info…`."""

    def __init__(self, *, state_dir: Path, port: int = 0, tenants: int = 1, users: int = 200, seed: int = 1,
                 host: str = "127.0.0.1") -> None:  # fmt: skip
        self.state_dir = Path(state_dir)
        self.port = port
        self.host = host
        self.state = SimState(seed=seed)
        self._tenants, self._users = tenants, users
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.info: SimulatorInfo
        self.info_path: Path | None = None  # set when simulator.json is written: kept up to date
        self.services: Services
        self.notifier: Notifier

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        await self.close()

    async def start(self) -> SimulatorInfo:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(self._tenants):
            self.state.add_tenant(users=self._users)
        ca = load_or_create_ca(self.state_dir)
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        self.notifier = Notifier(self.state, self._session)
        self.state.on_change = self.notifier.on_change
        engine = DeltaEngine(self.state.tunables)
        self.services = Services(self.state, engine, self.notifier, self._session, housekeeping=self.housekeeping,
                                 tenant_added=self._tenant_added)  # fmt: skip
        # In-flight handlers (a handshake may wait 10 s) get 2 s at shutdown, not aiohttp's default 60 s.
        self._runner = web.AppRunner(build_app(self.services), access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=server_ssl_context(ca), backlog=1024)
        await site.start()
        self.port = self._bound_port()
        self._tasks = [asyncio.create_task(self.notifier.run()), asyncio.create_task(self._housekeeping_loop())]
        self.info = self._make_info()
        return self.info

    def _bound_port(self) -> int:
        assert self._runner is not None
        server = self._runner.server
        for site in self._runner.sites:
            sockets = getattr(getattr(site, "_server", None), "sockets", None) or []
            for sock in sockets:
                return int(sock.getsockname()[1])
        raise RuntimeError(f"simulator did not bind a port ({server!r})")

    def _make_info(self) -> SimulatorInfo:
        host = f"[{self.host}]" if ":" in self.host else self.host
        base = f"https://{host}:{self.port}"
        return SimulatorInfo(graph_url=f"{base}/v1.0", authority_url=base, ca_file=str(self.state_dir / CA_FILE),
                             tenants=[routes_sim.credentials(t) for t in self.state.tenants.values()])  # fmt: skip

    def _tenant_added(self, tenant: Tenant) -> None:
        self.info.tenants.append(routes_sim.credentials(tenant))
        if self.info_path is not None:
            write_info(self.info_path.parent, self.info)

    def housekeeping(self) -> None:
        """Apply the passage of simulated time: purges, subscription expiry, reauthorization warnings."""
        self.state.tick()
        now = self.state.clock.now()
        warn_before = self.state.tunables.reauthorize_before_s
        for tenant in self.state.tenants.values():
            for sub in list(tenant.subscriptions.values()):
                if sub.expiration <= now:
                    del tenant.subscriptions[sub.id]
                elif not sub.reauthorize_warned and sub.expiration - now <= warn_before:
                    sub.reauthorize_warned = True
                    self.notifier.lifecycle(tenant, sub, "reauthorizationRequired")

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
            self.housekeeping()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None


def write_info(state_dir: Path, info: SimulatorInfo) -> Path:
    """Write `simulator.json` atomically (temporary file, then rename)."""
    path = state_dir / "simulator.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info.to_json(), indent=2) + "\n")
    os.replace(tmp, path)
    return path


async def run_simulator(*, state_dir: Path, port: int = 0, tenants: int = 1, users: int = 200, seed: int = 1) -> None:
    """Start a simulator, write `simulator.json`, run until cancelled, SIGINT or SIGTERM, then close it."""
    state_dir = Path(state_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        async with Simulator(state_dir=state_dir, port=port, tenants=tenants, users=users, seed=seed) as sim:
            sim.info_path = write_info(state_dir, sim.info)
            await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
