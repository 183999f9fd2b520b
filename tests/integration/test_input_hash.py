"""The mirror's fingerprint of a user (`MirrorUser.input_hash`, `worker.store.mirror.inputs_hash`) changes with
every input of the projection, written as the sync writes it, and with nothing else.

An End User whose stored input hash equals its user's is not projected again (`worker.core.reconcile`), so an
input the fingerprint missed would leave End Users stale for good. Each declared user property, the licences,
removal, and each enrichment column (sign-in, MFA, devices) is changed in turn through the mirror's own
writers, and read back both ways the sync reads users (by id and by keyset range).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import pytest

from tests.integration.test_store_enrichment import MFA, apply
from tests.unit.test_user_properties import _graph_user_json
from worker.core.model import USER_PROPERTIES
from worker.core.pulls import Listing
from worker.graph import UserPage
from worker.store import mirror


def graph_user(raw: dict[str, Any]) -> Any:
    return msgspec.json.decode(json.dumps({"value": [raw]}).encode(), type=UserPage).value[0]


async def write(conn: asyncpg.Connection, tid: str, raw: dict[str, Any]) -> None:
    async with conn.transaction():
        await mirror.upsert_mirror_users(conn, tid, [graph_user(raw)], listing=Listing.DELTA)


async def fingerprint(conn: asyncpg.Connection, tid: str) -> str:
    (by_id,) = await mirror.load_mirror_users(conn, tid, ["u-1"], with_groups=True)
    (by_range,) = await mirror.mirror_users_after(conn, tid, "", limit=10, with_groups=False)
    assert by_id.input_hash == by_range.input_hash is not None
    return by_id.input_hash


def _changed(name: str, value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, list):
        return [*value, "another"]
    return f"{value} changed"


@pytest.fixture
async def base(pool: asyncpg.Pool) -> tuple[str, dict[str, Any]]:
    tid = f"t-{uuid.uuid4()}"
    raw = _graph_user_json()
    async with pool.acquire() as conn:
        await write(conn, tid, raw)
    return tid, raw


async def test_every_declared_property_and_the_licences_change_the_fingerprint(
    pool: asyncpg.Pool, base: tuple[str, dict[str, Any]],
) -> None:
    tid, raw = base
    wire = {name: next(k for k in raw if k.lower() == name.replace("_", "")) for name in USER_PROPERTIES}
    async with pool.acquire() as conn:
        original = await fingerprint(conn, tid)
        changes = {**{wire[name]: _changed(name, raw[wire[name]]) for name in USER_PROPERTIES},
                   "assignedLicenses": [{"skuId": "sku-c"}]}
        for key, value in changes.items():
            await write(conn, tid, {**raw, key: value})
            assert await fingerprint(conn, tid) != original, key
            await write(conn, tid, raw)
            assert await fingerprint(conn, tid) == original, key  # the same inputs, the same fingerprint


async def test_removal_and_each_enrichment_change_the_fingerprint(
    pool: asyncpg.Pool, base: tuple[str, dict[str, Any]],
) -> None:
    tid, raw = base
    async with pool.acquire() as conn:
        seen = {await fingerprint(conn, tid)}
        await apply(conn, tid, sign_ins=[("u-1", datetime(2026, 11, 1, 9, 30, tzinfo=UTC))])
        seen.add(await fingerprint(conn, tid))
        await apply(conn, tid, sign_ins=[("u-1", datetime(2026, 11, 1, 9, 31, tzinfo=UTC))])
        seen.add(await fingerprint(conn, tid))
        await apply(conn, tid, mfa=[("u-1", MFA)])
        seen.add(await fingerprint(conn, tid))
        await apply(conn, tid, mfa=[("u-1", {**MFA, "capable": False})])
        seen.add(await fingerprint(conn, tid))
        await apply(conn, tid, devices=[("u-1", "aabbccddee01")])
        seen.add(await fingerprint(conn, tid))
        await write(conn, tid, {**raw, "@removed": {"reason": "deleted"}})
        seen.add(await fingerprint(conn, tid))
        assert len(seen) == 7, "a change the fingerprint did not see"


async def test_group_membership_leaves_the_fingerprint_alone(
    pool: asyncpg.Pool, base: tuple[str, dict[str, Any]],
) -> None:
    """Groups decide scope, not what a user projects to: joining one does not make its End User stale."""
    tid, _raw = base
    async with pool.acquire() as conn:
        before = await fingerprint(conn, tid)
        await conn.execute("INSERT INTO entra_group_members (tenant_id, group_id, member_id, member_type)"
                           " VALUES ($1, 'g1', 'u-1', 'user')", tid)
        assert await fingerprint(conn, tid) == before
