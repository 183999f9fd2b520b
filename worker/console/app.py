"""The operator console, added to the admin API's application at `/`:
`setup_console(app, pool=…, store=…, operations=…, token=…)` registers its routes (`worker.console.views`),
templates (Jinja2 with autoescape, the filters of `worker.console.formatting`) and static files. The request
plumbing (sessions, CSRF, error pages, security headers) is `worker.console.plumbing`.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from worker import store as db
from worker.admin.operations import AdminOperations
from worker.store.admin import AdminStore
from worker.store.console import ConsoleStore
from worker.store.end_user_actions import EndUserActions

from . import views
from .formatting import ago, number, timestamp
from .forms import SECTION_TITLES
from .plumbing import CONSOLE, Console
from .session import SessionKeys

STATIC_PREFIX = "/console-static"


def setup_console(
    app: web.Application, *, pool: db.Pool, store: AdminStore, operations: AdminOperations, token: str
) -> None:
    """Add the console's routes, templates and static files to the admin application."""
    app[CONSOLE] = Console(store=store, pages=ConsoleStore(pool), operations=operations, keys=SessionKeys(token),
                           end_users=EndUserActions(pool), pool=pool)
    env = aiohttp_jinja2.setup(
        app, loader=jinja2.PackageLoader("worker.console", "templates"), autoescape=True,
    )
    env.filters.update(ago=ago, timestamp=timestamp, number=number, quote=urllib.parse.quote)
    env.globals.update(static=STATIC_PREFIX, titles=SECTION_TITLES)
    for method, path, handler in views.ROUTES:
        app.router.add_route(method, path, handler)
    app.router.add_static(STATIC_PREFIX, Path(__file__).parent / "static", append_version=False)
