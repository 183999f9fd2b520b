"""No secret value reaches a log line, exception text included.

The redactor is part of the logging configuration of a process, so each test runs a process configured as
production configures it (`configure_logging` with the settings' secrets) and reads what it wrote. Configuring
structlog inside the test session would change the loggers other tests capture.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest
from aiohttp.test_utils import make_mocked_request

from worker.admin.inputs import json_body
from worker.logs import MASK, REDACTOR

SECRETS = {
    "WEBHOOK_SECRET": secrets.token_urlsafe(32),
    "WEBHOOK_PREVIOUS_SECRET": secrets.token_urlsafe(32),
    "ADMIN_TOKEN": secrets.token_urlsafe(24),
    "KAFKA_SASL_PASSWORD": "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKey=" + secrets.token_hex(16),
    "DB_PASSWORD": secrets.token_hex(12),
    "CLIENT_SECRET": "Abc8Q~" + secrets.token_urlsafe(26),
    "JWT": "eyJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(40) + "." + secrets.token_urlsafe(40),
    "UNKNOWN_PASSWORD": secrets.token_hex(10),  # known to nobody: only its shape (password=…) gives it away
}

# Drives failures the way our code and our libraries produce them: structlog lines with exceptions, stdlib
# loggers (aiokafka, asyncpg, aiohttp) with exc_info and %-args, fields holding headers and DSNs.
SCRIPT = r"""
import logging, os, structlog
from worker.config import load_settings
from worker.graph import TenantCredentials
from worker.logs import configure_logging

settings = load_settings()
configure_logging(os.environ["FMT"], "info", secrets=settings.secret_values())
log = structlog.get_logger("test")
creds = TenantCredentials("tenant", "client", os.environ["CLIENT_SECRET"])  # loading a tenant registers it
jwt, sasl = os.environ["JWT"], os.environ["KAFKA_SASL_PASSWORD"]
everything = " ".join([settings.database.url, os.environ["WEBHOOK_SECRET"], os.environ["WEBHOOK_PREVIOUS_SECRET"],
                       os.environ["ADMIN_TOKEN"], sasl, creds.client_secret, "Authorization: Bearer " + jwt,
                       "password=" + os.environ["UNKNOWN_PASSWORD"]])
try:
    raise RuntimeError("token request failed: " + everything)
except RuntimeError:
    log.exception("graph.failed", tenant_id="tenant")
log.warning("fields", client_secret=creds.client_secret, dsn=settings.database.url,
            headers={"Authorization": "Bearer " + jwt, "Accept": "application/json"}, detail=[everything],
            error=ValueError(everything))
try:
    raise ConnectionError(everything)
except ConnectionError as exc:
    logging.getLogger("aiokafka").error("Unable to connect with %s", everything, exc_info=exc)
logging.getLogger("asyncpg").warning("connection to %s lost", settings.database.url)
log.info("done")
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WEBHOOK_", "ADMIN_", "KAFKA_", "DATABASE_"))}
    env.update({k: v for k, v in SECRETS.items() if k != "DB_PASSWORD"})
    env["DATABASE_URL"] = f"postgresql://entra:{SECRETS['DB_PASSWORD']}@127.0.0.1:9/entra_sync"
    return env


def _assert_clean(output: str) -> None:
    for name, value in SECRETS.items():
        assert value not in output, f"{name} leaked:\n{output}"


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_no_secret_in_any_line_of_a_failing_process(fmt: str) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], env={**_env(), "FMT": fmt}, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stderr
    _assert_clean(out)
    # Not vacuous: every line was written, exceptions with their traceback, secrets replaced by the mask.
    for event in ("graph.failed", "fields", "Unable to connect with", "connection to", "done"):
        assert event in out
    assert "RuntimeError: token request failed" in out and "ConnectionError" in out and "Traceback" in out
    assert out.count(MASK) >= 20
    if fmt == "json":
        lines = [json.loads(line) for line in out.splitlines()]
        assert [line["event"] for line in lines][-1] == "done"
        assert "postgresql://entra:***@127.0.0.1:9/entra_sync" in out


def test_worker_that_cannot_start_logs_its_failure_without_secrets() -> None:
    """The real process: its database is unreachable, so it stops with the error logged through the redactor."""
    env = {**_env(), "LOG_FORMAT": "json", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
           "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN",
           "KAFKA_SASL_USERNAME": "$ConnectionString"}
    done = subprocess.run([sys.executable, "-m", "worker.cli", "worker"], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    _assert_clean(done.stderr + done.stdout)
    [failed] = [json.loads(line) for line in done.stderr.splitlines() if '"process.failed"' in line]
    assert failed["process"] == "worker" and "Traceback" in failed["exception"]


async def test_a_posted_client_secret_is_redacted_from_then_on() -> None:
    secret = "Xyz8Q~" + secrets.token_urlsafe(26)
    request = make_mocked_request("POST", "/api/v1/microsoft-tenants", headers={"Content-Type": "application/json"})
    request._read_bytes = json.dumps({"client_secret": secret, "display_name": "Contoso"}).encode()
    await json_body(request, allowed=("client_secret", "display_name"))
    assert REDACTOR.text(f"refused: {secret}!") == f"refused: {MASK}!"
    assert REDACTOR.text("Contoso") == "Contoso"
