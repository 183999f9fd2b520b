"""The filter dialog's options: each filter section's values seen in an Organization's tenant mirror, with
user counts, read from the counts kept as the mirror is written (migrations 0009 and 0011), and the same
counted from scratch (what the kept counts must equal).
"""

from __future__ import annotations

from typing import Any

from worker.store import Conn
from worker.store.mapping import mapped_tenant
from worker.store.records import PoolQueries, Row, record

# tests/admin/test_preview.py checks their counts. (The preview runs the sync's own code: worker/engine/preview.py.)
# No regular expressions: the text after the last "@" is the first part of the reversed text (split_part),
# and a guest's home domain the text after the last "_" of the part before "#ext#".
_UPN = "lower(btrim(u.user_principal_name))"
_IS_GUEST = f"position('#ext#' in {_UPN}) > 0"
_GUEST_LOCAL = f"split_part({_UPN}, '#ext#', 1)"
_MAIL_DOMAIN = ("CASE WHEN position('@' in u.mail) > 0"
                " THEN lower(btrim(reverse(split_part(reverse(u.mail), '@', 1)))) END")
_UPN_DOMAIN = (
    f"CASE WHEN {_IS_GUEST} THEN CASE WHEN position('_' in {_GUEST_LOCAL}) > 0"
    f" THEN reverse(split_part(reverse({_GUEST_LOCAL}), '_', 1)) ELSE '' END"
    f" WHEN position('@' in {_UPN}) > 0 THEN btrim(reverse(split_part(reverse({_UPN}), '@', 1))) END"
)

# One scan of the tenant's users, five (section, value) pairs each, counted by a hash aggregate: each user has
# one value per section (a domain shared by mail and UPN is given once), so count(*) counts users without the
# sorts count(DISTINCT …) needs.
_OPTION_VALUES_SQL = f"""
SELECT v.section, min(v.value) AS value, count(*) AS count
FROM (SELECT btrim(u.user_type) AS user_type, btrim(u.office_location) AS office_location,
             btrim(u.department) AS department, {_MAIL_DOMAIN} AS mail_domain, {_UPN_DOMAIN} AS upn_domain
      FROM entra_users u WHERE u.tenant_id = $1 AND u.removed IS NULL) u
CROSS JOIN LATERAL (VALUES
    ('user_types', u.user_type, lower(u.user_type)),
    ('office_locations', u.office_location, lower(u.office_location)),
    ('departments', u.department, lower(u.department)),
    ('domains', u.mail_domain, u.mail_domain),
    ('domains', u.upn_domain, CASE WHEN u.upn_domain IS DISTINCT FROM u.mail_domain THEN u.upn_domain END)
) AS v(section, value, k)
WHERE v.k IS NOT NULL AND v.k <> ''
GROUP BY v.section, v.k
ORDER BY v.section, count DESC, value
"""

# Each group's users, transitively: the closure of nested groups, then the distinct (group, user) pairs
# counted by hash aggregates.
_OPTION_GROUPS_SQL = """
WITH RECURSIVE closure(root, id) AS (
    SELECT g.id, g.id FROM entra_groups g WHERE g.tenant_id = $1 AND g.removed IS NULL
    UNION
    SELECT c.root, m.member_id FROM closure c
    JOIN entra_group_members m ON m.tenant_id = $1 AND m.group_id = c.id AND m.member_type = 'group'
),
members AS (
    SELECT DISTINCT c.root, m.member_id FROM closure c
    JOIN entra_group_members m ON m.tenant_id = $1 AND m.group_id = c.id AND m.member_type = 'user'
    JOIN entra_users u ON u.tenant_id = $1 AND u.id = m.member_id AND u.removed IS NULL
),
counts AS (SELECT root, count(*) AS count FROM members GROUP BY root)
SELECT g.id, g.display_name AS name, coalesce(n.count, 0) AS count
FROM entra_groups g LEFT JOIN counts n ON n.root = g.id
WHERE g.tenant_id = $1 AND g.removed IS NULL
ORDER BY count DESC, g.display_name, g.id
"""

# The kept value counts (migration 0009), in the order the from-scratch SQL gives.
_OPTION_FACETS_SQL = """
SELECT section, coalesce(value, key) AS value, count FROM mirror_facets
WHERE tenant_id = $1 AND count > 0 ORDER BY section, count DESC, value
"""


