"""Serving an aiohttp application until cancelled: the one loop the webhook and the admin API share, and the
request-body guard both put in front of their handlers.

The guard keeps slow or vanished clients from holding memory and connections: a body must arrive whole within
a deadline (else 408 and the connection is closed), and only so many bodies may be arriving at once (beyond
that, 503 and closed). A body that is already complete when its headers are parsed takes no slot, so
legitimate small requests keep being served while slow clients fill the slots. Memory for bodies is thus at
most `max_in_flight * max_body_bytes` plus what the kernel and aiohttp's flow control buffer per connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A body whose last TCP segment is still on its way when the headers are parsed completes within a moment;
# only one that is still incomplete after this grace is refused for want of a slot.
_GRACE_S = 0.1


def bound_url(runner: web.AppRunner, host: str) -> str:
    """The URL a client on this machine reaches: a wildcard bind is reported as loopback."""
    port = runner.addresses[0][1]
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


@dataclass
class BodyGuard:
    """aiohttp middleware: read each request body in full, within `timeout_s`, at most `max_in_flight` at once.

    It answers the failures itself, in the JSON error shape both APIs share, with `Connection: close`, and
    logs each as one line without a stack trace. Put it first (outermost): handlers behind it find the body
    already read (`request.read()`, `request.json()` return it from memory).
    """

    name: str
    timeout_s: float
    max_in_flight: int
    max_body_bytes: int
    in_flight: int = 0
    __middleware_version__ = 1  # what @web.middleware marks: called as (request, handler)

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.body_exists:
            return await handler(request)
        started = time.monotonic()
        if (request.content_length or 0) > self.max_body_bytes:
            failure: tuple[int, str, str] | None = self._too_large()  # refused before a byte of it is read
        elif request.content.is_eof():
            failure = await self._read(request, self.timeout_s)
        elif self.in_flight < self.max_in_flight:
            self.in_flight += 1
            try:
                failure = await self._read(request, self.timeout_s)
            finally:
                self.in_flight -= 1
        elif await self._read(request, _GRACE_S) is None:
            failure = None
        else:
            failure = (503, "too_many_bodies", "too many request bodies in flight; retry later")
        if failure is None:
            return await handler(request)
        status, code, message = failure
        log.warning(f"{self.name}.{code}", method=request.method, path=request.path, status=status,
                    received_bytes=request.content.total_bytes,
                    duration_ms=round((time.monotonic() - started) * 1000, 1))
        response = web.json_response({"error": {"code": code, "message": message}}, status=status)
        response.force_close()
        return response

    def _too_large(self) -> tuple[int, str, str]:
        return 413, "body_too_large", f"body exceeds {self.max_body_bytes} bytes"

    async def _read(self, request: web.Request, timeout_s: float) -> tuple[int, str, str] | None:
        try:
            async with asyncio.timeout(timeout_s):
                await request.read()
        except TimeoutError:
            return 408, "body_timeout", f"request body not received within {self.timeout_s:g} s"
        except web.HTTPRequestEntityTooLarge:
            return self._too_large()
        except (ConnectionError, asyncio.IncompleteReadError):
            # The client went away mid-body: nobody reads the answer; one line, no stack trace.
            return 499, "client_disconnected", "client closed the connection before sending its body"
        return None


async def serve(
    app: web.Application, *, name: str, host: str, port: int, ready: Callable[[str], None] | None = None,
    shutdown_timeout: float = 60.0, backlog: int = 128,
) -> None:
    """Listen on host:port (0 = any free port), call `ready(url)` once listening, serve until cancelled."""
    # lingering_time=0: a request answered without reading its body (413, 408, 503) has its connection closed
    # at once, rather than aiohttp reading and discarding a slow client's bytes for 10 more seconds.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout, lingering_time=0)
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
