"""The console benchmark's world (`worker.bench.console`), written by COPY: a mapped tenant, one enabled
Organization, its mirror users in twelve teams nested in one group, linked End Users, a day of runs and a
review item, then planner statistics. Dev tooling: nothing of the product calls it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg

from worker.store import Conn

MIRROR_SEED_COLUMNS = ("tenant_id", "id", "display_name", "given_name", "surname", "mail", "user_principal_name",
                       "department", "office_location", "user_type", "account_enabled", "content_hash")
END_USER_SEED_COLUMNS = ("organization_id", "first_name", "last_name", "email", "job_title", "sync_state",
                         "entra_tenant_id", "entra_object_id", "microsoft", "last_synced_at")
Rows = list[tuple[Any, ...]]


async def seed_console_bench(
    pool: asyncpg.Pool, *, tenant_id: str, filters: dict[str, Any], rows: Callable[[str], tuple[Rows, Rows]],
) -> dict[str, Any]:
    """Seed the world (`rows(org_id)` gives the mirror users and End Users in MIRROR_SEED_COLUMNS /
    END_USER_SEED_COLUMNS order). Returns the ids the pages need."""
    async with pool.acquire() as conn:
        psa, org = await _configuration(conn, tenant_id=tenant_id, filters=filters)
        mirror, end_users = rows(org)
        await conn.copy_records_to_table("entra_users", records=mirror, columns=MIRROR_SEED_COLUMNS)
        await _groups(conn, tenant_id=tenant_id, mirror=mirror)
        await conn.copy_records_to_table("end_users", records=end_users, columns=END_USER_SEED_COLUMNS)
        await _history(conn, tenant_id=tenant_id, org=org, mirror=mirror, end_users=len(end_users))
        for table in ("entra_users", "end_users", "entra_group_members"):
            await conn.execute(f"VACUUM ANALYZE {table}")
        some = await conn.fetchval("SELECT id::text FROM end_users WHERE organization_id = $1::uuid"
                                   " ORDER BY id LIMIT 1 OFFSET $2", org, len(end_users) // 2)
    return {"tenant_id": tenant_id, "psa_id": psa, "org_id": org, "end_user_id": some}


async def _configuration(conn: Conn, *, tenant_id: str, filters: dict[str, Any]) -> tuple[str, str]:
    """The tenant, its PSA tenant and an Organization with user sync enabled; (PSA tenant id, Organization id)."""
    await conn.execute("INSERT INTO microsoft_tenants (tenant_id, display_name, client_id, client_secret)"
                       " VALUES ($1, 'contoso.onmicrosoft.com', 'cid', 'secret')", tenant_id)
    psa = await conn.fetchval("INSERT INTO psa_tenants (name, microsoft_tenant_id) VALUES ('Bench MSP', $1)"
                              " RETURNING id::text", tenant_id)
    org = await conn.fetchval("INSERT INTO organizations (name, psa_tenant_id) VALUES ('Contoso', $1::uuid)"
                              " RETURNING id::text", psa)
    await conn.execute("INSERT INTO org_user_syncs (organization_id, status, filters) VALUES ($1::uuid,"
                       " 'enabled', $2)", org, filters)
    return psa, org


async def _groups(conn: Conn, *, tenant_id: str, mirror: Rows) -> None:
    """Groups as a tenant has them: "All staff" holds twelve teams, each user is in one team."""
    teams = [f"team-{i:02d}" for i in range(12)]
    await conn.copy_records_to_table(
        "entra_groups", records=[(tenant_id, "all-staff", "All staff")]
        + [(tenant_id, t, f"Team {t[-2:]}") for t in teams], columns=("tenant_id", "id", "display_name"))
    await conn.copy_records_to_table(
        "entra_group_members", records=[(tenant_id, "all-staff", t, "group") for t in teams]
        + [(tenant_id, teams[i % 12], m[1], "user") for i, m in enumerate(mirror)],
        columns=("tenant_id", "group_id", "member_id", "member_type"))


async def _history(conn: Conn, *, tenant_id: str, org: str, mirror: Rows, end_users: int) -> None:
    """A resync every two hours of the last day, and one open review item."""
    await conn.execute(
        "INSERT INTO sync_runs (kind, organization_id, tenant_id, status, counts, requested_at, started_at,"
        " finished_at) SELECT 'resync', $1::uuid, $2, 'succeeded',"
        " jsonb_build_object('updated', 40 + h, 'unchanged', $3::int),"
        " now() - make_interval(hours => h), now() - make_interval(hours => h),"
        " now() - make_interval(hours => h) + interval '7 seconds' FROM generate_series(0, 23, 2) h",
        org, tenant_id, end_users,
    )
    await conn.execute("INSERT INTO review_items (organization_id, entra_tenant_id, entra_object_id, reason)"
                       " VALUES ($1::uuid, $2, $3, 'several End Users share this email')",
                       org, tenant_id, mirror[min(5, len(mirror) - 1)][1])
