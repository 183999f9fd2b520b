"""Enrichment against PostgreSQL: sign-in times land in `entra_user_sign_ins` (COPied straight in for a tenant's
first listing), MFA and devices in `entra_user_enrichment`; only changes are written and flagged, a listing that
failed leaves its values alone, and a complete one clears what it no longer shows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from worker.store import enrichment

T1 = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
T2 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
MFA = {"registered": True, "capable": True, "methods": ["microsoftAuthenticatorPush"], "preferred_method": "push"}


async def apply(conn: asyncpg.Connection, tid: str, *, sign_ins: list[tuple[str, Any]] | None = None,
                mfa: list[tuple[str, Any]] | None = None, devices: list[tuple[str, str]] | None = None,
                flag: bool = True) -> int:  # fmt: skip
    """One enrichment pass as the Enricher makes it; a listing given as None failed (capability missing).
    Returns the rows written (sign-in rows plus MFA-and-device rows)."""
    await enrichment.stage_enrichment(conn)
    written = 0
    if sign_ins is not None:
        if not await enrichment.has_sign_ins(conn, tid):
            assert await enrichment.insert_sign_ins(conn, tid, sign_ins, flag=flag)
            written += len({user for user, at in sign_ins if at is not None})
        else:
            await enrichment.copy_sign_ins(conn, sign_ins)
            async with conn.transaction():
                written += await enrichment.apply_sign_ins(conn, tid, flag=flag)
    async with conn.transaction():
        if mfa:
            await enrichment.copy_mfa(conn, mfa)
        if devices:
            await enrichment.copy_devices(conn, devices)
        return written + await enrichment.apply_enrichment(conn, tid, mfa=mfa is not None,
                                                           devices=devices is not None, flag=flag)


async def rows(conn: asyncpg.Connection, tid: str) -> dict[str, tuple[Any, ...]]:
    found = await conn.fetch(
        """SELECT COALESCE(e.id, s.id) AS id, s.last_sign_in_at, e.mfa, COALESCE(e.device_macs, '{}') AS macs
           FROM (SELECT * FROM entra_user_enrichment WHERE tenant_id = $1) e
           FULL JOIN (SELECT * FROM entra_user_sign_ins WHERE tenant_id = $1) s ON s.id = e.id""", tid)
    return {r["id"]: (r["last_sign_in_at"], r["mfa"], list(r["macs"])) for r in found}


async def flagged(conn: asyncpg.Connection, tid: str) -> set[str]:
    ids = {r[0] for r in await conn.fetch("SELECT id FROM entra_user_dirty WHERE tenant_id = $1", tid)}
    await conn.execute("DELETE FROM entra_user_dirty WHERE tenant_id = $1", tid)
    return ids


async def test_listings_land_once_and_an_unchanged_pass_writes_nothing(pool: asyncpg.Pool) -> None:
    tid = f"t-{uuid.uuid4()}"
    async with pool.acquire() as conn:
        written = await apply(conn, tid, sign_ins=[("u1", T1), ("u2", None)], mfa=[("u1", MFA)],
                              devices=[("u1", "aabbccddee01"), ("u1", "aabbccddee02"), ("u1", "aabbccddee01")])
        assert written == 2  # u1's sign-in, u1's MFA and devices; u2 never signed in and has nothing else
        assert await rows(conn, tid) == {"u1": (T1, MFA, ["aabbccddee01", "aabbccddee02"])}
        assert await flagged(conn, tid) == {"u1"}
        again = await apply(conn, tid, sign_ins=[("u1", T1), ("u2", None)], mfa=[("u1", MFA)],
                            devices=[("u1", "aabbccddee02"), ("u1", "aabbccddee01")])
        assert again == 0 and await flagged(conn, tid) == set()


async def test_a_failed_listing_keeps_its_column_and_a_complete_one_clears_absent_users(pool: asyncpg.Pool) -> None:
    tid = f"t-{uuid.uuid4()}"
    async with pool.acquire() as conn:
        await apply(conn, tid, sign_ins=[("u1", T1), ("u2", T1)], mfa=[("u1", MFA)], devices=[("u2", "aabbccddee03")])
        await flagged(conn, tid)
        # MFA and devices could not be read this time: what is known stays; the sign-in moved on for u1, and u2
        # is no longer in the sign-in listing.
        written = await apply(conn, tid, sign_ins=[("u1", T2)], mfa=None, devices=None)
        assert written == 2
        assert await rows(conn, tid) == {"u1": (T2, MFA, []), "u2": (None, None, ["aabbccddee03"])}
        assert await flagged(conn, tid) == {"u1", "u2"}


async def test_first_listing_does_not_flag_when_told_not_to(pool: asyncpg.Pool) -> None:
    tid = f"t-{uuid.uuid4()}"
    async with pool.acquire() as conn:
        assert await apply(conn, tid, sign_ins=[("u1", T1)], flag=False) == 1
        assert await flagged(conn, tid) == set()


async def test_mirror_users_load_with_their_enrichment_and_groups_in_the_order_asked(pool: asyncpg.Pool) -> None:
    from worker.core.model import Mfa, MirrorUser
    from worker.store.mirror import load_mirror_users, mirror_users_after

    tid = f"t-{uuid.uuid4()}"
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO entra_users (tenant_id, id, display_name, mail, business_phones, account_enabled,
                                        assigned_licenses, removed, content_hash)
               VALUES ($1, 'u1', 'Ann Lee', 'ann@x.test', '{"+1 555 0100"}', true, '{sku-a}', NULL, '\\x00'),
                      ($1, 'u2', 'Bo', NULL, '{}', false, '{}', 'changed', '\\x00')""", tid)
        await apply(conn, tid, sign_ins=[("u1", T2)], mfa=[("u1", MFA)], devices=[("u1", "aabbccddee01")])
        await conn.execute("INSERT INTO entra_group_members (tenant_id, group_id, member_id, member_type) VALUES"
                           " ($1, 'parent', 'child', 'group'), ($1, 'child', 'u1', 'user')", tid)
        plain = await load_mirror_users(conn, tid, ["u2", "missing", "u1"], with_groups=False)
        grouped = await load_mirror_users(conn, tid, ["u1"], with_groups=True)
        assert await load_mirror_users(conn, tid, [], with_groups=True) == []
        # Keyset over the whole tenant: the same users, in id order, a page at a time.
        first_page = await mirror_users_after(conn, tid, "", limit=1, with_groups=True)
        second_page = await mirror_users_after(conn, tid, "u1", limit=5, with_groups=False)
        assert await mirror_users_after(conn, tid, "u2", limit=5) == []
    ann = MirrorUser(tenant_id=tid, id="u1", display_name="Ann Lee", mail="ann@x.test",
                     business_phones=("+1 555 0100",), account_enabled=True, license_sku_ids=("sku-a",),
                     last_sign_in_at="2026-11-20T08:00:00Z",
                     mfa=Mfa(registered=True, capable=True, methods=("microsoftAuthenticatorPush",),
                             preferred_method="push"),
                     device_macs=("aabbccddee01",))
    bo = MirrorUser(tenant_id=tid, id="u2", display_name="Bo", account_enabled=False, removed="changed")
    # Each read carries the mirror's fingerprint of the user (tests/integration/test_input_hash.py), the same
    # whichever way it is read.
    fingerprints = {u.id: u.input_hash for u in plain}
    assert None not in fingerprints.values() and fingerprints["u1"] != fingerprints["u2"]
    assert [u.input_hash for u in grouped + first_page + second_page] == [fingerprints[i] for i in ("u1", "u1", "u2")]
    plain, grouped, first_page, second_page = ([msgspec.structs.replace(u, input_hash=None) for u in read]
                                               for read in (plain, grouped, first_page, second_page))
    assert plain == [bo, ann]
    assert grouped == first_page == [msgspec.structs.replace(ann, group_ids=frozenset({"child", "parent"}))]
    assert second_page == [bo]


