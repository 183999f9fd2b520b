"""Signing in with the admin token, and out."""

from __future__ import annotations

import time

from aiohttp import web

from ..plumbing import CONSOLE, View, action, read_form, redirect, render, set_cookie
from ..session import SESSION_TTL_S, VISITOR_TTL_S
from .common import NOTICES, safe_next


async def sign_in_form(request: web.Request, *, error: str | None = None, status: int = 200) -> web.Response:
    keys = request.app[CONSOLE].keys
    session = keys.read(request.cookies.get("console_session"), now=time.time())
    fresh = None
    if session is None or error is not None:
        session, fresh = keys.new(signed_in=False, now=time.time())
    response = render(request, "sign_in.html", status=status, csrf=keys.csrf(session), error=error,
                      next=safe_next(request.query.get("next")), signed_in=False, nav="",
                      notice=NOTICES.get(request.query.get("done", "")))
    if fresh is not None:
        set_cookie(response, request, fresh, VISITOR_TTL_S)
    return response


async def sign_in_page(request: web.Request) -> web.Response:
    return await sign_in_form(request)


async def sign_in(request: web.Request) -> web.Response:
    keys = request.app[CONSOLE].keys
    form = await read_form(request)
    session = keys.read(request.cookies.get("console_session"), now=time.time())
    token = form.get("csrf_token")
    if session is None or not keys.csrf_matches(session, token if isinstance(token, str) else None):
        return await sign_in_form(request, error="The sign-in form expired; enter the token again.", status=403)
    given = form.get("admin_token")
    if not isinstance(given, str) or not given.strip():
        return await sign_in_form(request, error="Admin token is required.", status=400)
    if not keys.token_matches(given.strip()):
        return await sign_in_form(request, error="That admin token is not valid.", status=401)
    _, cookie = keys.new(signed_in=True, now=time.time())
    nxt = form.get("next")
    response = redirect(safe_next(nxt if isinstance(nxt, str) else None))
    set_cookie(response, request, cookie, SESSION_TTL_S)
    return response


@action
async def sign_out(v: View) -> web.Response:
    response = redirect("/sign-in?done=signed-out")
    response.del_cookie("console_session", path="/")
    return response


async def home(request: web.Request) -> web.Response:
    return redirect("/tenants")
