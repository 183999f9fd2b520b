"""What the admin API's handlers read from the application: the store, the operations, the pool and the End
User actions (typed `web.AppKey`s set by `worker.admin.api.app.create_admin_app`), and the shapes of a
handler and of a list answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from worker import store as db
from worker.admin.operations import AdminOperations
from worker.store.admin import AdminStore
from worker.store.end_user_actions import EndUserActions

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Routes = tuple[tuple[str, str, Handler], ...]

STORE = web.AppKey("store", AdminStore)
OPERATIONS = web.AppKey("operations", AdminOperations)
POOL = web.AppKey("pool", db.Pool)
END_USERS = web.AppKey("end_users", EndUserActions)


def store(request: web.Request) -> AdminStore:
    return request.app[STORE]


def operations(request: web.Request) -> AdminOperations:
    return request.app[OPERATIONS]


def end_users(request: web.Request) -> EndUserActions:
    return request.app[END_USERS]


def items(found: list[dict[str, Any]], **extra: Any) -> web.Response:
    return web.json_response({"items": found, **extra})


def run_accepted(run_id: str) -> web.Response:
    """202 with the id of the queued run (CONTRACTS.md: `RunAccepted`)."""
    return web.json_response({"run_id": run_id}, status=202)