async def test_new_licence_names_flag_the_licensed_users_unless_told_not_to(pool: asyncpg.Pool) -> None:
    tid = f"t-{uuid.uuid4()}"
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO entra_users (tenant_id, id, assigned_licenses, content_hash)
               VALUES ($1, 'licensed', '{sku-a}', '\\x00'), ($1, 'unlicensed', '{}', '\\x00')""", tid)
        assert await enrichment.replace_skus(conn, tid, {"sku-a": "ENTERPRISEPACK"}, flag=False)
        assert await flagged(conn, tid) == set()  # a first listing: every user is flagged by it anyway
        assert not await enrichment.replace_skus(conn, tid, {"sku-a": "ENTERPRISEPACK"})
        assert await flagged(conn, tid) == set()
        assert await enrichment.replace_skus(conn, tid, {"sku-a": "SPE_E3"})
        assert await flagged(conn, tid) == {"licensed"}
        names = await conn.fetch("SELECT sku_id, sku_part_number FROM subscribed_skus WHERE tenant_id = $1", tid)
        assert [tuple(r) for r in names] == [("sku-a", "SPE_E3")]



async def test_a_first_enrichment_inserts_what_the_comparing_pass_would_write(pool: asyncpg.Pool) -> None:
    """A tenant's first pass takes a plain insert; a tenant with rows already compares. Same input, same rows
    (repeated users, a user never signed in, a failed listing), same flags."""
    listings: dict[str, Any] = {
        "sign_ins": [("u1", T1), ("u2", None), ("u1", T1), ("u3", T2)],
        "mfa": None,  # failed: column left as it was (nothing, for a new tenant)
        "devices": [("u2", "aabbccddee02"), ("u2", "aabbccddee01"), ("u4", "aabbccddee03"), ("u2", "aabbccddee02")],
    }
    first, compared = f"t-{uuid.uuid4()}", f"t-{uuid.uuid4()}"
    async with pool.acquire() as conn:
        await apply(conn, compared, sign_ins=[("old", T1)], devices=[("old", "aabbccddee09")])  # compares from now on
        await flagged(conn, compared)
        assert await apply(conn, first, **listings) == 2 + 2  # u1 and u3 signed in; u2 and u4 have devices
        assert await apply(conn, compared, **listings) == 2 + 2 + 2  # and `old` lost its sign-in and its device
        expected = {"u1": (T1, None, []), "u3": (T2, None, []), "u2": (None, None, ["aabbccddee01", "aabbccddee02"]),
                    "u4": (None, None, ["aabbccddee03"])}
        assert await rows(conn, first) == expected
        assert await rows(conn, compared) == expected | {"old": (None, None, [])}
        assert await flagged(conn, first) == {"u1", "u2", "u3", "u4"}
        assert await flagged(conn, compared) == {"u1", "u2", "u3", "u4", "old"}


async def test_a_user_repeated_across_first_listing_batches_switches_to_comparing_without_losing_a_value(
    pool: asyncpg.Pool,
) -> None:
    """Graph may list a user twice. A first listing COPies straight in until a batch repeats a user of an
    earlier one; then what it wrote moves to the stage and the whole listing is compared at its end."""
    tid = f"t-{uuid.uuid4()}"
    async with pool.acquire() as conn:
        await enrichment.stage_enrichment(conn)
        assert await enrichment.insert_sign_ins(conn, tid, [("u1", T1), ("u2", T1), ("u2", T2)])
        assert await flagged(conn, tid) == {"u1", "u2"}
        second = [("u3", T2), ("u1", T2)]
        assert not await enrichment.insert_sign_ins(conn, tid, second)  # u1 again: nothing written
        assert await rows(conn, tid) == {"u1": (T1, None, []), "u2": (T2, None, [])}
        await enrichment.stage_written_sign_ins(conn, tid)
        await enrichment.copy_sign_ins(conn, second)
        async with conn.transaction():
            assert await enrichment.apply_sign_ins(conn, tid) == 2  # u3 is new; u1 takes its latest time
        assert await rows(conn, tid) == {"u1": (T2, None, []), "u2": (T2, None, []), "u3": (T2, None, [])}
        assert await flagged(conn, tid) == {"u1", "u3"}
