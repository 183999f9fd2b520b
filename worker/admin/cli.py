"""`entra-sync` CLI forms of every admin API operation: each command is one HTTP call to the admin API.

`register(subparsers)` adds the command groups (tenants, psa-tenants, orgs, sync, end-users, assets, runs,
review); each leaf sets `func(args) -> int`. The API is found from `--admin-url/--admin-token`, else the
`ADMIN_URL`/`ADMIN_TOKEN` environment variables, else `--state-dir` (default `.state`) `stack.json`.
Output is the API's JSON (or a compact table with `--table`); on failure the API's error message goes to
stderr and the exit status is 1 (2 when the API cannot be located). Plain `urllib`: no event loop here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.core.model import END_USER_FIELDS, FILTER_SECTIONS, SYNC_STATES

SECTIONS = FILTER_SECTIONS
TIMEOUT_S = 30.0


class CliError(Exception):
    def __init__(self, message: str, *, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Call:
    """One admin API request."""

    method: str
    path: str
    body: Any = None
    query: dict[str, Any] | None = None


@dataclass(frozen=True)
class Endpoint:
    url: str
    token: str


# ---- locating and calling the API ------------------------------------------------------------------------

def endpoint(args: argparse.Namespace) -> Endpoint:
    """The admin API's URL and token: flags, then environment, then the state dir's stack.json."""
    stack = _stack_json(Path(getattr(args, "state_dir", None) or ".state"))
    url = getattr(args, "admin_url", None) or os.environ.get("ADMIN_URL") or stack.get("admin_url")
    token = getattr(args, "admin_token", None) or os.environ.get("ADMIN_TOKEN") or stack.get("admin_token")
    if not url or not token:
        raise CliError(
            "cannot locate the admin API: pass --admin-url and --admin-token, set ADMIN_URL and ADMIN_TOKEN,"
            " or point --state-dir at a running stack (stack.json)", status=2,
        )
    return Endpoint(url=str(url).rstrip("/"), token=str(token))


def _stack_json(state_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((state_dir / "stack.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def request(api: Endpoint, call: Call) -> Any:
    """Perform `call`; the decoded JSON answer, or CliError with the API's error message."""
    query = {k: v for k, v in (call.query or {}).items() if v is not None}
    url = f"{api.url}/api/v1{call.path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = None if call.body is None else json.dumps(call.body).encode()
    req = urllib.request.Request(url, data=data, method=call.method, headers={
        "Authorization": f"Bearer {api.token}", "Content-Type": "application/json", "Accept": "application/json",
    })
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raise CliError(_error_message(exc)) from None
    except (urllib.error.URLError, OSError) as exc:
        raise CliError(f"cannot reach the admin API at {api.url}: {getattr(exc, 'reason', exc)}") from None
    return json.loads(raw) if raw else None


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(exc.read())["error"]
        return f"{error['message']} (HTTP {exc.code} {error['code']})"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {exc.code} {exc.reason}"


# ---- output -----------------------------------------------------------------------------------------------

def render(data: Any, *, table: bool) -> str:
    if not table:
        return json.dumps(data, indent=2, ensure_ascii=False)
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        return _table(data["items"])
    if isinstance(data, dict):
        width = max((len(k) for k in data), default=0)
        return "\n".join(f"{k.ljust(width)}  {_cell(v)}" for k, v in data.items())
    return _cell(data)


def _table(rows: list[Any]) -> str:
    if not rows:
        return "(none)"
    columns = [k for k, v in rows[0].items() if not isinstance(v, dict | list)] if isinstance(rows[0], dict) else []
    if not columns:
        return "\n".join(_cell(r) for r in rows)
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


# ---- running a command ------------------------------------------------------------------------------------

Build = Callable[[argparse.Namespace, Endpoint], Call]


def _runner(build: Build, *, after: Callable[[Any, argparse.Namespace], Any] | None = None) -> Callable[..., int]:
    def run(args: argparse.Namespace) -> int:
        try:
            api = endpoint(args)
            result = request(api, build(args, api))
        except CliError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.status
        if after is not None:
            result = after(result, args)
        print(render(result, table=bool(getattr(args, "table", False))))
        return 0

    return run


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


def _secret(value: str) -> str:
    return sys.stdin.readline().strip() if value == "-" else value


FIELDS = END_USER_FIELDS


def _end_user_body(args: argparse.Namespace) -> dict[str, Any]:
    return {f: getattr(args, f) for f in FIELDS if getattr(args, f) is not None}


def _resolve(args: argparse.Namespace, api: Endpoint) -> Call:
    body: dict[str, Any] = {"create": True} if args.create else {"end_user_id": args.end_user}
    return Call("POST", f"/review-items/{args.id}/resolve", body)


def _deleted(result: Any, args: argparse.Namespace) -> Any:
    return {"deleted": args.id}


