"""The CLI's side of the admin API: locating it, one HTTP call per command, printing the answer, and the
command groups' plumbing (`CommandGroup`: leaf commands with the common options and a runner).

The API is found from `--admin-url/--admin-token`, else the `ADMIN_URL`/`ADMIN_TOKEN` environment
variables, else `--state-dir` (default `.state`) `stack.json`. Output is the API's JSON (or a compact table
with `--table`); on failure the API's error message goes to stderr and the exit status is 1 (2 when the API
cannot be located). Plain `urllib`: no event loop here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def runner(build: Build, *, after: Callable[[Any, argparse.Namespace], Any] | None = None) -> Callable[..., int]:
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


def common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("admin API")
    group.add_argument("--admin-url", default=argparse.SUPPRESS, help="admin API URL (else $ADMIN_URL)")
    group.add_argument("--admin-token", default=argparse.SUPPRESS, help="bearer token (else $ADMIN_TOKEN)")
    group.add_argument("--state-dir", default=argparse.SUPPRESS,
                       help="read admin_url/admin_token from DIR/stack.json (default .state)")
    group.add_argument("--table", action="store_true", default=argparse.SUPPRESS,
                       help="print a compact table instead of JSON")
    return common


class CommandGroup:
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
        parser.set_defaults(func=runner(build, after=after))
        return parser
