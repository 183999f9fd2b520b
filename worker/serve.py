"""Serving an aiohttp application until cancelled: the one loop the webhook and the admin API share."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)


def bound_url(runner: web.AppRunner, host: str) -> str:
    """The URL a client on this machine reaches: a wildcard bind is reported as loopback."""
    port = runner.addresses[0][1]
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def serve(
    app: web.Application, *, name: str, host: str, port: int, ready: Callable[[str], None] | None = None,
    shutdown_timeout: float = 60.0, backlog: int = 128,
) -> None:
    """Listen on host:port (0 = any free port), call `ready(url)` once listening, serve until cancelled."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=backlog).start()
        url = bound_url(runner, host)
        log.info(f"{name}.listening", url=url)
        if ready is not None:
            ready(url)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
