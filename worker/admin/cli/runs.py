"""CLI commands for sync runs and review items: `runs list|show|confirm|dismiss|undo`, `review list|resolve`."""

from __future__ import annotations

import argparse
from typing import Any

from .client import Call, CommandGroup, Endpoint


def _resolve(args: argparse.Namespace, api: Endpoint) -> Call:
    body: dict[str, Any] = {"create": True} if args.create else {"end_user_id": args.end_user}
    return Call("POST", f"/review-items/{args.id}/resolve", body)


def add_runs(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tree = CommandGroup(subparsers, common, "runs", "sync runs")
    listing = tree.leaf("list", "list sync runs, newest first", lambda a, _: Call("GET", "/sync-runs", query={
        "organization_id": a.org, "tenant_id": a.tenant, "limit": a.limit}))
    listing.add_argument("--org", help="Organization id")
    listing.add_argument("--tenant", help="Microsoft tenant id")
    listing.add_argument("--limit", type=int)
    tree.leaf("show", "one sync run", lambda a, _: Call("GET", f"/sync-runs/{a.id}")).add_argument("id")
    tree.leaf("confirm", "apply the deactivations a held run kept back (queues a new run)",
              lambda a, _: Call("POST", f"/sync-runs/{a.id}/confirm")).add_argument("id")
    tree.leaf("dismiss", "keep everyone a held run would deactivate, and end its hold",
              lambda a, _: Call("POST", f"/sync-runs/{a.id}/dismiss")).add_argument("id")
    undo = tree.leaf("undo", "reverse a run's End User changes (refused while its cause is in force)",
                     lambda a, _: Call("POST", f"/sync-runs/{a.id}/undo",
                                       query={"dry_run": "true" if a.dry_run else None}))
    undo.add_argument("id")
    undo.add_argument("--dry-run", action="store_true", help="only say what it would do")


def add_review(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tree = CommandGroup(subparsers, common, "review", "ambiguous matches waiting for an operator")
    listing = tree.leaf("list", "list review items", lambda a, _: Call("GET", "/review-items", query={
        "organization_id": a.org, "status": a.status}))
    listing.add_argument("--org", help="Organization id")
    listing.add_argument("--status", choices=("open", "resolved", "all"))
    resolve = tree.leaf("resolve", "link an End User, or create one", _resolve)
    resolve.add_argument("id", help="review item id")
    choice = resolve.add_mutually_exclusive_group(required=True)
    choice.add_argument("--end-user", help="link this End User to the Entra user")
    choice.add_argument("--create", action="store_true", help="create a new linked End User")
