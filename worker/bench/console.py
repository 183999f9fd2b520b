"""`entra-sync bench console --end-users N`: each console page's server time with N End Users in one Organization.

A scratch database (DATABASE_URL's server, else embedded PostgreSQL) gets one Microsoft tenant mapped to a PSA
tenant, an Organization with user sync enabled, N mirror users and N linked End Users (COPY through the store,
with licences, MFA and sign-in data like a synced tenant's), a few runs and a review item. The admin
application (API and console) is served in this process on 127.0.0.1 and each page is requested `rounds` times
over one keep-alive connection, signed in like a browser; the time is from request to the last byte on
loopback, which is the server's time plus well under a millisecond. Nothing is published: the pages read only.
The console's live preview is timed beside the admin API's own preview of the same filters (`api`),
PREVIEW_ROUNDS times each, alternating: the difference is what the console adds. They are reported apart from
the pages (`live_preview`): the preview region's request runs the admin API's preview over every user of the
tenant, whose target and benchmark are `bench preview`'s (under 2 s at 100,000 users). The End Users here are
seeded, not written by the sync, so none of them is settled (`worker.engine.preview`): the slowest case.
"""

from __future__ import annotations

import re
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from aiohttp import web
from pydantic import SecretStr

from worker.admin.api import create_admin_app
from worker.bench.common import ALL_FILTERS, scratch_database, state_directory
from worker.config import AdminSettings, DatabaseSettings, Settings
from worker.store.console_seed import seed_console_bench
from worker.store.pool import create_pool

TOKEN = "bench-console-token"
PREVIEW_ROUNDS = 5  # each preview page's rounds (its p99 is then the slowest of them)
E5_SKU = "c7df2760-2c81-4ef7-b578-5b5392b571df"
DEPARTMENTS = ("Sales", "Support", "Engineering", "Finance", "HR", "Operations", "Legal", "Marketing")
OFFICES = ("Toronto", "London", "Berlin", "Sydney", "Austin")
FIRST = ("Ann", "Ben", "Chen", "Dana", "Eli", "Fiona", "Gus", "Hana", "Ivan", "Julia", "Kofi", "Lena")
LAST = ("Ali", "Baker", "Brown", "Garcia", "Green", "Ivanova", "Kim", "Larsen", "Olsen", "Patel", "Rossi", "Scott")


class _NoPublisher:
    async def publish(self, topic: str, key: str, message: msgspec.Struct) -> None:
        raise RuntimeError("the console benchmark only reads")


