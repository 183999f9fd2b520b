"""HTTP handlers of the webhook: handshake, notification batches, health, readiness and metrics.

Order of checks on a notification POST: validation handshake (before anything else), size, content type,
body shape, then per item: shape, tenant, clientState. Every error answer is `{"error": {"code", "message"}}`
and never carries a stack trace.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from schemas import messages, topics
from webhook.metrics import CONTENT_TYPE, WebhookMetrics
from webhook.parsing import Kind, NotACollection, Parsed, parse
from webhook.sink import NotificationSink, Record
from webhook.verify import ClientStateVerifier
from worker.config import WebhookSettings

log = structlog.get_logger(__name__)

TOPIC = {Kind.CHANGE: topics.NOTIFICATIONS, Kind.LIFECYCLE: topics.LIFECYCLE}


class ApiError(Exception):
    """An answer other than 2xx, with a stable code for the caller."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every failure to the JSON error shape once, here; unexpected ones are logged, never echoed."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    except Exception:
        log.exception("webhook.unhandled_error", path=request.path)
        return error_response(500, "internal_error", "internal error")


@dataclass(frozen=True)
class Receiver:
    """Handles the POSTs of one endpoint (change or lifecycle notifications)."""

    kind: Kind
    settings: WebhookSettings
    verify: ClientStateVerifier
    metrics: WebhookMetrics
    sink: NotificationSink

    async def handle(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("validationToken")
        if token is not None:
            # Graph's handshake: echo the URL-decoded token, unchanged, as text/plain, before any other check.
            self.metrics.handshakes.labels(self.kind.value).inc()
            log.info("webhook.handshake", kind=self.kind.value, status=200)
            return web.Response(text=token, content_type="text/plain")
        started = time.perf_counter()
        parsed: Parsed | None = None
        try:
            parsed = await self._parse(request)
            await self._publish(parsed)
        except ApiError as exc:
            self._log(started, status=exc.status, parsed=parsed, code=exc.code)
            raise
        self._log(started, status=202, parsed=parsed)
        return web.Response(status=202)

    async def _parse(self, request: web.Request) -> Parsed:
        if (request.content_length or 0) > self.settings.max_body_bytes:
            raise self._too_large()
        if request.content_type != "application/json":
            raise ApiError(415, "unsupported_media_type", "expected application/json")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise self._too_large() from None
        try:
            parsed = parse(body, kind=self.kind, verify=self.verify, received_at=_now())
        except NotACollection as exc:
            raise ApiError(400, "not_a_notification_collection", str(exc)) from None
        self._count(parsed)
        return parsed

    def _too_large(self) -> ApiError:
        return ApiError(413, "body_too_large", f"body exceeds {self.settings.max_body_bytes} bytes")

    async def _publish(self, parsed: Parsed) -> None:
        if not parsed.messages:
            return
        topic = TOPIC[self.kind]
        records = [Record(topic, tenant.encode(), messages.encode(m)) for tenant, m in parsed.messages]
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.publish_timeout_s):
                await self.sink.publish(records)
        except Exception as exc:  # timeout, broker error, no producer: all mean "not persisted, retry"
            self.metrics.publish_failures.labels(self.kind.value).inc()
            log.warning("webhook.publish_failed", kind=self.kind.value, error=type(exc).__name__)
            raise ApiError(503, "broker_unavailable", "notifications not persisted; retry later") from None
        self.metrics.ack_seconds.labels(self.kind.value).observe(time.perf_counter() - started)
        self.metrics.published.labels(self.kind.value).inc(len(records))

    def _count(self, parsed: Parsed) -> None:
        kind = self.kind.value
        self.metrics.received.labels(kind).inc(parsed.received)
        for reason, n in parsed.dropped.items():
            self.metrics.dropped.labels(kind, reason.value).inc(n)

    def _log(self, started: float, *, status: int, parsed: Parsed | None = None, code: str = "") -> None:
        """The one canonical line per batch. Never includes clientState or any secret."""
        log.info(
            "webhook.batch",
            kind=self.kind.value,
            status=status,
            received=parsed.received if parsed else 0,
            published=len(parsed.messages) if parsed and status == 202 else 0,
            dropped={r.value: n for r, n in parsed.dropped.items()} if parsed else {},
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            **({"error": code} if code else {}),
        )


def _now() -> str:
    return datetime.now(UTC).isoformat()


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@dataclass(frozen=True)
class Readiness:
    sink: NotificationSink

    async def handle(self, _: web.Request) -> web.Response:
        if await self.sink.ready():
            return web.json_response({"status": "ready"})
        raise ApiError(503, "broker_unavailable", "the Kafka broker is not reachable")


@dataclass(frozen=True)
class MetricsEndpoint:
    metrics: WebhookMetrics

    async def handle(self, _: web.Request) -> web.Response:
        response = web.Response(body=self.metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response
