"""Settings, grouped by the outside system they configure, read from environment variables.

Each process builds its settings once in `main()` and passes them down; nothing reads the environment or a
global below that. Every field has a default that works for the embedded stack, except secrets.
"""

from __future__ import annotations

import itertools
import re
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_SECRET_LENGTH = 32
# Words a hand-typed placeholder carries. Six letters or more, so a random token contains one by chance about
# once in 10^8 (a 4-letter word would hit one generated secret in 25,000); hex tokens never do.
_PLACEHOLDER_WORDS = ("changeme", "replaceme", "placeholder", "secret", "password", "example", "default",
                      "insecure")
_GENERATE = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


class ConfigError(Exception):
    """The configuration cannot work: the process must not start (exit non-zero with this message)."""


class DatabaseSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DATABASE_", extra="ignore")

    url: str = Field("postgresql://postgres@127.0.0.1:5432/entra_sync", description="PostgreSQL DSN.")
    pool_min: int = Field(1, description="Minimum connections in the pool.")
    pool_max: int = Field(10, description="Maximum connections in the pool.")
    changes_pool_max: int = Field(
        16, description="Connections the worker keeps for change notifications alone (a pool of their own)."
    )


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    security_protocol: str = Field("PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    sasl_mechanism: str | None = Field(None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    sasl_username: str | None = Field(None, description="SASL user ($ConnectionString for Event Hubs).")
    sasl_password: SecretStr | None = Field(None, description="SASL password or Event Hubs connection string.")
    ssl_ca_file: str | None = Field(None, description="CA bundle for SSL/SASL_SSL.")
    enable_idempotence: bool = Field(True, description="Idempotent producer; some brokers (Tansu) reject it.")
    client_id: str = Field("entra-sync", description="Client id sent to the broker.")
    consumer_group: str = Field("entra-sync-worker", description="Consumer group of the worker replicas.")
    session_timeout_ms: int = Field(
        6000, description="A worker replica silent this long (killed) loses its partitions to the others."
    )
    heartbeat_interval_ms: int = Field(2000, description="Consumer heartbeat period (below a third of the above).")
    topic_partitions: int = Field(12, description="Partitions for topics this product creates.")
    topic_replication: int = Field(1, description="Replication factor for topics this product creates.")
    create_topics: bool = Field(True, description="Create missing topics at start-up.")

    @model_validator(mode="after")
    def _heartbeat_inside_session(self) -> KafkaSettings:
        if not 0 < self.heartbeat_interval_ms < self.session_timeout_ms:
            raise ValueError("KAFKA_HEARTBEAT_INTERVAL_MS must be positive and below KAFKA_SESSION_TIMEOUT_MS")
        return self


class GraphSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRAPH_", extra="ignore")

    url: str = Field("https://graph.microsoft.com/v1.0", description="Graph base URL, with the version.")
    authority_url: str = Field("https://login.microsoftonline.com", description="Entra authority host.")
    ca_file: str | None = Field(None, description="CA bundle for Graph and the authority (simulator).")
    timeout_s: float = Field(60.0, description="Per-request timeout.")
    max_retries: int = Field(6, description="Retries of a throttled or failed Graph request.")
    max_concurrency_per_tenant: int = Field(4, description="Concurrent Graph requests per tenant.")
    max_retry_after_s: float = Field(300.0, description="Cap on a Retry-After Graph asks for.")
    max_inline_wait_s: float = Field(
        5.0, description="Longest throttle wait inside a unit of work; a longer one parks the tenant instead."
    )


class WebhookSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WEBHOOK_", extra="ignore")

    host: str = Field("0.0.0.0", description="Listen address.")
    port: int = Field(8080, description="Listen port.")
    public_url: str = Field(
        "http://127.0.0.1:8080", description="URL Graph delivers to (HTTPS in production)."
    )
    secret: SecretStr = Field(SecretStr(""), description="Current clientState HMAC secret.")
    previous_secret: SecretStr | None = Field(None, description="Previous secret, accepted during rotation.")
    publish_timeout_s: float = Field(2.0, description="Broker ack deadline before answering 503.")
    max_body_bytes: int = Field(1_048_576, description="Largest accepted notification body.")
    body_timeout_s: float = Field(10.0, description="A request body not received within this is answered 408.")
    max_bodies_in_flight: int = Field(
        64, description="Request bodies still being received at once; beyond it, 503 (complete ones pass)."
    )


class AdminSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ADMIN_", extra="ignore")

    host: str = Field("127.0.0.1", description="Listen address.")
    port: int = Field(8081, description="Listen port.")
    token: SecretStr = Field(SecretStr(""), description="Bearer token operators use.")
    body_timeout_s: float = Field(10.0, description="A request body not received within this is answered 408.")
    max_bodies_in_flight: int = Field(
        32, description="Request bodies still being received at once; beyond it, 503 (complete ones pass)."
    )


class SyncSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SYNC_", extra="ignore")

    resync_interval_s: float = Field(3600.0, description="Full resync and subscription renewal period.")
    deactivation_guard_ratio: float = Field(
        0.2, description="Hold a run's deactivations above this share of an Organization's End Users."
    )
    subscription_lifetime_min: int = Field(41_000, description="Requested subscription lifetime (max 41,760).")
    renew_before_min: int = Field(2 * 24 * 60, description="Renew subscriptions this long before expiry.")
    max_parallel_tenants: int = Field(8, description="Tenants a worker syncs at once, per budget below left unset.")
    notification_concurrency: int | None = Field(
        None, description="Budget: tenants' change notifications at once (unset: DATABASE_CHANGES_POOL_MAX)."
    )
    lifecycle_concurrency: int | None = Field(None, description="Budget: tenants' lifecycle events at once.")
    command_concurrency: int | None = Field(None, description="Budget: tenants' commands (resyncs, org-syncs) at once.")
    max_attempts: int = Field(
        5, description="Attempts at a tenant's work that fails non-transiently before it is dead-lettered."
    )
    commit_interval_s: float = Field(1.0, description="Throttle for Kafka offset commits.")
    batch_max_messages: int = Field(500, description="Largest batch a consumer takes per poll.")


class Settings(BaseSettings):
    """All settings of all processes; each process reads the groups it needs."""

    model_config = SettingsConfigDict(extra="ignore")

    log_format: str = Field("auto", description="json, console, or auto (console on a terminal).")
    log_level: str = Field("info", description="debug, info, warning, error.")
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    graph: GraphSettings = Field(default_factory=GraphSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)

    def webhook_secrets(self) -> list[str]:
        secrets = [self.webhook.secret.get_secret_value()]
        if self.webhook.previous_secret:
            secrets.append(self.webhook.previous_secret.get_secret_value())
        return [s for s in secrets if s]

    def secret_values(self) -> list[str]:
        """Every secret value these settings hold, for the log redactor (worker.logs)."""
        values = [*self.webhook_secrets(), self.admin.token.get_secret_value()]
        if self.kafka.sasl_password:
            values.append(self.kafka.sasl_password.get_secret_value())
        values.append(urlsplit(self.database.url).password or "")
        return [v for v in values if v]


def weak_secret_reason(value: str) -> str | None:
    """Why `value` is unfit as an HMAC secret (pure); None when it will do."""
    if not value:
        return "is not set"
    if len(value) < MIN_SECRET_LENGTH:
        return f"is too short ({len(value)} characters; at least {MIN_SECRET_LENGTH})"
    if len(set(value)) < 8:
        return "has too few distinct characters (repeated characters)"
    if _period(value) <= len(value) // 2:
        return "is a repeated pattern"
    steps = sum(abs(ord(b) - ord(a)) == 1 for a, b in itertools.pairwise(value))
    if steps >= 0.75 * (len(value) - 1):
        return "is a run of consecutive characters"
    letters = re.sub(r"[^a-z0-9]", "", value.lower())
    word = next((w for w in _PLACEHOLDER_WORDS if w in letters), None)
    if word is not None:
        return f"looks like a placeholder (contains {word!r})"
    return None


def _period(value: str) -> int:
    """The smallest p with value[i] == value[i + p] for every i (KMP's failure function), linear time."""
    fail = [0] * (len(value) + 1)
    k = 0
    for i in range(1, len(value)):
        while k and value[i] != value[k]:
            k = fail[k]
        if value[i] == value[k]:
            k += 1
        fail[i + 1] = k
    return len(value) - fail[len(value)]


def check_webhook_secrets(webhook: WebhookSettings) -> None:
    """Raise ConfigError unless WEBHOOK_SECRET (and WEBHOOK_PREVIOUS_SECRET, when set) is strong.

    A weak or missing secret makes every clientState forgeable or every notification dropped; the webhook and
    the worker refuse to start rather than run like that. The message never contains the value.
    """
    checks = [("WEBHOOK_SECRET", webhook.secret.get_secret_value())]
    if webhook.previous_secret is not None and webhook.previous_secret.get_secret_value():
        checks.append(("WEBHOOK_PREVIOUS_SECRET", webhook.previous_secret.get_secret_value()))
    for name, value in checks:
        reason = weak_secret_reason(value)
        if reason is not None:
            raise ConfigError(f"{name} {reason}; set a random value of at least {MIN_SECRET_LENGTH} characters, "
                              f"e.g. from: {_GENERATE}")


def load_settings() -> Settings:
    return Settings()