def _people(n: int, tenant_id: str, org_id: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    now = datetime.now(UTC)
    mirror, end_users = [], []
    for i in range(n):
        first, last = FIRST[i % len(FIRST)], f"{LAST[(i // len(FIRST)) % len(LAST)]}{i // 144:04d}"
        email = f"{first.lower()}.{last.lower()}.{i}@contoso.com"
        oid = str(uuid.UUID(int=i + 1))
        dept = DEPARTMENTS[i % len(DEPARTMENTS)]
        mirror.append((tenant_id, oid, f"{first} {last}", first, last, email, email, dept,
                       OFFICES[i % len(OFFICES)], "Member" if i % 10 else "Guest", True, b"\0"))
        microsoft = {"object_id": oid, "user_principal_name": email, "account_enabled": True,
                     "licenses": [{"sku_id": E5_SKU, "sku_part_number": "ENTERPRISEPREMIUM"}],
                     "last_sign_in_at": (now - timedelta(hours=i % 500)).isoformat(),
                     "mfa": {"registered": True, "capable": True, "methods": ["microsoftAuthenticatorPush"],
                             "preferred_method": "push"}}
        state = "deactivated" if i % 100 == 7 else "synced"  # 1% leavers: the sync-state filter finds some
        end_users.append((uuid.UUID(org_id), first, last, email, f"{dept} Specialist", state, tenant_id, oid,
                          microsoft, now))
    return mirror, end_users


async def _world(pool: Any, n: int) -> dict[str, Any]:
    tenant_id = str(uuid.uuid4())
    return await seed_console_bench(
        pool, tenant_id=tenant_id, filters=ALL_FILTERS, rows=lambda org_id: _people(n, tenant_id, org_id)
    )


async def _sign_in(http: aiohttp.ClientSession) -> str:
    async with http.get("/sign-in") as resp:
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', await resp.text())
    assert csrf
    async with http.post("/sign-in", data={"csrf_token": csrf[1], "admin_token": TOKEN}) as resp:
        page = await resp.text()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token, "sign-in failed"
    return token[1]


async def _middle_cursor(http: aiohttp.ClientSession, org_id: str, pages: int) -> str:
    """The 'Next' link after walking `pages` pages: a deep page of the keyset."""
    url = f"/organizations/{org_id}"
    for _ in range(pages):
        async with http.get(url) as resp:
            found = re.search(r'href="([^"]+)" rel="next"', await resp.text())
        assert found
        url = found[1].replace("&amp;", "&")
    return url


async def _time(call: Callable[[], Awaitable[None]], rounds: int) -> dict[str, float]:
    await call()  # warm: prepared statements, template compilation
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {"p50_ms": round(statistics.median(samples), 1),
            "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 1)}


async def bench_console(*, end_users: int, rounds: int = 30, state_dir: Path | None = None) -> dict[str, Any]:
    with state_directory(state_dir) as state:
        async with scratch_database(state) as url:
            pool = await create_pool(url, min_size=2, max_size=6)
            try:
                world = await _world(pool, end_users)
                settings = Settings(database=DatabaseSettings(url=url),
                                    admin=AdminSettings(host="127.0.0.1", port=0, token=SecretStr(TOKEN)))
                app = create_admin_app(settings, pool=pool, publisher=_NoPublisher())
                pages, live_preview = await _measure(app, world, rounds)
            finally:
                await pool.close()
    return {"bench": "console", "end_users": end_users, "pages": pages, "live_preview": live_preview}


async def _measure(app: web.Application, world: dict[str, Any], rounds: int
                   ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Each page's request times over `rounds` rounds, signed in as a browser is, and the live preview's
    (console and API). Long because it is the list of pages measured, one line each, in the order an operator
    visits them (dev tooling)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    org, psa = world["org_id"], world["psa_id"]
    try:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}", cookie_jar=jar) as http:
            csrf = await _sign_in(http)
            deep = await _middle_cursor(http, org, 3)
            preview_form = {"csrf_token": csrf, **{f"{s}_all": "1" for s in ALL_FILTERS if s != "departments"},
                            "departments": "Sales"}

            def get(path: str) -> Callable[[], Awaitable[None]]:
                async def call() -> None:
                    async with http.get(path) as resp:
                        assert resp.status == 200, (path, resp.status)
                        await resp.read()
                return call

            async def preview() -> None:
                async with http.post(f"/organizations/{org}/user-sync/preview", data=preview_form) as resp:
                    assert resp.status == 200, resp.status
                    await resp.read()

            api_filters = {**ALL_FILTERS, "departments": ["Sales"]}

            async def preview_api() -> None:  # the same preview through the admin API: what the console adds
                async with http.post(f"/api/v1/organizations/{org}/user-sync/preview", json={"filters": api_filters},
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                    assert resp.status == 200, resp.status
                    await resp.read()

            calls = {
                "microsoft_tenants": get("/tenants"),
                "tenant": get(f"/tenants/{world['tenant_id']}"),
                "psa_tenant": get(f"/psa-tenants/{psa}"),
                "set_up_dialog": get(f"/psa-tenants/{psa}?edit={org}"),
                "preview": preview,
                "preview_api": preview_api,
                "organizations": get("/organizations"),
                "end_users_first_page": get(f"/organizations/{org}"),
                "end_users_deep_page": get(deep),
                "end_users_search": get(f"/organizations/{org}?q=fiona.scott"),
                "end_users_sync_state": get(f"/organizations/{org}?sync_state=deactivated"),
                "end_users_sync_state_most": get(f"/organizations/{org}?sync_state=synced"),
                "end_users_search_one_letter": get(f"/organizations/{org}?q=j"),
                "end_user": get(f"/end-users/{world['end_user_id']}"),
                "sync_runs": get("/sync-runs"),
                "review": get("/review"),
            }
            # The previews take seconds each over 100,000 users (`bench preview` is their benchmark): fewer rounds,
            # alternating console and API so both see the same load.
            slow = ("preview", "preview_api")
            out = {name: await _time(call, rounds) for name, call in calls.items() if name not in slow}
            samples: dict[str, list[float]] = {name: [] for name in slow}
            await preview()
            for _ in range(min(rounds, PREVIEW_ROUNDS)):
                for name in slow:
                    started = time.perf_counter()
                    await calls[name]()
                    samples[name].append((time.perf_counter() - started) * 1000)
            previews = {}
            for name, values in samples.items():
                values.sort()
                previews["console" if name == "preview" else "api"] = {
                    "p50_ms": round(statistics.median(values), 1), "p99_ms": round(values[-1], 1)}
            return out, previews
    finally:
        await runner.cleanup()
