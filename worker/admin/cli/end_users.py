"""CLI commands for End Users and Assets: `end-users list|show|add|delete|edit|unlock|exclude|changes|exclusions|
include|leavers`, `assets list|add`."""

from __future__ import annotations

import argparse
from typing import Any

from worker.core.model import END_USER_FIELDS, SYNC_STATES

from .client import Call, CommandGroup

FIELDS = END_USER_FIELDS


def _end_user_body(args: argparse.Namespace) -> dict[str, Any]:
    return {f: getattr(args, f) for f in FIELDS if getattr(args, f) is not None}


def _deleted(result: Any, args: argparse.Namespace) -> Any:
    return {"deleted": args.id}


def _included(result: Any, args: argparse.Namespace) -> Any:
    return {"included": args.entra_object_id}


def add_end_users(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tree = CommandGroup(subparsers, common, "end-users", "End Users")
    _end_user_records(tree)
    _end_user_journal(tree)


def _end_user_records(tree: CommandGroup) -> None:
    """list, show, add, delete, edit, unlock, exclude."""
    listing = tree.leaf("list", "list an Organization's End Users", lambda a, _: Call(
        "GET", f"/organizations/{a.org}/end-users", query={
            "email": a.email, "sync_state": a.sync_state, "q": a.q, "limit": a.limit, "offset": a.offset}))
    listing.add_argument("org")
    listing.add_argument("--email")
    listing.add_argument("--sync-state", choices=SYNC_STATES)
    listing.add_argument("--q", help="substring of name or email")
    listing.add_argument("--limit", type=int)
    listing.add_argument("--offset", type=int)
    tree.leaf("show", "one End User with Microsoft data and Assets",
              lambda a, _: Call("GET", f"/end-users/{a.id}")).add_argument("id")
    add = tree.leaf("add", "create a manual End User", lambda a, _: Call(
        "POST", f"/organizations/{a.org}/end-users", _end_user_body(a)))
    add.add_argument("org")
    for field in FIELDS:
        add.add_argument(f"--{field.replace('_', '-')}", dest=field)
    tree.leaf("delete", "delete an End User (a synced one is also excluded: never re-created)",
              lambda a, _: Call("DELETE", f"/end-users/{a.id}"), after=_deleted).add_argument("id")
    edit = tree.leaf("edit", "edit fields (--city '' clears one); on a synced End User they become locked",
                     lambda a, _: Call("PATCH", f"/end-users/{a.id}", _end_user_body(a)))
    edit.add_argument("id")
    for field in FIELDS:
        edit.add_argument(f"--{field.replace('_', '-')}", dest=field)
    unlock = tree.leaf("unlock", "hand a locked field back to Entra (the next sync fills it)",
                       lambda a, _: Call("DELETE", f"/end-users/{a.id}/locks/{a.field}"))
    unlock.add_argument("id")
    unlock.add_argument("field", choices=FIELDS)
    tree.leaf("exclude", "keep the End User but stop syncing it",
              lambda a, _: Call("POST", f"/end-users/{a.id}/exclude")).add_argument("id")


def _end_user_journal(tree: CommandGroup) -> None:
    """changes, exclusions, include, leavers."""
    changes = tree.leaf("changes", "the End User's change journal, newest first", lambda a, _: Call(
        "GET", f"/end-users/{a.id}/changes", query={"limit": a.limit, "offset": a.offset}))
    changes.add_argument("id")
    changes.add_argument("--limit", type=int)
    changes.add_argument("--offset", type=int)
    tree.leaf("exclusions", "Entra users excluded from an Organization",
              lambda a, _: Call("GET", f"/organizations/{a.org}/exclusions")).add_argument("org")
    include = tree.leaf("include", "include an excluded Entra user again", lambda a, _: Call(
        "DELETE", f"/organizations/{a.org}/exclusions/{a.entra_object_id}"), after=_included)
    include.add_argument("org")
    include.add_argument("entra_object_id")
    leavers = tree.leaf("leavers", "deactivated End Users with their leaver card", lambda a, _: Call(
        "GET", f"/organizations/{a.org}/leavers", query={"since": a.since}))
    leavers.add_argument("org")
    leavers.add_argument("--since", help="ISO 8601 time, e.g. 2026-12-01T00:00:00Z")


def add_assets(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tree = CommandGroup(subparsers, common, "assets", "an Organization's Assets")
    tree.leaf("list", "list Assets", lambda a, _: Call("GET", f"/organizations/{a.org}/assets")) \
        .add_argument("org")
    add = tree.leaf("add", "create an Asset", lambda a, _: Call(
        "POST", f"/organizations/{a.org}/assets", {"name": a.name, "mac_addresses": a.mac or []}))
    add.add_argument("org")
    add.add_argument("--name", required=True)
    add.add_argument("--mac", action="append", help="a MAC address, any notation (repeatable)")
