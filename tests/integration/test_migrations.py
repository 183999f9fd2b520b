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
        applied = await migrate(fresh_database_url)
        assert applied[:2] == ["0002_enrichment_table_and_journal", "0003_sign_ins_table"]
        assert applied == [v for v, _ in migration_files()][1:]  # and every later one
        moved = await conn.fetch("SELECT id, mfa::text, device_macs FROM entra_user_enrichment ORDER BY id")
        assert [tuple(r) for r in moved] == [("with", '{"registered": true}', ["aabbccddee01"])]
        signed_in = await conn.fetch("SELECT id, last_sign_in_at::date::text FROM entra_user_sign_ins ORDER BY id")
        assert [tuple(r) for r in signed_in] == [("signed-in", "2026-11-02"), ("with", "2026-11-01")]
        assert await conn.fetchval("SELECT count(*) FROM entra_users") == 3
    finally:
        await conn.close()


async def test_upper_case_guid_tenant_ids_move_to_lower_case_with_everything_keyed_by_them(
    fresh_database_url: str,
) -> None:
    """0005: a GUID tenant id registered as typed becomes lower-case in every table that keys by it; a tenant
    registered in both forms, and a domain-name id, are left as they are."""
    upper, twin = "5CF09A42-E7CF-497E-9C71-0D3E8034CBBB", "0AA1B2C3-0000-4000-8000-00000000000A"
    conn = await asyncpg.connect(fresh_database_url)
    try:
        await conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY,"
                           " applied_at timestamptz NOT NULL DEFAULT now())")
        for version, sql in migration_files():
            if version < "0005":
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
        for tid in (upper, twin, twin.lower(), "contoso.onmicrosoft.com"):
            await conn.execute("INSERT INTO microsoft_tenants (tenant_id, display_name, client_id, client_secret)"
                               " VALUES ($1, 'x', 'c', 's')", tid)
        psa = await conn.fetchval("INSERT INTO psa_tenants (name, microsoft_tenant_id) VALUES ('p', $1)"
                                  " RETURNING id", upper)
        org = await conn.fetchval("INSERT INTO organizations (name, psa_tenant_id) VALUES ('o', $1) RETURNING id",
                                  psa)
        await conn.execute("INSERT INTO entra_users (tenant_id, id, content_hash) VALUES ($1, 'u1', '\\x00')", upper)
        await conn.execute("INSERT INTO delta_links (tenant_id, resource, link) VALUES ($1, 'users', 'l')", upper)
        await conn.execute("INSERT INTO end_users (organization_id, sync_state, entra_tenant_id, entra_object_id)"
                           " VALUES ($1, 'synced', $2, 'u1')", org, upper)
        assert await migrate(fresh_database_url) == [v for v, _ in migration_files() if v >= "0005"]
        tenants = {r[0] for r in await conn.fetch("SELECT tenant_id FROM microsoft_tenants")}
        assert tenants == {upper.lower(), twin, twin.lower(), "contoso.onmicrosoft.com"}
        assert await conn.fetchval("SELECT microsoft_tenant_id FROM psa_tenants WHERE id = $1", psa) == upper.lower()
        for table, column in (("entra_users", "tenant_id"), ("delta_links", "tenant_id"),
                              ("end_users", "entra_tenant_id")):
            assert await conn.fetchval(f"SELECT {column} FROM {table}") == upper.lower(), table
    finally:
        await conn.close()


async def test_held_runs_keep_the_newest_per_organization(fresh_database_url: str) -> None:
    """0007: an Organization with several held runs (each change batch used to open one) keeps the newest held;
    the older ones read succeeded, saying so; from then on the database refuses a second held run."""
    files = dict(migration_files())
    earlier = [v for v in files if v < "0007_held_runs"]
    conn = await asyncpg.connect(fresh_database_url)
    try:
        await conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY,"
                           " applied_at timestamptz NOT NULL DEFAULT now())")
        for version in earlier:
            await conn.execute(files[version])
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
        psa = await conn.fetchval("INSERT INTO psa_tenants (name) VALUES ('p') RETURNING id")
        orgs = [await conn.fetchval("INSERT INTO organizations (name, psa_tenant_id) VALUES ($1, $2) RETURNING id",
                                    name, psa) for name in ("a", "b")]
        runs = {}
        for key, org, minutes in (("a-old", orgs[0], 3), ("a-mid", orgs[0], 2), ("a-new", orgs[0], 1),
                                  ("b-only", orgs[1], 5)):
            runs[key] = await conn.fetchval(
                "INSERT INTO sync_runs (kind, organization_id, status, requested_at)"
                " VALUES ('delta', $1, 'held', now() - make_interval(mins => $2)) RETURNING id", org, minutes)
        assert "0007_held_runs" in await migrate(fresh_database_url)
        status = {k: await conn.fetchval("SELECT status FROM sync_runs WHERE id = $1", v) for k, v in runs.items()}
        assert status == {"a-old": "succeeded", "a-mid": "succeeded", "a-new": "held", "b-only": "held"}
        warning = await conn.fetchval("SELECT warnings::text FROM sync_runs WHERE id = $1", runs["a-old"])
        assert "superseded" in warning
        try:
            await conn.execute("UPDATE sync_runs SET status = 'held' WHERE id = $1", runs["a-old"])
        except asyncpg.UniqueViolationError:
            pass
        else:
            raise AssertionError("a second held run of one Organization was accepted")
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