async def _value_counts(conn: Conn, tenant_id: str) -> list[Row]:
    """The kept value counts, with the `total` row. A bulk mirror write (migration 0011: a statement of more than
    500 users, as a full listing writes) only marked them stale; the first read after it recounts them once
    from scratch, holding the tenant's counts lock (so every write the recount replaces has committed). When a
    writer holds that lock now, the counts are computed from scratch for this read only."""
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM mirror_facets_stale WHERE tenant_id = $1)", tenant_id):
        return list(await conn.fetch(_OPTION_FACETS_SQL, tenant_id))
    async with conn.transaction():  # read committed: each statement after the lock sees what committed before it
        if await conn.fetchval("SELECT pg_try_advisory_xact_lock(mirror_facets_lock_key($1))", tenant_id):
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM mirror_facets_stale WHERE tenant_id = $1)",
                                   tenant_id):
                await conn.execute("SELECT mirror_facets_recount($1)", tenant_id)
            return list(await conn.fetch(_OPTION_FACETS_SQL, tenant_id))
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        total = await conn.fetchval(
            "SELECT count(*) FROM entra_users WHERE tenant_id = $1 AND removed IS NULL", tenant_id)
        values = await conn.fetch(_OPTION_VALUES_SQL, tenant_id)
    return [{"section": "total", "value": "", "count": total}, *values]


async def _group_counts(conn: Conn, tenant_id: str) -> list[dict[str, Any]]:
    """Each group's transitive user count: kept in mirror_group_counts, recounted when the memberships' version
    moved since. The recount reads one snapshot (repeatable read) with the version it belongs to; it is stored
    only if no newer count was stored meanwhile, so a slow recount never overwrites a fresher one."""
    state = await conn.fetchrow(
        "SELECT version, counted_version FROM mirror_group_count_state WHERE tenant_id = $1", tenant_id)
    if state is not None and state["counted_version"] >= state["version"]:
        rows = await conn.fetch(
            "SELECT g.id, g.display_name AS name, coalesce(c.count, 0) AS count FROM entra_groups g"
            " LEFT JOIN mirror_group_counts c ON c.tenant_id = g.tenant_id AND c.group_id = g.id"
            " WHERE g.tenant_id = $1 AND g.removed IS NULL ORDER BY count DESC, g.display_name, g.id", tenant_id)
        return [record(r) for r in rows]
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        version = await conn.fetchval(
            "SELECT version FROM mirror_group_count_state WHERE tenant_id = $1", tenant_id)
        rows = await conn.fetch(_OPTION_GROUPS_SQL, tenant_id)
    if version is not None:
        async with conn.transaction():
            newer = await conn.fetchval(
                "UPDATE mirror_group_count_state SET counted_version = $2 WHERE tenant_id = $1"
                " AND counted_version < $2 RETURNING true", tenant_id, version)
            if newer:
                await conn.execute("DELETE FROM mirror_group_counts WHERE tenant_id = $1", tenant_id)
                await conn.copy_records_to_table(
                    "mirror_group_counts", records=[(tenant_id, r["id"], r["count"]) for r in rows if r["count"]],
                    columns=("tenant_id", "group_id", "count"))
    return [record(r) for r in rows]


class FilterOptionQueries(PoolQueries):
    """The set-up dialog's filter options."""

    async def options(self, organization_id: str) -> dict[str, Any]:
        """Each filter section's values seen in the Organization's tenant mirror, with user counts.

        Read from the counts kept as the mirror is written (migration 0009: `mirror_facets`, recounted once after
        a bulk write, migration 0011; and the group counts recomputed once per change of memberships), so opening
        the set-up dialog reads a few hundred rows.
        """
        tenant_id = await mapped_tenant(self._pool, organization_id)
        async with self._pool.acquire() as conn:
            values = await _value_counts(conn, tenant_id)
            groups = await _group_counts(conn, tenant_id)
        out: dict[str, Any] = {
            "microsoft_tenant_id": tenant_id, "total_users": 0,
            "user_types": [], "domains": [], "office_locations": [], "departments": [],
        }
        for r in values:
            if r["section"] == "total":
                out["total_users"] = r["count"]
            else:
                out[r["section"]].append({"value": r["value"], "count": r["count"]})
        out["groups"] = groups
        return out

    async def options_from_scratch(self, organization_id: str) -> dict[str, Any]:
        """`options` counted over the mirror now (what the kept counts must equal; tests and checks)."""
        tenant_id = await mapped_tenant(self._pool, organization_id)
        async with self._pool.acquire() as conn:
            values = await conn.fetch(_OPTION_VALUES_SQL, tenant_id)
            groups = await conn.fetch(_OPTION_GROUPS_SQL, tenant_id)
            total = await conn.fetchval(
                "SELECT count(*) FROM entra_users WHERE tenant_id = $1 AND removed IS NULL", tenant_id
            )
        out: dict[str, Any] = {
            "microsoft_tenant_id": tenant_id, "total_users": total,
            "user_types": [], "domains": [], "office_locations": [], "departments": [],
        }
        for r in values:
            out[r["section"]].append({"value": r["value"], "count": r["count"]})
        out["groups"] = [record(r) for r in groups]
        return out
