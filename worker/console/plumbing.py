"""The console's plumbing: what a handler gets (`View`), templates, sessions, CSRF and security headers.

Every page handler is wrapped by `page` (a signed-in session, else a redirect to the sign-in form) and every
form handler by `action` (the same, plus a CSRF token, else 403); both turn store and operation errors into a
readable page and add the Content-Security-Policy (scripts from our own origin only; no inline script, no
inline style). Handlers live in `worker.console.views`; each reads through the admin store or operations and
renders one template.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp_jinja2
import structlog
from aiohttp import web

from worker import store as db
from worker.admin.errors import ApiError, from_store
from worker.admin.operations import AdminOperations
from worker.store.admin import AdminStore
from worker.store.console import ConsoleStore
from worker.store.end_user_actions import EndUserActions
from worker.store.records import StoreError

from .forms import FormErrors
from .session import COOKIE, Session, SessionKeys

log = structlog.get_logger(__name__)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Console:
    store: AdminStore
    pages: ConsoleStore
    operations: AdminOperations
    keys: SessionKeys
    end_users: EndUserActions  # the admin API's End User decisions (edit, lock, exclude, journal, undo)
    pool: db.Pool  # for the admin API's functions that take a pool (explain)


CONSOLE = web.AppKey("console", Console)


@dataclass
class View:
    """What a handler gets: the request, its session and CSRF token, and the stores it reads through."""

    request: web.Request
    session: Session
    console: Console

    @property
    def store(self) -> AdminStore:
        return self.console.store

    @property
    def pages(self) -> ConsoleStore:
        return self.console.pages

    @property
    def operations(self) -> AdminOperations:
        return self.console.operations

    @property
    def end_users(self) -> EndUserActions:
        return self.console.end_users

    @property
    def csrf(self) -> str:
        return self.console.keys.csrf(self.session)

    def render(self, template: str, status: int = 200, **context: Any) -> web.Response:
        context.setdefault("nav", "")
        return render(self.request, template, status=status, csrf=self.csrf, signed_in=True, **context)

    async def form(self) -> Any:
        return await read_form(self.request)


Handler = Callable[[View], Awaitable[web.StreamResponse]]


def render(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **SECURITY_HEADERS})


def back_to(path: str, **params: str) -> web.Response:
    """Post/redirect/get: back to a page, with a notice code the page turns into fixed text."""
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v})
    return redirect(path + ("?" + query if query else ""))


async def read_form(request: web.Request) -> Any:
    """The console's forms are URL-encoded (what a browser sends for them). Any other body is refused with
    415 rather than parsed: the admin app's body guard has read the body already, and a multipart body could
    not be parsed again (a 500)."""
    if request.content_type != "application/x-www-form-urlencoded" and request.body_exists:
        raise web.HTTPUnsupportedMediaType(text="console forms are sent URL-encoded")
    return await request.post()


def _session(request: web.Request) -> Session | None:
    return request.app[CONSOLE].keys.read(request.cookies.get(COOKIE), now=time.time())


def set_cookie(response: web.StreamResponse, request: web.Request, value: str, max_age: int) -> None:
    response.set_cookie(COOKIE, value, max_age=max_age, path="/", httponly=True, samesite="Strict",
                        secure=request.secure)


def _error_page(request: web.Request, session: Session | None, status: int, message: str) -> web.Response:
    csrf = request.app[CONSOLE].keys.csrf(session) if session else ""
    return render(request, "error.html", status=status, message=message, status_code=status, csrf=csrf,
                  signed_in=bool(session and session.signed_in), nav="")


async def _guarded(request: web.Request, handler: Handler, session: Session) -> web.StreamResponse:
    """Run a handler; failures become a readable page, never a stack trace."""
    try:
        return await handler(View(request, session, request.app[CONSOLE]))
    except StoreError as exc:
        err = from_store(exc)
        return _error_page(request, session, err.status, err.message)
    except ApiError as exc:
        return _error_page(request, session, exc.status, exc.message)
    except FormErrors as exc:  # a handler without a form of its own to re-show (e.g. a bad query string)
        return _error_page(request, session, 400, "; ".join(f"{k} {v}" for k, v in exc.errors.items()))
    except db.UNAVAILABLE as exc:
        log.warning("console.unavailable", error=repr(exc))
        return _error_page(request, session, 503, "The database is unavailable; try again in a moment.")
    except web.HTTPException:
        raise
    except Exception:
        log.exception("console.internal_error", path=request.path)
        return _error_page(request, session, 500, "Something went wrong; the error is in the admin API's log.")


def page(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A GET page: needs a signed-in session, else redirects to the sign-in form."""
    async def wrapped(request: web.Request) -> web.StreamResponse:
        session = _session(request)
        if session is None or not session.signed_in:
            return redirect("/sign-in?" + urllib.parse.urlencode({"next": request.path_qs}))
        return await _guarded(request, handler, session)
    return wrapped


def action(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A form POST: needs a signed-in session and the session's CSRF token, else 403."""
    async def wrapped(request: web.Request) -> web.StreamResponse:
        session = _session(request)
        form = await read_form(request)
        token = form.get("csrf_token") or request.headers.get("X-CSRF-Token")
        if session is None or not session.signed_in or not request.app[CONSOLE].keys.csrf_matches(
            session, token if isinstance(token, str) else None
        ):
            log.warning("console.csrf_refused", path=request.path, signed_in=bool(session and session.signed_in))
            return _error_page(request, session if session and session.signed_in else None, 403,
                               "This form has expired or did not come from the console. Reload the page and"
                               " try again.")
        return await _guarded(request, handler, session)
    return wrapped
