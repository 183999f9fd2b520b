"""Faults on the real-time path, in-process (the process boundary does not matter for these): PostgreSQL
connections dropped mid-transaction, Graph throttling half the delta calls, a notification lost by Graph,
duplicates and reordering. Each shows that nothing is lost: every changed user's End User ends up with the
change. Broker outage and a killed worker, where processes matter, are in test_stack_faults.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import UTC, datetime

from aiokafka import TopicPartition
from structlog.testing import capture_logs

from schemas import messages, topics
from simulator.model import ThrottleRule
from tests.faults.conftest import Pipeline, change_note
from worker import bus
from worker.config import DatabaseSettings, KafkaSettings, SyncSettings
from worker.processes.scheduler import run_scheduler


async def test_postgres_connections_dropped_mid_transaction(pipeline: Pipeline) -> None:
    users = [r["entra_object_id"] for r in await pipeline.end_users()]
    await pipeline.converge(await pipeline.patch_titles(users[-1:], "Warm-up"), timeout_s=30)  # groups joined
    await pipeline.faults(latency_ms=60)  # each Graph call takes a while: the worker is mid-work longer
    kills: list[str] = []
    stop = asyncio.Event()

    async def terminate_worker_connections_mid_work() -> None:
        # A connection of the worker that is in a query, in a transaction, or holding a tenant's advisory
        # lock (a unit of work is under way) is terminated; a few times, then the worker may finish.
        while not stop.is_set() and len(kills) < 3:
            kills.extend(await pipeline.pool.fetchval(
                """WITH busy AS MATERIALIZED (
                     SELECT a.pid, a.state FROM pg_stat_activity a
                     WHERE a.application_name = $1 AND (a.state IN ('active', 'idle in transaction')
                       OR EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory')))
                   SELECT coalesce(array_agg(state), '{}') FROM busy WHERE pg_terminate_backend(pid)""",
                pipeline.app_name))
            await asyncio.sleep(0.02)

    with capture_logs() as logs:
        killer = asyncio.create_task(terminate_worker_connections_mid_work())
        try:
            wanted = await pipeline.patch_titles(users[:10], "Dropped")
            await asyncio.sleep(2)  # notifications keep arriving while connections are killed under the worker
            wanted |= await pipeline.patch_titles(users[10:20], "Dropped again")
            await asyncio.sleep(2)
        finally:
            stop.set()
            await killer
        assert kills, "the worker was never caught mid-work: the fault was never injected"
        recovery = await pipeline.converge(wanted, timeout_s=45)
    retries = [e for e in logs if e["event"] == "tenant.parked" and e["outcome"] == "transient"]
    assert retries, "no tenant's work was retried: the kills missed the work"
    print(f"pg-drop: {len(kills)} worker connections terminated mid-work ({', '.join(kills)}); "
          f"{len(retries)} retries ({retries[0]['error'][:60]}); converged {recovery:.1f}s after")
    assert not pipeline.worker.done()  # type: ignore[union-attr]


async def test_graph_throttles_half_the_delta_calls(pipeline: Pipeline) -> None:
    faults = pipeline.sim.state.tenants[pipeline.tenant_id].faults
    armed = 0
    stop = asyncio.Event()

    async def last_delta() -> object:
        return await pipeline.pool.fetchval(
            "SELECT last_delta_at FROM tenant_sync_status WHERE tenant_id = $1", pipeline.tenant_id)

    async def throttle_every_other_delta_call() -> None:
        # A 429 takes the next delta call; its retry passes and the walk finishes; only then is the next
        # 429 armed. So each walk's first call is throttled and every other delta call answers 429.
        nonlocal armed
        while not stop.is_set():
            retry_after = ("0.35", "1.25", "0.8")[armed % 3]  # fractional, as Graph sends them
            faults.throttle.append(ThrottleRule(429, retry_after, 1, "/v1.0/users/delta", "GET"))
            armed += 1
            while faults.throttle and not stop.is_set():
                await asyncio.sleep(0.01)
            walked = await last_delta()
            while await last_delta() == walked and not stop.is_set():
                await asyncio.sleep(0.01)

    throttler = asyncio.create_task(throttle_every_other_delta_call())
    try:
        users = [r["entra_object_id"] for r in await pipeline.end_users()]
        wanted: dict[str, str] = {}
        recoveries = []
        for round_ in range(4):  # one delta walk per round; each walk's first call is throttled
            changes = await pipeline.patch_titles(users[round_ * 5:(round_ + 1) * 5], f"Throttled {round_}")
            recoveries.append(await pipeline.converge(changes, timeout_s=30))
            wanted |= changes
    finally:
        stop.set()
        await throttler
    assert await pipeline.missing(wanted) == {}
    print(f"429: {armed} throttles armed; each round converged in {', '.join(f'{r:.1f}' for r in recoveries)}s")
    assert armed >= 4


async def test_lost_notification_is_repaired_by_the_resync(pipeline: Pipeline) -> None:
    users = [r["entra_object_id"] for r in await pipeline.end_users()]
    before = (await pipeline.delivery())["dropped_fault"]
    await pipeline.faults(drop_notifications=1.0)
    wanted = await pipeline.patch_titles(users[:3], "Unnoticed")
    await asyncio.sleep(2)
    assert (await pipeline.delivery())["dropped_fault"] > before
    assert await pipeline.missing(wanted) == wanted  # nothing told the worker

    started = time.monotonic()
    await pipeline.publish(topics.COMMANDS, messages.Command(  # what the hourly scheduler enqueues
        command="resync", tenant_id=pipeline.tenant_id, reason="test", requested_at=datetime.now(UTC).isoformat()))
    await pipeline.converge(wanted, timeout_s=30)
    print(f"dropped notification: resync repaired it in {time.monotonic() - started:.1f}s")


async def test_duplicates_and_reordering_end_in_the_right_state(pipeline: Pipeline) -> None:
    await pipeline.faults(duplicate_notifications=1.0, reorder_notifications=True)
    before = await pipeline.end_users()
    users = [r["entra_object_id"] for r in before]
    delivered = (await pipeline.delivery())["duplicated"]
    await pipeline.patch_titles(users[:12], "First")
    wanted = await pipeline.patch_titles(users[:12], "Final")  # the same users again: only the last counts
    await pipeline.converge(wanted, timeout_s=30)
    await asyncio.sleep(1)  # let the duplicates of the last deliveries drain
    assert (await pipeline.delivery())["duplicated"] > delivered
    assert await pipeline.missing(wanted) == {}

    after = await pipeline.end_users()
    assert len(after) == len(before)
    assert len({r["entra_object_id"] for r in after}) == len(after)  # no duplicate End Users
    dupes = await pipeline.pool.fetchval(
        """SELECT count(*) FROM (SELECT lower(email) FROM end_users WHERE organization_id = $1::uuid
           AND email IS NOT NULL GROUP BY 1 HAVING count(*) > 1) d""", pipeline.org_id)
    assert dupes == 0

    # A replay of the same notifications writes nothing: no End User row, no journal entry.
    journal = await pipeline.pool.fetchval("SELECT count(*) FROM end_user_changes")
    stamps = {r["id"]: r["updated_at"] for r in after}
    last_delta = await pipeline.pool.fetchval(
        "SELECT last_delta_at FROM tenant_sync_status WHERE tenant_id = $1", pipeline.tenant_id)
    for oid in users[:12]:
        await pipeline.publish(topics.NOTIFICATIONS, change_note(pipeline.tenant_id, oid))
    deadline = time.monotonic() + 20
    while await pipeline.pool.fetchval(
            "SELECT last_delta_at FROM tenant_sync_status WHERE tenant_id = $1", pipeline.tenant_id) == last_delta:
        assert time.monotonic() < deadline, "the replay was never processed"
        await asyncio.sleep(0.1)
    assert await pipeline.pool.fetchval("SELECT count(*) FROM end_user_changes") == journal
    assert {r["id"]: r["updated_at"] for r in await pipeline.end_users()} == stamps


async def test_scheduler_survives_losing_its_postgres_connection(
    pipeline: Pipeline, kafka_settings: KafkaSettings
) -> None:
    app_name = f"fault-scheduler-{uuid.uuid4().hex[:6]}"
    settings = pipeline.settings.model_copy(update={
        "database": DatabaseSettings(url=pipeline.settings.database.url.replace(pipeline.app_name, app_name)),
        "sync": SyncSettings(resync_interval_s=0.5),
    })
    reader = bus.make_consumer(kafka_settings, group_id=None)
    await reader.start()
    tps = [TopicPartition(topics.COMMANDS, p) for p in reader.partitions_for_topic(topics.COMMANDS) or ()]
    reader.assign(tps)
    await reader.seek_to_end(*tps)

    async def resyncs_of_our_tenant(timeout_s: float) -> int:
        deadline, seen = time.monotonic() + timeout_s, 0
        while not seen and time.monotonic() < deadline:
            batch = await reader.getmany(timeout_ms=200)
            seen = sum(1 for rs in batch.values() for r in rs if r.key == pipeline.tenant_id.encode()
                       and messages.decode(r.value or b"", messages.Command).command == "resync")
        return seen

    scheduler = asyncio.create_task(run_scheduler(settings))
    try:
        assert await resyncs_of_our_tenant(15), "the scheduler never ticked"
        killed = await pipeline.pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", app_name)
        assert killed == 1
        await reader.seek_to_end(*tps)
        started = time.monotonic()
        assert await resyncs_of_our_tenant(20), "the scheduler stopped ticking after losing its connection"
        print(f"scheduler: leader again and ticking {time.monotonic() - started:.1f}s after its connection died")
        assert not scheduler.done()
    finally:
        scheduler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scheduler
        await reader.stop()
