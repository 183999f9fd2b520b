"""Fail fast on bad configuration: which webhook secrets are refused, and the processes that refuse them."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest
from pydantic import SecretStr

from worker.config import ConfigError, WebhookSettings, check_webhook_secrets, weak_secret_reason

STRONG = secrets.token_urlsafe(32)


@pytest.mark.parametrize(
    "value,reason",
    [
        pytest.param("", "is not set", id="missing"),
        pytest.param("changeme", "is too short", id="short placeholder"),
        pytest.param("x" * 31, "is too short", id="31 characters"),
        pytest.param("a" * 40, "repeated characters", id="one repeated character"),
        pytest.param("ab" * 20, "repeated characters", id="two alternating characters"),
        pytest.param("0123456789abcdef" * 2, "repeated pattern", id="repeated block"),
        pytest.param("Xk29fjQ0pLm3" * 3 + "X", "repeated pattern", id="repeated block, cut short"),
        pytest.param("abcdefghijklmnopqrstuvwxyz0123456", "consecutive", id="alphabet"),
        pytest.param("CHANGE-ME-CHANGE-ME-CHANGE-ME-CHANGE-ME-1", "placeholder", id="change-me"),
        pytest.param("this-is-the-webhook-secret-for-production", "placeholder", id="the word secret"),
        pytest.param("Replace_Me_With_A_Real_Value_Before_Use_9", "placeholder", id="replace me"),
        pytest.param("<placeholder: put 32 random characters here>", "placeholder", id="placeholder"),
        pytest.param(STRONG, None, id="token_urlsafe(32)"),
        pytest.param(secrets.token_hex(16), None, id="token_hex(16), exactly 32"),
        pytest.param("correct horse battery staple 42 yonder", None, id="long passphrase"),
    ],
)
def test_weak_secret_reason(value: str, reason: str | None) -> None:
    found = weak_secret_reason(value)
    if reason is None:
        assert found is None
    else:
        assert found is not None and reason in found


@pytest.mark.parametrize(
    "current,previous,refused",
    [
        pytest.param(STRONG, None, None, id="strong, no previous"),
        pytest.param(STRONG, "", None, id="empty previous is unset"),
        pytest.param(STRONG, secrets.token_urlsafe(32), None, id="both strong"),
        pytest.param(STRONG, "old-secret", "WEBHOOK_PREVIOUS_SECRET", id="weak previous"),
        pytest.param("", STRONG, "WEBHOOK_SECRET", id="missing current"),
    ],
)
def test_check_webhook_secrets(current: str, previous: str | None, refused: str | None) -> None:
    settings = WebhookSettings(secret=SecretStr(current),
                               previous_secret=None if previous is None else SecretStr(previous))
    if refused is None:
        check_webhook_secrets(settings)
        return
    with pytest.raises(ConfigError) as caught:
        check_webhook_secrets(settings)
    assert str(caught.value).startswith(refused + " ")
    assert "token_urlsafe" in str(caught.value)  # says how to make a good one


def _run(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOK_")}
    # Unreachable services: a process that did start would hang or fail differently, never exit 2 at once.
    clean.update(DATABASE_URL="postgresql://nobody@127.0.0.1:9/none", KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9",
                 WEBHOOK_HOST="127.0.0.1", WEBHOOK_PORT="0", LOG_FORMAT="json", **env)
    return subprocess.run(command, env=clean, capture_output=True, text=True, timeout=60, check=False)


WEBHOOK = [sys.executable, "-m", "worker.cli", "webhook"]
WORKER = [sys.executable, "-m", "worker.cli", "worker"]


@pytest.mark.parametrize(
    "command,env,says",
    [
        pytest.param(WEBHOOK, {}, "WEBHOOK_SECRET is not set", id="webhook, missing"),
        pytest.param(WORKER, {}, "WEBHOOK_SECRET is not set", id="worker, missing"),
        pytest.param([sys.executable, "-m", "webhook"], {}, "WEBHOOK_SECRET is not set", id="python -m webhook"),
        pytest.param(WORKER, {"WEBHOOK_SECRET": "please-changeme-before-going-live-2024"},
                     "WEBHOOK_SECRET looks like a placeholder", id="worker, placeholder"),
        pytest.param(WEBHOOK, {"WEBHOOK_SECRET": "Zq4#mT8!vR2"}, "WEBHOOK_SECRET is too short", id="webhook, short"),
        pytest.param(WEBHOOK, {"WEBHOOK_SECRET": STRONG, "WEBHOOK_PREVIOUS_SECRET": "Zq4#mT8!vR2"},
                     "WEBHOOK_PREVIOUS_SECRET is too short", id="webhook, short previous"),
        pytest.param([sys.executable, "-m", "worker.cli", "admin-api"], {"ADMIN_TOKEN": ""}, "ADMIN_TOKEN must be set",
                     id="admin-api, no token"),
    ],
)
def test_processes_refuse_to_start(command: list[str], env: dict[str, str], says: str) -> None:
    done = _run(command, **env)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    for value in filter(None, env.values()):
        assert value not in done.stderr + done.stdout  # the message never shows the secret
