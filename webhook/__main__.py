"""`python -m webhook`: the webhook process alone, configured by environment variables.

Prints the bound URL as one JSON line on stdout when it listens (the benchmark reads it); stops on SIGINT or
SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from webhook.app import run_webhook
from worker.config import ConfigError, load_settings
from worker.logs import configure_logging


def _announce(url: str) -> None:
    sys.stdout.write(json.dumps({"webhook_url": url}) + "\n")
    sys.stdout.flush()


async def _main() -> None:
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level, secrets=settings.secret_values())
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await run_webhook(settings, ready=_announce)
    except asyncio.CancelledError:
        pass


def main() -> None:
    try:
        asyncio.run(_main())
    except ConfigError as exc:
        sys.stderr.write(f"webhook: configuration error: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
