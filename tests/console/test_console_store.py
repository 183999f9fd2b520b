"""The console's page reads on the real PostgreSQL: keyset pages of End Users walk every row once, in order,
forwards and back, with and without filters, and the total counts the matches; search is by prefix."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from worker.store.console import ConsoleStore, Cursor
from worker.store.pool import create_pool


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, max_size=3)
    yield p
    await p.close()


@pytest.fixture(scope="module")
async def org(pool: asyncpg.Pool) -> dict[str, Any]:
    """137 End Users: repeated and missing names, mixed case, a few deactivated, one Organization of their own."""
    psa = await pool.fetchval("INSERT INTO psa_tenants (name) VALUES ($1) RETURNING id", f"psa-{uuid.uuid4()}")
    org_id = await pool.fetchval("INSERT INTO organizations (name, psa_tenant_id) VALUES ('o', $1) RETURNING id", psa)
    other = await pool.fetchval("INSERT INTO organizations (name, psa_tenant_id) VALUES ('x', $1) RETURNING id", psa)
    rows = []
    for i in range(137):
        last = None if i % 17 == 0 else ["smith", "Smith", "Ødegaard", "lee", "Zed"][i % 5]
        first = None if i % 23 == 0 else f"{'Ann' if i % 2 else 'bob'}{i % 7}"
        state = "deactivated" if i % 11 == 0 else "synced"
        rows.append((org_id, first, last, f"user{i}@Contoso.com", state))
    await pool.executemany(
        "INSERT INTO end_users (organization_id, first_name, last_name, email, sync_state)"
        " VALUES ($1, $2, $3, $4, $5)", rows)
    await pool.execute("INSERT INTO end_users (organization_id, first_name, email) VALUES ($1, 'Ann1', 'a@x.com')",
                       other)
    return {"id": str(org_id), "rows": rows}


async def _all_ids(store: ConsoleStore, org_id: str, **filters: Any) -> tuple[list[str], int]:
    seen: list[str] = []
    page = await store.end_users_page(org_id, limit=20, **filters)
    total = page["total"]
    while True:
        seen += [u["id"] for u in page["items"]]
        if not page["next"]:
            return seen, total
        page = await store.end_users_page(org_id, limit=20, after=Cursor.decode(page["next"]), **filters)


async def _expected(pool: asyncpg.Pool, org_id: str, where: str = "true") -> list[str]:
    rows = await pool.fetch(
        "SELECT id::text FROM end_users WHERE organization_id = $1::uuid AND " + where +
        " ORDER BY lower(coalesce(last_name, '')), lower(coalesce(first_name, '')), id", org_id)
    return [r[0] for r in rows]


def _prefix(q: str) -> str:
    """What a search matches, written independently of the store's index ranges: LIKE on the three texts."""
    like = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return (f"(lower(coalesce(first_name, '') || ' ' || coalesce(last_name, '')) LIKE '{like}'"
            f" OR lower(last_name) LIKE '{like}' OR lower(email) LIKE '{like}')")


@pytest.mark.parametrize("filters, where", [
    pytest.param({"q": None, "sync_state": None}, "true", id="everyone"),
    pytest.param({"q": "ann", "sync_state": None}, _prefix("ann"), id="search-first-name-prefix"),
    pytest.param({"q": "SMITH", "sync_state": None}, "lower(last_name) = 'smith'", id="search-is-case-blind"),
    pytest.param({"q": "ØDEGAARD", "sync_state": None}, "last_name = 'Ødegaard'", id="search-non-ascii"),
    pytest.param({"q": "bob3 lee", "sync_state": None}, "first_name = 'bob3' AND last_name = 'lee'", id="full-name"),
    pytest.param({"q": "user1", "sync_state": None}, _prefix("user1"), id="email-prefix"),
    pytest.param({"q": "contoso", "sync_state": None}, "false", id="a-substring-is-not-a-prefix"),
    pytest.param({"q": None, "sync_state": "deactivated"}, "sync_state = 'deactivated'", id="sync-state"),
    pytest.param({"q": "user2", "sync_state": "synced"}, "sync_state = 'synced' AND " + _prefix("user2"), id="both"),
    pytest.param({"q": "100%_", "sync_state": None}, "false", id="like-characters-are-plain-text"),
])
async def test_keyset_pages_walk_every_match_once_in_order(
    pool: asyncpg.Pool, org: dict[str, Any], filters: dict[str, Any], where: str
) -> None:
    store = ConsoleStore(pool)
    expected = await _expected(pool, org["id"], where)
    seen, total = await _all_ids(store, org["id"], **filters)
    assert seen == expected
    assert total == len(expected)


async def test_previous_pages_walk_back_to_the_first(pool: asyncpg.Pool, org: dict[str, Any]) -> None:
    store = ConsoleStore(pool)
    pages = [await store.end_users_page(org["id"], q=None, sync_state=None, limit=25)]
    while pages[-1]["next"]:
        pages.append(await store.end_users_page(org["id"], q=None, sync_state=None, limit=25,
                                                after=Cursor.decode(pages[-1]["next"])))
    assert pages[0]["prev"] is None and pages[-1]["next"] is None
    back = pages[-1]
    for expected in reversed(pages[:-1]):
        back = await store.end_users_page(org["id"], q=None, sync_state=None, limit=25,
                                          before=Cursor.decode(back["prev"]))
        assert [u["id"] for u in back["items"]] == [u["id"] for u in expected["items"]]
    assert back["prev"] is None


@pytest.mark.parametrize("text", ["", "[]", "not json", '["a", "b"]', '["a", "b", 3]', '["a", "b", "short"]',
                                  '{"a": 1}'])
def test_a_tampered_cursor_is_ignored(text: str) -> None:
    assert Cursor.decode(text) is None


async def test_a_search_total_is_counted_up_to_the_cap(
    pool: asyncpg.Pool, org: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.store.console as console

    monkeypatch.setattr(console, "SEARCH_COUNT_CAP", 10)
    page = await ConsoleStore(pool).end_users_page(org["id"], q="user", sync_state=None, limit=5)
    assert (page["total"], page["total_capped"]) == (10, True)
    exact = await ConsoleStore(pool).end_users_page(org["id"], q="user13", sync_state=None, limit=5)
    assert (exact["total"], exact["total_capped"]) == (8, False)  # user13 and user130 … user136
