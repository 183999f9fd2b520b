"""CLI commands for an Organization's user sync: `sync status|options|preview|enable|edit|explain|disable|run`.
Filters come from `--filters` JSON and one flag per section ("all" or comma-separated values)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from worker.core.model import FILTER_SECTIONS

from .client import Call, CliError, CommandGroup, Endpoint, request

SECTIONS = FILTER_SECTIONS


def _filters(args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    """`base` overridden by --filters JSON, then by each section flag ("all" or comma-separated values)."""
    filters = dict(base)
    if getattr(args, "filters", None):
        try:
            parsed = json.loads(args.filters)
        except ValueError as exc:
            raise CliError(f"--filters is not JSON: {exc}", status=2) from None
        if not isinstance(parsed, dict):
            raise CliError("--filters must be a JSON object", status=2)
        filters.update(parsed)
    for section in SECTIONS:
        value = getattr(args, section, None)
        if value is not None:
            filters[section] = "all" if value.strip().lower() == "all" else [
                v.strip() for v in value.split(",") if v.strip()]
    return filters


def _current_filters(api: Endpoint, org_id: str) -> dict[str, Any] | None:
    status = request(api, Call("GET", f"/organizations/{org_id}/user-sync"))
    filters = status.get("filters") if isinstance(status, dict) else None
    return dict(filters) if isinstance(filters, dict) else None


ALL = dict.fromkeys(SECTIONS, "all")


def _enable(args: argparse.Namespace, api: Endpoint) -> Call:
    return Call("PUT", f"/organizations/{args.org}/user-sync", {"filters": _filters(args, ALL)})


def _edit(args: argparse.Namespace, api: Endpoint) -> Call:
    current = _current_filters(api, args.org)
    if current is None:
        raise CliError("user sync is not set up for this Organization: use `sync enable`")
    return Call("PUT", f"/organizations/{args.org}/user-sync", {"filters": _filters(args, current)})


def _preview(args: argparse.Namespace, api: Endpoint) -> Call:
    base = _current_filters(api, args.org) or ALL
    return Call("POST", f"/organizations/{args.org}/user-sync/preview", {"filters": _filters(args, base)})


def _filter_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--filters", help="the whole filters object as JSON")
    for section in SECTIONS:
        parser.add_argument(f"--{section.replace('_', '-')}", dest=section, metavar="VALUES",
                            help='"all" or comma-separated values')


def add_sync(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tree = CommandGroup(subparsers, common, "sync", "an Organization's user sync")
    base = "/organizations/{}/user-sync"
    tree.leaf("status", "status, filters, in progress and last run",
              lambda a, _: Call("GET", base.format(a.org))).add_argument("org")
    tree.leaf("options", "filter values seen in the tenant, with counts",
              lambda a, _: Call("GET", base.format(a.org) + "/options")).add_argument("org")
    for name, help_, build in (
        ("preview", "what filters would do (starts from the current filters, else all)", _preview),
        ("enable", "enable with filters (sections not given: all); starts an initial sync", _enable),
        ("edit", "change some filter sections, keeping the others; starts a sync", _edit),
    ):
        parser = tree.leaf(name, help_, build)
        parser.add_argument("org")
        _filter_flags(parser)
    explain = tree.leaf("explain", "why an Entra user is (not) an End User, and what the next sync would do",
                        lambda a, _: Call("GET", base.format(a.org) + "/explain", query={
                            "entra_object_id": a.entra_object_id, "email": a.email}))
    explain.add_argument("org")
    who = explain.add_mutually_exclusive_group(required=True)
    who.add_argument("--entra-object-id", help="the Entra user's object id")
    who.add_argument("--email", help="an email: the End User holding it, or the Entra user whose mail/UPN it is")
    tree.leaf("disable", "disable: End Users are kept and stop being updated",
              lambda a, _: Call("DELETE", base.format(a.org))).add_argument("org")
    tree.leaf("run", "run a sync now with the current filters",
              lambda a, _: Call("POST", base.format(a.org) + "/runs")).add_argument("org")
