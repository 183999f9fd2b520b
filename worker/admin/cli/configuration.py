"""CLI commands for configuration and mapping: `tenants`, `psa-tenants`, `orgs`."""

from __future__ import annotations

import argparse
import sys

from .client import Call, CliError, CommandGroup


def add_tenants(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tree = CommandGroup(subparsers, common, "tenants", "Microsoft tenants")
    tree.leaf("list", "list registered Microsoft tenants", lambda a, _: Call("GET", "/microsoft-tenants"))
    status = tree.leaf("status", "real-time state: subscriptions, last notification, last delta and resync",
                       lambda a, _: Call("GET", f"/microsoft-tenants/{a.tenant}/sync-status"))
    status.add_argument("tenant", help="the Microsoft tenant id")
    add = tree.leaf("add", "register a Microsoft tenant", lambda a, _: Call("POST", "/microsoft-tenants", {
        "tenant_id": a.tenant_id, "display_name": a.display_name, "client_id": a.client_id,
        "client_secret": _secret(a.client_secret),
        **({"default_domain": a.default_domain} if a.default_domain else {}),
    }))
    add.add_argument("--tenant-id", required=True)
    add.add_argument("--display-name", required=True)
    add.add_argument("--client-id", required=True)
    add.add_argument("--client-secret", required=True, help='the app secret; "-" reads it from stdin')
    add.add_argument("--default-domain")
    update = tree.leaf("update", "rename a tenant or change its credential (tested first; in effect at once)",
                       lambda a, _: Call("PATCH", f"/microsoft-tenants/{a.tenant}", _tenant_changes(a)))
    update.add_argument("tenant", help="the Microsoft tenant id")
    update.add_argument("--display-name")
    update.add_argument("--client-id")
    update.add_argument("--client-secret", help='the new app secret; "-" reads it from stdin')
    tree.leaf("remove", "remove an unmapped tenant: its Graph subscriptions (in Graph too) and mirror",
              lambda a, _: Call("DELETE", f"/microsoft-tenants/{a.tenant}")) \
        .add_argument("tenant", help="the Microsoft tenant id")


def _tenant_changes(args: argparse.Namespace) -> dict[str, str]:
    changes = {"display_name": args.display_name, "client_id": args.client_id,
               "client_secret": _secret(args.client_secret) if args.client_secret else None}
    given = {k: v for k, v in changes.items() if v is not None}
    if not given:
        raise CliError("nothing to change: give --display-name, --client-id and/or --client-secret", status=2)
    return given


def _secret(value: str) -> str:
    return sys.stdin.readline().strip() if value == "-" else value


def add_psa_tenants(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tree = CommandGroup(subparsers, common, "psa-tenants", "PSA tenants and their Microsoft tenant mapping")
    tree.leaf("list", "list PSA tenants", lambda a, _: Call("GET", "/psa-tenants"))
    tree.leaf("add", "create a PSA tenant", lambda a, _: Call("POST", "/psa-tenants", {"name": a.name})) \
        .add_argument("name")
    mapping = tree.leaf("map", "map (or remap) a PSA tenant to a Microsoft tenant", lambda a, _: Call(
        "PUT", f"/psa-tenants/{a.id}/microsoft-tenant", {"microsoft_tenant_id": a.microsoft_tenant_id}))
    mapping.add_argument("id", help="PSA tenant id")
    mapping.add_argument("microsoft_tenant_id")
    tree.leaf("unmap", "unmap a PSA tenant (linked End Users stop being updated, kept)",
              lambda a, _: Call("DELETE", f"/psa-tenants/{a.id}/microsoft-tenant")).add_argument("id")


def add_orgs(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tree = CommandGroup(subparsers, common, "orgs", "Organizations")
    tree.leaf("list", "list Organizations", lambda a, _: Call(
        "GET", "/organizations", query={"psa_tenant_id": a.psa_tenant})).add_argument("--psa-tenant")
    add = tree.leaf("add", "create an Organization", lambda a, _: Call(
        "POST", "/organizations", {"name": a.name, "psa_tenant_id": a.psa_tenant}))
    add.add_argument("name")
    add.add_argument("--psa-tenant", required=True, help="PSA tenant id")
    assign = tree.leaf("assign", "re-assign an Organization to another PSA tenant", lambda a, _: Call(
        "PUT", f"/organizations/{a.id}/psa-tenant", {"psa_tenant_id": a.psa_tenant_id}))
    assign.add_argument("id", help="Organization id")
    assign.add_argument("psa_tenant_id")
