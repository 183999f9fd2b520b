"""The worker's consumer loop on the real broker: notifications become End User changes, offsets are
committed only after the work is durable, and poison goes to the dead-letter topic."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import messages, topics
from tests.integration.conftest import Env
from worker import bus
from worker.config import KafkaSettings, Settings
from worker.processes.consumers import ConsumerLoop
from worker.processes.work import TenantWorkPerformer


async def _until(check, timeout_s: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not (result := await check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)
    return result


@pytest.mark.parametrize("tenant_env", [3], indirect=True)
async def test_notification_through_kafka_updates_end_user_and_commits(
    tenant_env: Env, pool: asyncpg.Pool, kafka_settings: KafkaSettings
) -> None:
    env = tenant_env
    tid = env.tenant["tenant_id"]
    group = f"it-{uuid.uuid4().hex[:6]}"
    settings = Settings(kafka=kafka_settings.model_copy(update={"consumer_group": group}),
                        graph=env.settings.graph)
    await bus.ensure_topics(settings.kafka)
    await env.engine.org_sync(tid, env.org_id, None)
    target = await pool.fetchrow("SELECT * FROM end_users WHERE organization_id = $1::uuid LIMIT 1", env.org_id)
    await env.admin.call("PATCH", f"/users/{target['entra_object_id']}", {"jobTitle": "Cartographer"})

    publisher = bus.KafkaPublisher(settings.kafka)
    await publisher.start()
    note = messages.ChangeNotification(tenant_id=tid, subscription_id="s", change_type="updated",
                                       resource=f"Users/{target['entra_object_id']}", received_at="now")
    for _ in range(5):  # duplicates are normal; they coalesce into one delta call
        await publisher.publish(topics.NOTIFICATIONS, tid, note)
    await publisher.stop()
    raw = bus.make_producer(settings.kafka)
    await raw.start()
    last = await raw.send_and_wait(topics.NOTIFICATIONS, b"{garbage", key=tid.encode())  # same partition
    await raw.stop()
    ours = TopicPartition(topics.NOTIFICATIONS, last.partition)

    handler = TenantWorkPerformer(engine=env.engine, subscriptions=env.subs, max_parallel=2)
    loop = ConsumerLoop(settings=settings, topic_names=[topics.NOTIFICATIONS], group=group, handler=handler)
    task = asyncio.create_task(loop.run())
    check = bus.make_consumer(settings.kafka, group_id=group)
    await check.start()
    try:
        async def updated() -> bool:
            return await pool.fetchval("SELECT job_title FROM end_users WHERE id = $1", target["id"]) == "Cartographer"
        await _until(updated)

        # The offset of our partition is committed past our last record (offset + 1), poison included.
        # (Other tests' records share the topic; their partitions are not this test's business.)
        async def committed() -> bool:
            return (await check.committed(ours) or 0) >= last.offset + 1
        await _until(committed, timeout_s=20)
    finally:
        await check.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    dead = AIOKafkaConsumer(topics.DEAD_LETTER, **bus.connection_options(settings.kafka),
                            auto_offset_reset="earliest", group_id=f"dl-{group}")
    await dead.start()
    try:
        found = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not found:
            batch = await dead.getmany(timeout_ms=500)
            found = [messages.decode(r.value, messages.DeadLetter) for rs in batch.values() for r in rs
                     if b"{garbage" in (r.value or b"")]
        assert found and "undecodable" in found[0].error
    finally:
        await dead.stop()
