"""`entra-sync`: the product's one command. Processes, the embedded stack, benchmarks and operator commands.

Processes read their configuration from environment variables (README's table); this module builds the
settings once and passes them down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from worker.config import ConfigError, Settings, load_settings
from worker.logs import configure_logging

log = structlog.get_logger(__name__)

# Our processes allocate millions of short-lived objects that reference counting frees (Graph pages, rows,
# plans) and hardly build cycles. CPython's default gen-0 threshold of 700 tracked allocations ran the cycle
# collector thousands of times per resync, each pass walking the young objects: on this project's 2-core
# machine that was 45 % of reconcile's time and about 2.5 of 10 worker CPU-seconds of a 100,000-user first
# sync (README, Benchmarks). Cycles are still collected, after 20,000 allocations instead of 700 (peak RSS of
# `bench resync`: 152 MB at 30,000 users, 185 MB at 100,000, 188 MB at 200,000 — bounded, not growing).
GC_THRESHOLDS = (20_000, 10, 10)


def _serve(name: str, make: Callable[[Settings], Coroutine[Any, Any, None]]) -> Callable[[argparse.Namespace], int]:
    """Run a long-lived process until SIGINT/SIGTERM, then let it clean up.

    Bad configuration stops it at once with one plain message and exit status 2; any other failure is logged
    through structlog (so its text is redacted like every log line) with exit status 1.
    """

    def run(_: argparse.Namespace) -> int:
        try:
            settings = load_settings()
        except ValidationError as exc:
            return config_error(name, str(exc))
        configure_logging(settings.log_format, settings.log_level, secrets=settings.secret_values())
        try:
            return run_until_signal(make(settings))
        except ConfigError as exc:
            return config_error(name, str(exc))
        except Exception:
            log.exception("process.failed", process=name)
            return 1

    return run


def config_error(process: str, message: str) -> int:
    sys.stderr.write(f"entra-sync {process}: configuration error: {message}\n")
    sys.stderr.flush()
    return 2


def run_until_signal(coro: Awaitable[Any]) -> int:
    async def main() -> None:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    return 0


async def _webhook(settings: Settings) -> None:
    from webhook.app import run_webhook

    await run_webhook(settings)


async def _worker(settings: Settings) -> None:
    from worker.processes.worker import run_worker

    await run_worker(settings)


async def _scheduler(settings: Settings) -> None:
    from worker.processes.scheduler import run_scheduler

    await run_scheduler(settings)


async def _admin_api(settings: Settings) -> None:
    from worker.admin.api import run_admin_api

    await run_admin_api(settings)


def _migrate(_: argparse.Namespace) -> int:
    from worker.store.migrations import migrate

    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level, secrets=settings.secret_values())
    applied = asyncio.run(migrate(settings.database.url))
    print(json.dumps({"applied": applied}))
    return 0


def _up(args: argparse.Namespace) -> int:
    from worker.dev.stack import run_stack

    configure_logging("auto", "info")
    return run_until_signal(run_stack(Path(args.state_dir), tenants=args.tenants, users=args.users,
                                      workers=args.workers))


def _simulator(args: argparse.Namespace) -> int:
    from simulator.server import run_simulator

    configure_logging("auto", "info")
    return run_until_signal(run_simulator(
        state_dir=Path(args.state_dir), port=args.port, tenants=args.tenants, users=args.users, seed=args.seed,
    ))


def _bench(args: argparse.Namespace) -> int:
    from worker.bench import run_bench

    configure_logging("json", "warning")
    for result in asyncio.run(run_bench(args)):
        print(json.dumps(result), flush=True)
    return 0


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Every `entra-sync` command and its options (CONTRACTS.md). Long because it is one flat table of
    commands, read top to bottom; the admin commands add theirs from `worker.admin.cli`."""
    parser = argparse.ArgumentParser(prog="entra-sync", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="the whole product on embedded defaults")
    up.add_argument("--state-dir", default=".state")
    up.add_argument("--tenants", type=_positive, default=1,
                    help="simulated tenants, each mapped to its own PSA tenant with an enabled Organization")
    up.add_argument("--users", type=_non_negative, default=200, help="users per simulated tenant")
    up.add_argument("--workers", type=_positive, default=1, help="worker replicas in one consumer group")
    up.set_defaults(func=_up)

    sim = sub.add_parser("simulator", help="the Graph simulator alone")
    sim.add_argument("--state-dir", default=".state/simulator")
    sim.add_argument("--port", type=int, default=0)
    sim.add_argument("--tenants", type=int, default=1)
    sim.add_argument("--users", type=int, default=200)
    sim.add_argument("--seed", type=int, default=1)
    sim.set_defaults(func=_simulator)

    for name, make, text in (
        ("webhook", _webhook, "receive Graph notifications and publish them to Kafka"),
        ("worker", _worker, "consume notifications, lifecycle events and commands; sync"),
        ("scheduler", _scheduler, "enqueue the hourly resync and subscription renewal"),
        ("admin-api", _admin_api, "the operators' HTTP API"),
    ):
        sub.add_parser(name, help=text).set_defaults(func=_serve(name, make))
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=_migrate)

    bench = sub.add_parser("bench", help="benchmarks; one JSON line each")
    bench.add_argument("name", choices=["resync", "webhook", "freshness", "preview", "console", "fleet"])
    bench.add_argument("--users", type=_positive, default=None,
                       help="users (resync, preview: 100,000; fleet: per tenant, 200)")
    bench.add_argument("--tenants", type=_positive, default=500, help="fleet: simulated tenants (at least 3)")
    bench.add_argument("--workers", type=_positive, default=1, help="fleet: worker replicas")
    bench.add_argument("--seconds", type=float, default=20.0)
    bench.add_argument("--rate", type=float, default=None)
    bench.add_argument("--changes", type=int, default=300)
    bench.add_argument("--runs", type=int, default=1)
    bench.add_argument("--end-users", type=int, default=100_000)
    bench.set_defaults(func=_bench)

    from worker.admin.cli import register

    register(sub)  # every admin API operation: tenants, psa-tenants, orgs, sync, end-users, assets, runs, review
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    gc.set_threshold(*GC_THRESHOLDS)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
