"""The declarations in Python agree with the schema: every declared user property goes through the mirror and
comes back (Graph page → `entra_users` → `MirrorUser`), and the End Users' sync states are the database's."""

from __future__ import annotations

import json
import re
import uuid

import asyncpg
import msgspec

from tests.unit.test_user_properties import _graph_user_json
from worker.core.model import SYNC_STATES, USER_PROPERTIES, MirrorUser
from worker.core.pulls import Listing
from worker.graph import UserPage
from worker.store import mirror


async def test_every_declared_property_round_trips_through_the_mirror(pool: asyncpg.Pool) -> None:
    tid = f"t-{uuid.uuid4()}"
    raw = _graph_user_json()
    page = msgspec.json.decode(json.dumps({"value": [raw]}).encode(), type=UserPage)
    async with pool.acquire() as conn:
        async with conn.transaction():
            assert await mirror.upsert_mirror_users(conn, tid, page.value, listing=Listing.DELTA) == 1
        (user,) = await mirror.load_mirror_users(conn, tid, ["u-1"], with_groups=False)
    graph_user = page.value[0]
    for name in USER_PROPERTIES:
        stored, sent = getattr(user, name), getattr(graph_user, name)
        assert (list(stored) if isinstance(stored, tuple) else stored) == sent, name
    assert isinstance(user, MirrorUser) and user.license_sku_ids == ("sku-a", "sku-b")


async def test_the_sync_states_are_the_databases(pool: asyncpg.Pool) -> None:
    check = await pool.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'end_users_sync_state_check'")
    assert tuple(re.findall(r"'(\w+)'", check)) == SYNC_STATES
