"""The process entry point and the canonical log line."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
from structlog.testing import capture_logs

from webhook.app import run_webhook
from worker.config import KafkaSettings

from .conftest import Client, change_item, make_settings, new_id


async def test_run_webhook_reports_its_bound_url_and_stops_on_cancel(kafka_settings: KafkaSettings) -> None:
    bound: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_webhook(make_settings(kafka_settings), ready=bound.set_result))
    url = await asyncio.wait_for(bound, 20)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/healthz") as resp:
            assert resp.status == 200
        async with session.post(f"{url}/notifications?validationToken=x%3Ay") as resp:
            assert await resp.text() == "x:y"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.done()


async def test_one_canonical_line_per_batch_without_secrets(
    make_client: Callable[..., Any], kafka_settings: KafkaSettings
) -> None:
    client: Client = await make_client(make_settings(kafka_settings))
    tenant = new_id()
    items = [change_item(tenant, new_id()), change_item(tenant, new_id(), clientState="forged")]
    with capture_logs() as logs:
        resp = await client.post("/notifications", json={"value": items})
    assert resp.status == 202
    [line] = [e for e in logs if e["event"] == "webhook.batch"]
    assert line["received"] == 2 and line["published"] == 1 and line["status"] == 202
    assert line["dropped"] == {"bad_client_state": 1}
    assert line["duration_ms"] >= 0
    assert "forged" not in repr(logs) and items[0]["clientState"] not in repr(logs)
