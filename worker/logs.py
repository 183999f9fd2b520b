"""structlog set-up: JSON unless on a terminal, one canonical line per unit of work, secrets redacted.

Redaction is the last step before rendering, after exceptions are formatted, so it covers exception text as
well as fields, for our own lines and for stdlib loggers (aiohttp, aiokafka, asyncpg, azure) alike. It has
three nets, because no single one catches everything:
- a field whose name says secret (`client_secret`, `password`, `token`, `authorization`, …) is replaced whole;
- known secret values (the settings' secrets, given to `configure_logging`, and tenants' client secrets,
  registered with `redact_value` as they are loaded) are replaced wherever they appear in any string;
- shapes that are secrets whatever their value: bearer tokens, JWTs, a URL's password, `password=…`.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog
from aiohttp.http_exceptions import HttpProcessingError

_SECRET_KEYS = ("secret", "password", "passwd", "token", "authorization", "cookie", "api_key", "credential")
MASK = "***"
# Shorter values are not registered: replacing every "abc" in every line would wreck the logs, and a value
# that short protects nothing anyway (the webhook secret must have 32 characters, worker.config).
MIN_REDACTED_LENGTH = 8
_MAX_VALUES = 10_000  # tenants' client secrets are registered as used; the oldest are dropped past this

_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9\-._~+/]+=*"), r"\1\2" + MASK),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), MASK),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/?#@\s]*):[^@/\s]+@"), r"\1:" + MASK + "@"),
    (re.compile(r"""(?i)\b(client_secret|password|passwd|pwd|access_token|refresh_token|sasl_password)"""
                r"""(["']?\s*[=:]\s*["']?)([^"'&\s,;)}]+)"""), r"\1\2" + MASK),
)


class Redactor:
    """A structlog processor that removes secrets from every field of an event, recursively."""

    def __init__(self) -> None:
        self._values: dict[str, None] = {}
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str | None) -> None:
        if not value or len(value) < MIN_REDACTED_LENGTH or value in self._values:
            return
        self._values[value] = None
        if len(self._values) > _MAX_VALUES:
            del self._values[next(iter(self._values))]
        self._pattern = None

    def text(self, text: str) -> str:
        if self._values:
            if self._pattern is None:
                # Longest first, so a secret that contains another is masked whole.
                alternatives = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(map(re.escape, alternatives)))
            text = self._pattern.sub(MASK, text)
        for pattern, replacement in _SHAPES:
            text = pattern.sub(replacement, text)
        return text

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, dict):
            return {k: MASK if is_secret_key(k) else self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v) for v in value]
        return self.text(repr(value))  # exceptions, objects: what a renderer would print, cleaned

    def __call__(self, _: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            if key.startswith("_"):  # structlog's own (`_record`, `_from_structlog`): never rendered
                continue
            event_dict[key] = MASK if key != "event" and is_secret_key(key) else self.value(event_dict[key])
        return event_dict


def is_secret_key(key: Any) -> bool:
    return isinstance(key, str) and any(s in key.lower() for s in _SECRET_KEYS)


REDACTOR = Redactor()


def redact_value(value: str | None) -> None:
    """From now on, `value` never appears in a log line of this process (a tenant's client secret, …)."""
    REDACTOR.add(value)


def _client_error_without_traceback(record: logging.LogRecord) -> bool:
    """aiohttp logs a malformed request (the client's fault: bytes not allowed in a header, broken framing) at
    ERROR with a stack trace, so any client could fill the logs with them: make it one warning line."""
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, HttpProcessingError) and (exc.code or 400) < 500:
        record.msg = f"{record.getMessage()}: {exc.code} {' '.join(str(exc.message).split())}"
        record.args = ()
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


def configure_logging(
    fmt: str = "auto", level: str = "info", *, secrets: Iterable[str] = (), stream: TextIO | None = None,
) -> None:
    """Configure structlog and route stdlib logging (aiokafka, aiohttp, azure) through it.

    One function on purpose: the processor chain is order-sensitive and reads best as one list.

    `secrets` are values never to print (the settings' secrets); `stream` defaults to stderr.
    """
    out = stream or sys.stderr
    for value in secrets:
        redact_value(value)
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if as_json
        # A plain traceback: the default one shows local variables when `rich` is installed, secrets included.
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    final = [structlog.processors.format_exc_info, REDACTOR, renderer]
    structlog.configure(
        processors=[*shared, *final],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    # The Azure SDK logs request headers at INFO; keep it quiet so no token ever reaches a log.
    logging.getLogger("azure").setLevel(logging.WARNING)
    server = logging.getLogger("aiohttp.server")
    if _client_error_without_traceback not in server.filters:
        server.addFilter(_client_error_without_traceback)
