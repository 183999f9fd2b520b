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
from worker.consumers import ConsumerLoop, Handler


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
    await raw.send_and_wait(topics.NOTIFICATIONS, b"{garbage", key=tid.encode())
    await raw.stop()

    handler = Handler(engine=env.engine, subscriptions=env.subs, max_parallel=2)
    loop = ConsumerLoop(settings=settings, topic_names=[topics.NOTIFICATIONS], group=group, handler=handler)
    task = asyncio.create_task(loop.run())
    try:
        async def updated() -> bool:
            return await pool.fetchval("SELECT job_title FROM end_users WHERE id = $1", target["id"]) == "Cartographer"
        await _until(updated)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # Offsets were committed on shutdown: a new member of the group starts after everything consumed.
    check = bus.make_consumer(settings.kafka, topics.NOTIFICATIONS, group_id=group)
    await check.start()
    try:
        tps = [TopicPartition(topics.NOTIFICATIONS, p)
               for p in check.partitions_for_topic(topics.NOTIFICATIONS) or ()]
        ends = await check.end_offsets(tps)
        used = [t for t in tps if ends[t] > 0]
        assert used
        # Every partition with records is committed up to its end (offset + 1 of the last record).
        assert [await check.committed(t) for t in used] == [ends[t] for t in used]
    finally:
        await check.stop()

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
