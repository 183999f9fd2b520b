"""The webhook's aiohttp application factory and its serving entry point (`entra-sync webhook`, `up`).

Everything an app needs hangs off typed `web.AppKey`s; the Kafka producer lives in a `cleanup_ctx`. No
module-level state, so tests can run several apps in one process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from webhook.handlers import MetricsEndpoint, Readiness, Receiver, error_middleware, healthz
from webhook.metrics import WebhookMetrics
from webhook.parsing import Kind
from webhook.sink import KafkaSink, NotificationSink
from webhook.verify import ClientStateVerifier
from worker.config import Settings, check_webhook_secrets
from worker.processes.http import BodyGuard, serve

SETTINGS = web.AppKey("settings", Settings)
SINK = web.AppKey("sink", NotificationSink)
METRICS = web.AppKey("metrics", WebhookMetrics)


def create_app(settings: Settings, *, sink: NotificationSink | None = None) -> web.Application:
    """The webhook app. Without `sink`, it owns a Kafka producer started and stopped with the app."""
    hook = settings.webhook
    guard = BodyGuard("webhook", timeout_s=hook.body_timeout_s, max_in_flight=hook.max_bodies_in_flight,
                      max_body_bytes=hook.max_body_bytes)
    app = web.Application(middlewares=[guard, error_middleware], client_max_size=hook.max_body_bytes)
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
    """Serve the webhook on settings.webhook.host/port (0 = any free port) until cancelled.

    Raises ConfigError before listening when the webhook secret is missing, a placeholder or too short.
    """
    check_webhook_secrets(settings.webhook)
    await serve(create_app(settings), name="webhook", host=settings.webhook.host, port=settings.webhook.port,
                ready=ready, shutdown_timeout=settings.webhook.publish_timeout_s + 1, backlog=1024)
