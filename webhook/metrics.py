"""Prometheus metrics of one webhook app, in its own CollectorRegistry (never the process-global one)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from webhook.parsing import DropReason, Kind

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Ack latency buckets: Graph counts a response over 2.9 s as slow; the target is p99 < 100 ms.
_ACK_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0, 3.0)


@dataclass(frozen=True)
class WebhookMetrics:
    registry: CollectorRegistry
    received: Counter
    published: Counter
    dropped: Counter
    handshakes: Counter
    publish_failures: Counter
    ack_seconds: Histogram

    @classmethod
    def create(cls) -> WebhookMetrics:
        registry = CollectorRegistry(auto_describe=True)
        kind = ("kind",)
        metrics = cls(
            registry=registry,
            received=Counter("webhook_notifications_received", "Notification items received.", kind,
                             registry=registry),
            published=Counter("webhook_notifications_published", "Items acknowledged by the broker.", kind,
                              registry=registry),
            dropped=Counter("webhook_notifications_dropped", "Invalid items dropped, by reason.",
                            ("kind", "reason"), registry=registry),
            handshakes=Counter("webhook_validation_handshakes", "Validation handshakes answered.", kind,
                               registry=registry),
            publish_failures=Counter("webhook_publish_failures", "Batches answered 503 (broker down/slow).",
                                     kind, registry=registry),
            ack_seconds=Histogram("webhook_publish_ack_seconds", "Send to broker ack, per batch.",
                                  kind, buckets=_ACK_BUCKETS, registry=registry),
        )
        metrics.prime()
        return metrics

    def prime(self) -> None:
        """Create every label combination up front, so dashboards see zeros rather than nothing."""
        for kind in Kind:
            for counter in (self.received, self.published, self.handshakes, self.publish_failures):
                counter.labels(kind.value)
            self.ack_seconds.labels(kind.value)
            for reason in DropReason:
                self.dropped.labels(kind.value, reason.value)

    def render(self) -> bytes:
        return generate_latest(self.registry)
