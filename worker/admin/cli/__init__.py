"""`entra-sync` CLI forms of every admin API operation: each command is one HTTP call to the admin API.

`register(subparsers)` adds the command groups (tenants, psa-tenants, orgs, sync, end-users, assets, runs,
review), one module per resource; each leaf sets `func(args) -> int`. Locating and calling the API, and
printing its answer, is `worker.admin.cli.client`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .client import common_options
from .configuration import add_orgs, add_psa_tenants, add_tenants
from .end_users import add_assets, add_end_users
from .runs import add_review, add_runs
from .user_sync import add_sync


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add every admin operation's CLI form to the `entra-sync` parser."""
    common = common_options()
    for add in (add_tenants, add_psa_tenants, add_orgs, add_sync, add_end_users, add_assets, add_runs, add_review):
        add(subparsers, common)


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry for these commands only (the product's CLI is `worker.cli`)."""
    parser = argparse.ArgumentParser(prog="entra-sync")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return int(args.func(args))
