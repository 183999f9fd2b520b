"""The webhook's aiohttp application factory and its serving entry point (`entra-sync webhook`, `up`).

Everything an app needs hangs off typed `web.AppKey`s; the Kafka producer lives in a `cleanup_ctx`. No
module-level state, so tests can run several apps in one process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web

from webhook.handlers import MetricsEndpoint, Readiness, Receiver, error_middleware, healthz
from webhook.metrics import WebhookMetrics
from webhook.parsing import Kind
from webhook.sink import KafkaSink, NotificationSink
from webhook.verify import ClientStateVerifier
from worker.config import Settings
from worker.serve import serve

log = structlog.get_logger(__name__)

SETTINGS = web.AppKey("settings", Settings)
SINK = web.AppKey("sink", NotificationSink)
METRICS = web.AppKey("metrics", WebhookMetrics)


def create_app(settings: Settings, *, sink: NotificationSink | None = None) -> web.Application:
    """The webhook app. Without `sink`, it owns a Kafka producer started and stopped with the app."""
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.webhook.max_body_bytes)
    metrics = WebhookMetrics.create()
    verify = ClientStateVerifier(settings.webhook_secrets())
    app[SETTINGS] = settings
    app[METRICS] = metrics
    if sink is None:
        kafka_sink = KafkaSink(settings.kafka)
        app.cleanup_ctx.append(_kafka_sink_ctx(kafka_sink))
        sink = kafka_sink
    app[SINK] = sink
    for path, kind in (("/notifications", Kind.CHANGE), ("/lifecycle", Kind.LIFECYCLE)):
        app.router.add_post(path, Receiver(kind, settings.webhook, verify, metrics, sink).handle)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", Readiness(sink).handle)
    app.router.add_get("/metrics", MetricsEndpoint(metrics).handle)
    return app


def _kafka_sink_ctx(sink: KafkaSink) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(_: web.Application) -> AsyncIterator[None]:
        await sink.start()
        yield
        await sink.stop()

    return ctx


async def run_webhook(settings: Settings, *, ready: Callable[[str], None] | None = None) -> None:
    """Serve the webhook on settings.webhook.host/port (0 = any free port) until cancelled."""
    if not settings.webhook_secrets():
        log.warning("webhook.no_secret", detail="WEBHOOK_SECRET is empty: every notification will be dropped")
    await serve(create_app(settings), name="webhook", host=settings.webhook.host, port=settings.webhook.port,
                ready=ready, shutdown_timeout=settings.webhook.publish_timeout_s + 1, backlog=1024)
