"""The worker process: three consumer groups (changes, lifecycle, commands) over one sync engine."""

from __future__ import annotations

import asyncio

import structlog

from schemas import topics
from worker.config import Settings, check_webhook_secrets
from worker.engine.subscriptions import SubscriptionManager
from worker.engine.sync import SyncEngine
from worker.graph import GraphClients
from worker.processes.consumers import ConsumerLoop
from worker.processes.work import Backlog, TenantWorkPerformer
from worker.store.pool import create_pool

log = structlog.get_logger(__name__)

# One consumer group per topic, each with its own concurrency budget (`budgets`), so a wave of resyncs never
# delays change notifications of other tenants.
GROUPS = (
    ("changes", (topics.NOTIFICATIONS,)),
    ("lifecycle", (topics.LIFECYCLE,)),
    ("commands", (topics.COMMANDS,)),
)


async def run_worker(settings: Settings) -> None:
    check_webhook_secrets(settings.webhook)  # subscriptions it creates carry clientStates made with it
    # Topics are ensured by each consumer loop as it (re)starts, so a broker that is away at start-up or comes
    # back empty only delays the worker.
    db = settings.database
    pool = await create_pool(db.url, min_size=db.pool_min, max_size=db.pool_max)
    # Change notifications have connections of their own: a wave of resyncs holds every connection of the
    # main pool for seconds at a time (one per tenant plus the spares its listings and projection take), and a
    # notification's delta must not queue behind them for one.
    changes_pool = await create_pool(db.url, min_size=1, max_size=max(1, db.changes_pool_max))
    graph = GraphClients(settings.graph)
    try:
        limits = budgets(settings)
        pools = {"changes": changes_pool, "lifecycle": pool, "commands": pool}
        changes_waiting = Backlog()  # commands hold back while change notifications wait for their budget
        backlogs = {"changes": {"backlog": changes_waiting}, "commands": {"yields_to": changes_waiting}}
        loops = [
            ConsumerLoop(settings=settings, topic_names=names,
                         handler=TenantWorkPerformer(
                             engine=SyncEngine(pool=pools[name], graph=graph, settings=settings),
                             subscriptions=SubscriptionManager(pool=pools[name], graph=graph, settings=settings),
                             max_parallel=limits[name], **backlogs.get(name, {})),
                         group=f"{settings.kafka.consumer_group}-{name}")
            for name, names in GROUPS
        ]
        log.info("worker.started", groups=[name for name, _ in GROUPS], budgets=limits)
        await asyncio.gather(*(loop.run() for loop in loops))
    finally:
        await graph.close()
        await changes_pool.close()
        await pool.close()


def budgets(settings: Settings) -> dict[str, int]:
    """Tenants each consumer group works on at once; an unset budget is `SYNC_MAX_PARALLEL_TENANTS`."""
    sync = settings.sync
    # A change's delta waits on round trips far more than it computes: its budget defaults to its own pool's
    # size, since at 10 changes/s and a delta of 1-2 s on a busy host, 8 at once fell behind for good.
    chosen = {"changes": sync.notification_concurrency or settings.database.changes_pool_max,
              "lifecycle": sync.lifecycle_concurrency, "commands": sync.command_concurrency}
    return {name: max(1, value or sync.max_parallel_tenants) for name, value in chosen.items()}
