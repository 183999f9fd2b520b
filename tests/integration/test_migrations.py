"""Migrations apply once, in order, and concurrent runs are safe."""

import asyncio

import asyncpg

from worker.store.migrations import migrate, migration_files


async def test_concurrent_migrations_apply_each_file_once(fresh_database_url: str) -> None:
    results = await asyncio.gather(*(migrate(fresh_database_url) for _ in range(4)))
    applied = [v for r in results for v in r]
    assert sorted(applied) == sorted(v for v, _ in migration_files())
    conn = await asyncpg.connect(fresh_database_url)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == [v for v, _ in migration_files()]
        assert await conn.fetchval("SELECT to_regclass('end_users') IS NOT NULL")
    finally:
        await conn.close()
    assert await migrate(fresh_database_url) == []


async def test_enrichment_moves_to_its_own_tables_with_its_values(fresh_database_url: str) -> None:
    """0002 moves sign-in, MFA and device MACs out of the mirror rows, 0003 sign-in times on into a table of
    their own, without losing a value or keeping an empty row."""
    files = dict(migration_files())
    conn = await asyncpg.connect(fresh_database_url)
    try:
        await conn.execute(files["0001_initial"])
        await conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY,"
                           " applied_at timestamptz NOT NULL DEFAULT now())")
        await conn.execute("INSERT INTO schema_migrations (version) VALUES ('0001_initial')")
        await conn.execute(
            """INSERT INTO entra_users (tenant_id, id, content_hash, last_sign_in_at, mfa, device_macs) VALUES
               ('t', 'with', '\\x00', '2026-11-01T09:30:00Z', '{"registered": true}', '{aabbccddee01}'),
               ('t', 'signed-in', '\\x00', '2026-11-02T09:30:00Z', NULL, '{}'),
               ('t', 'without', '\\x00', NULL, NULL, '{}')""")
        applied = await migrate(fresh_database_url)  # later migrations follow; these two come first, in order
        assert applied[:2] == ["0002_enrichment_table_and_journal", "0003_sign_ins_table"]
        moved = await conn.fetch("SELECT id, mfa::text, device_macs FROM entra_user_enrichment ORDER BY id")
        assert [tuple(r) for r in moved] == [("with", '{"registered": true}', ["aabbccddee01"])]
        signed_in = await conn.fetch("SELECT id, last_sign_in_at::date::text FROM entra_user_sign_ins ORDER BY id")
        assert [tuple(r) for r in signed_in] == [("signed-in", "2026-11-02"), ("with", "2026-11-01")]
        assert await conn.fetchval("SELECT count(*) FROM entra_users") == 3
    finally:
        await conn.close()


async def test_existing_synced_end_users_count_what_they_hold_as_entra_supplied(fresh_database_url: str) -> None:
    """0006: a linked End User's non-empty fields were written by the sync, so they are Entra's (a later empty
    value clears them); a manual End User's fields are the operator's."""
    files = dict(migration_files())
    conn = await asyncpg.connect(fresh_database_url)
    try:
        await conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY,"
                           " applied_at timestamptz NOT NULL DEFAULT now())")
        for version in ("0001_initial", "0002_enrichment_table_and_journal", "0003_sign_ins_table"):
            await conn.execute(files[version])
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
        psa = await conn.fetchval("INSERT INTO psa_tenants (name) VALUES ('p') RETURNING id")
        org = await conn.fetchval("INSERT INTO organizations (name, psa_tenant_id) VALUES ('o', $1) RETURNING id", psa)
        await conn.execute(
            "INSERT INTO end_users (organization_id, first_name, city, sync_state, entra_tenant_id, entra_object_id)"
            " VALUES ($1, 'Ann', 'Oslo', 'synced', 't', 'u1'), ($1, 'Bo', 'Rome', 'manual', NULL, NULL)", org)
        assert "0006_operator_ownership" in await migrate(fresh_database_url)
        rows = await conn.fetch("SELECT first_name, entra_fields, locked_fields FROM end_users ORDER BY first_name")
        assert [tuple(r) for r in rows] == [("Ann", ["first_name", "city"], []), ("Bo", [], [])]
    finally:
        await conn.close()
