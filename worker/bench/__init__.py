"""Benchmarks behind `entra-sync bench NAME` (CONTRACTS.md): each returns one JSON-able dict.

Each benchmark lives in its own module and starts what it needs (embedded broker, simulator, child
processes); nothing here is imported by the product's processes.
"""

from __future__ import annotations

import argparse
from typing import Any


async def run_bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Dispatch `entra-sync bench NAME`; only `webhook` lives here so far (the others are wired by their owners)."""
    if args.name == "webhook":
        from worker.bench.webhook import bench_webhook

        rate = int(args.rate) if args.rate else 2000
        return [await bench_webhook(seconds=args.seconds, rate=rate)]
    if args.name == "freshness":
        from worker.bench.freshness import bench_freshness

        return [await bench_freshness(changes=args.changes, rate=args.rate or 20)]
    if args.name == "resync":
        from worker.bench.resync import bench_resync

        return [await bench_resync(users=args.users or 100_000) for _ in range(max(1, args.runs))]
    if args.name == "preview":
        from worker.bench.preview import bench_preview

        return [await bench_preview(users=args.users or 100_000, runs=max(1, args.runs))]
    if args.name == "console":
        from worker.bench.console import bench_console

        return [await bench_console(end_users=args.end_users)]
    if args.name == "fleet":
        from worker.bench.fleet import bench_fleet

        return [await bench_fleet(tenants=args.tenants, users=args.users or 200, workers=args.workers,
                                  rate=args.rate or 10.0) for _ in range(max(1, args.runs))]
    raise NotImplementedError(f"bench {args.name!r} is not wired yet")