def _included(result: Any, args: argparse.Namespace) -> Any:
    return {"included": args.entra_object_id}


# ---- the command tree -------------------------------------------------------------------------------------

def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("admin API")
    group.add_argument("--admin-url", default=argparse.SUPPRESS, help="admin API URL (else $ADMIN_URL)")
    group.add_argument("--admin-token", default=argparse.SUPPRESS, help="bearer token (else $ADMIN_TOKEN)")
    group.add_argument("--state-dir", default=argparse.SUPPRESS,
                       help="read admin_url/admin_token from DIR/stack.json (default .state)")
    group.add_argument("--table", action="store_true", default=argparse.SUPPRESS,
                       help="print a compact table instead of JSON")
    return common


class _Tree:
    """Adds leaf commands under one group, each with the common options and a runner."""

    def __init__(self, subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser,
                 name: str, help_: str) -> None:
        parser = subparsers.add_parser(name, help=help_, description=help_)
        self._sub = parser.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")
        self._common = common

    def leaf(self, name: str, help_: str, build: Build, *, after: Any = None) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self._sub.add_parser(
            name, help=help_, description=help_, parents=[self._common]
        )
        parser.set_defaults(func=_runner(build, after=after))
        return parser


def _filter_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--filters", help="the whole filters object as JSON")
    for section in SECTIONS:
        parser.add_argument(f"--{section.replace('_', '-')}", dest=section, metavar="VALUES",
                            help='"all" or comma-separated values')


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add every admin operation's CLI form to the `entra-sync` parser."""
    common = _common()
    _tenants(subparsers, common)
    _psa_tenants(subparsers, common)
    _orgs(subparsers, common)
    _sync(subparsers, common)
    _end_users(subparsers, common)
    _assets(subparsers, common)
    _runs(subparsers, common)
    _review(subparsers, common)


def _tenants(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tree = _Tree(subparsers, common, "tenants", "Microsoft tenants")
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


def _psa_tenants(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tree = _Tree(subparsers, common, "psa-tenants", "PSA tenants and their Microsoft tenant mapping")
    tree.leaf("list", "list PSA tenants", lambda a, _: Call("GET", "/psa-tenants"))
    tree.leaf("add", "create a PSA tenant", lambda a, _: Call("POST", "/psa-tenants", {"name": a.name})) \
        .add_argument("name")
    mapping = tree.leaf("map", "map (or remap) a PSA tenant to a Microsoft tenant", lambda a, _: Call(
        "PUT", f"/psa-tenants/{a.id}/microsoft-tenant", {"microsoft_tenant_id": a.microsoft_tenant_id}))
    mapping.add_argument("id", help="PSA tenant id")
    mapping.add_argument("microsoft_tenant_id")
    tree.leaf("unmap", "unmap a PSA tenant (linked End Users stop being updated, kept)",
              lambda a, _: Call("DELETE", f"/psa-tenants/{a.id}/microsoft-tenant")).add_argument("id")


def _orgs(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tree = _Tree(subparsers, common, "orgs", "Organizations")
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


def _sync(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tree = _Tree(subparsers, common, "sync", "an Organization's user sync")
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


def _end_users(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tree = _Tree(subparsers, common, "end-users", "End Users")
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


def _assets(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tree = _Tree(subparsers, common, "assets", "an Organization's Assets")
    tree.leaf("list", "list Assets", lambda a, _: Call("GET", f"/organizations/{a.org}/assets")) \
        .add_argument("org")
    add = tree.leaf("add", "create an Asset", lambda a, _: Call(
        "POST", f"/organizations/{a.org}/assets", {"name": a.name, "mac_addresses": a.mac or []}))
    add.add_argument("org")
    add.add_argument("--name", required=True)
    add.add_argument("--mac", action="append", help="a MAC address, any notation (repeatable)")


def _runs(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tree = _Tree(subparsers, common, "runs", "sync runs")
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


def _review(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tree = _Tree(subparsers, common, "review", "ambiguous matches waiting for an operator")
    listing = tree.leaf("list", "list review items", lambda a, _: Call("GET", "/review-items", query={
        "organization_id": a.org, "status": a.status}))
    listing.add_argument("--org", help="Organization id")
    listing.add_argument("--status", choices=("open", "resolved", "all"))
    resolve = tree.leaf("resolve", "link an End User, or create one", _resolve)
    resolve.add_argument("id", help="review item id")
    choice = resolve.add_mutually_exclusive_group(required=True)
    choice.add_argument("--end-user", help="link this End User to the Entra user")
    choice.add_argument("--create", action="store_true", help="create a new linked End User")


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry for these commands only (the product's CLI is `worker.cli`)."""
    parser = argparse.ArgumentParser(prog="entra-sync")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return int(args.func(args))
