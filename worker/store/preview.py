"""The filter preview's reads: a chunk's users, and what `sync.load_end_users` returns for them, at once.

The preview (`worker.engine.preview`) runs `reconcile` over every mirror user of a tenant, chunk by chunk.
`chunk_users` reads a keyset chunk of the mirror in three parts: the *settled* users (their End User was
written by the sync from the inputs they have now: PostgreSQL compares the input hashes) and the users without
an End User, both with only what the filters read of them, and the others whole, as
`mirror.mirror_users_after` reads them. For the users read whole the preview needs
the same two maps the sync's `load_end_users` gives: the Organization's End Users linked to them, and those
holding one of their addresses. Read with one index probe per user and per address, and decoded row by row
(with the `microsoft` object, which `reconcile` never reads), that was a third of the preview's time. Here one
query per chunk reads the linked End Users in one range of the (organization, tenant, object id) key and
probes the email index only for the other holders; PostgreSQL builds one JSON array that msgspec decodes
straight into `StoredEndUser`.

The maps are the same as `load_end_users`'s: `tests/admin/test_preview_reads.py` compares them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence

import msgspec

from worker.core.model import END_USER_FIELDS, MirrorUser, ScopedUser, StoredEndUser
from worker.store import Conn
from worker.store.mirror import full_row, inputs_hash


@contextlib.asynccontextmanager
async def one_snapshot(first: Conn, others: Sequence[Conn] = ()) -> AsyncIterator[None]:
    """Read-only REPEATABLE READ transactions on `first` and `others` that all see `first`'s snapshot
    (`pg_export_snapshot` / `SET TRANSACTION SNAPSHOT`), so every read sees the same mirror and End Users,
    whichever connection makes it.

    Each query is planned for its values (`plan_cache_mode`): the chunk queries' generic plans, which the
    prepared statements switch to after five runs, guessed the sizes of their arrays and ran six times slower."""
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(first.transaction(isolation="repeatable_read", readonly=True))
        if others:
            snapshot = await first.fetchval("SELECT pg_export_snapshot()")
            for other in others:
                await stack.enter_async_context(other.transaction(isolation="repeatable_read", readonly=True))
                await other.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        for conn in (first, *others):
            await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        yield


# The last id of every `size`-th mirror user of a tenant, in id order: where keyset chunks of that size end
# (an index-only scan of the tenant's ids).
_CHUNK_ENDS = """
    SELECT id FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM entra_users WHERE tenant_id = $1) t
    WHERE n % $2 = 0 ORDER BY id"""


async def chunk_starts(conn: Conn, tenant_id: str, size: int) -> list[str]:
    """Where each keyset chunk of `size` mirror users starts (the id after which it reads): "" first, then the
    last id of each full chunk. Chunks read from these on one snapshot are the chunks read one after another."""
    return ["", *(r[0] for r in await conn.fetch(_CHUNK_ENDS, tenant_id, size))]


# A keyset chunk of the tenant's mirror users in id order, in three parts, each in id order:
# - *settled* users, whose Organization's End User holds their projection already (`synced`, written from the
#   inputs the user has now: its input hash is `projection.input_hash` of the user with $4, the Organization's
#   `org_inputs_hash`) and who are not leavers: only what the filters read of them (`ScopedUser`; of its
#   sections only those in $6, mail and UPN always);
# - *unlinked* users, without an End User in the Organization: the same, with what says whether they left;
# - the others whole, as `mirror.mirror_users_after` reads them without groups.
# $1 tenant, $2 after, $3 limit, $5 Organization.
_SCOPED = """u.id, CASE WHEN 'user_types' = ANY($6::text[]) THEN u.user_type END,
    CASE WHEN 'departments' = ANY($6::text[]) THEN u.department END,
    CASE WHEN 'office_locations' = ANY($6::text[]) THEN u.office_location END, u.mail, u.user_principal_name"""
_CHUNK_USERS = f"""
    WITH page AS MATERIALIZED (SELECT * FROM entra_users WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3),
    x AS (SELECT id, mfa, device_macs FROM entra_user_enrichment
          WHERE tenant_id = $1 AND id > $2 AND id <= (SELECT max(id) FROM page)),
    s AS (SELECT id, last_sign_in_at FROM entra_user_sign_ins
          WHERE tenant_id = $1 AND id > $2 AND id <= (SELECT max(id) FROM page)),
    l AS (SELECT e.entra_object_id AS id, e.sync_state, e.input_hash FROM end_users e
          WHERE e.organization_id = $5::uuid AND e.entra_tenant_id = $1 AND e.entra_object_id > $2
            AND e.entra_object_id <= (SELECT max(id) FROM page)),
    j AS (SELECT u.*, x.mfa, x.device_macs, s.last_sign_in_at
          FROM page u LEFT JOIN x ON x.id = u.id LEFT JOIN s ON s.id = u.id),
    f AS (SELECT u.*, CASE
              WHEN l.id IS NULL THEN 'unlinked'
              WHEN l.sync_state = 'synced' AND l.input_hash IS NOT NULL AND u.removed IS NULL
                   AND u.account_enabled IS NOT FALSE AND l.input_hash = sha256({inputs_hash("u")} || $4)
              THEN 'settled' ELSE 'whole' END AS part
          FROM j u LEFT JOIN l ON l.id = u.id)
    SELECT json_build_array(
        COALESCE(json_agg(json_build_array({_SCOPED}) ORDER BY u.id) FILTER (WHERE u.part = 'settled'), '[]'),
        COALESCE(json_agg(json_build_array({_SCOPED}, u.removed, u.account_enabled) ORDER BY u.id)
                     FILTER (WHERE u.part = 'unlinked'), '[]'),
        COALESCE(json_agg(json_build_array({full_row("'{}'::text[]")}) ORDER BY u.id) FILTER (WHERE u.part = 'whole'),
                 '[]'))::text
    FROM f u"""
_users_decoder = msgspec.json.Decoder(tuple[list[ScopedUser], list[ScopedUser], list[MirrorUser]])


async def chunk_users(
    conn: Conn, *, tenant_id: str, organization_id: str, after: str, limit: int, org_hash: bytes,
    sections: Sequence[str],
) -> tuple[list[ScopedUser], list[ScopedUser], list[MirrorUser]]:
    """The `limit` mirror users of `tenant_id` after `after` (see `_CHUNK_USERS`): the settled ones and the
    unlinked ones with only the filter `sections` asked for (and mail and UPN), the others whole, without
    groups. `org_hash`: `projection.org_inputs_hash` of the Organization."""
    return _users_decoder.decode(await conn.fetchval(
        _CHUNK_USERS, tenant_id, after, limit, org_hash, organization_id, list(sections)))


class _Row(StoredEndUser, frozen=True, kw_only=True, array_like=True):
    """A `StoredEndUser` read from a JSON array in field order (decoded faster than an object with keys)."""


def _element(field: str) -> str:
    if field == "fields":
        return "json_build_object(" + ", ".join(f"'{f}', e.{f}" for f in END_USER_FIELDS) + ")"
    return {
        "microsoft": "NULL",  # never read by `reconcile`: left out
        "content_hash": "encode(e.content_hash, 'base64')",
        "input_hash": "encode(e.input_hash, 'base64')",
        "asset_ids": "COALESCE((SELECT array_agg(a.asset_id) FROM end_user_assets a WHERE a.end_user_id = e.id),"
                     " '{}')",
    }.get(field, f"e.{field}")


# Each End User as [lower(email) as PostgreSQL folds it, the End User in `_Row`'s field order].
_END_USER_JSON = ("json_build_array(lower(e.email), json_build_array("
                  + ", ".join(map(_element, _Row.__struct_fields__)) + "))")

# $1 organization, $2 tenant, $3 the chunk's users (in id order, within one keyset chunk), $4 their addresses
# (lower-cased).
_CHUNK_END_USERS = f"""
    WITH linked AS (  -- one range scan of the chunk's ids, kept for the users asked for
        SELECT e.* FROM end_users e
        WHERE e.organization_id = $1::uuid AND e.entra_tenant_id = $2
          AND e.entra_object_id >= ($3::text[])[1] AND e.entra_object_id <= ($3::text[])[cardinality($3::text[])]
          AND e.entra_object_id IN (SELECT unnest($3::text[]))),
    holders AS (  -- emails are unique per Organization: an address a linked End User holds has no other holder
        SELECT e.* FROM (SELECT email FROM unnest($4::text[]) AS k(email)
                         WHERE email NOT IN (SELECT lower(l.email) FROM linked l WHERE l.email IS NOT NULL)) AS k,
                        LATERAL (
            SELECT * FROM end_users e WHERE e.organization_id = $1::uuid AND lower(e.email) = k.email
              AND e.email IS NOT NULL OFFSET 0) AS e
        WHERE e.id NOT IN (SELECT l.id FROM linked l))
    SELECT COALESCE(json_agg({_END_USER_JSON}), '[]')::text
    FROM (SELECT * FROM linked UNION ALL SELECT * FROM holders) e"""

_decoder = msgspec.json.Decoder(list[tuple[str | None, _Row]])


async def chunk_end_users(
    conn: Conn, *, organization_id: str, tenant_id: str, ids: Sequence[str], keys: Iterable[str],
) -> tuple[dict[str, StoredEndUser], dict[str, list[StoredEndUser]]]:
    """`load_end_users` for mirror users `ids`, in id order, all of one keyset chunk.

    `keys`: these users' addresses (`projection.email_keys`). Returns the End Users linked to `ids` by
    object id, and the End Users holding each of `keys` by their lower-cased email.
    """
    if not ids:
        return {}, {}
    keys = sorted(set(keys))
    rows = _decoder.decode(await conn.fetchval(_CHUNK_END_USERS, organization_id, tenant_id, list(ids), keys))
    wanted_ids, wanted_keys = set(ids), set(keys)
    linked: dict[str, StoredEndUser] = {}
    by_email: dict[str, list[StoredEndUser]] = {}
    for folded, e in rows:
        if e.entra_tenant_id == tenant_id and e.entra_object_id in wanted_ids:
            linked[e.entra_object_id] = e
        if folded in wanted_keys and (email := e.fields.get("email")):
            by_email.setdefault(email.lower(), []).append(e)
    return linked, by_email


# Every group with members in the tenant: a loose index scan of the membership key (one probe per group).
_GROUPS_WITH_MEMBERS = """
    WITH RECURSIVE g(id) AS (
        SELECT min(group_id) FROM entra_group_members WHERE tenant_id = $1
      UNION ALL
        SELECT (SELECT min(group_id) FROM entra_group_members WHERE tenant_id = $1 AND group_id > g.id)
        FROM g WHERE g.id IS NOT NULL)
    SELECT id FROM g WHERE id IS NOT NULL"""
# Who is a member of each of $2, directly or through nested groups: the sync's transitive membership
# (`mirror._MEMBERSHIPS`, which climbs from each user) walked down from the groups instead.
_MEMBERS_OF = """
    WITH RECURSIVE d(root, member_id) AS (
        SELECT group_id, member_id FROM entra_group_members WHERE tenant_id = $1 AND group_id = ANY($2::text[])
      UNION
        SELECT d.root, m.member_id FROM d JOIN entra_group_members m
            ON m.tenant_id = $1 AND m.group_id = d.member_id)
    SELECT member_id, array_agg(root) FROM d GROUP BY member_id"""


async def groups_with_members(conn: Conn, tenant_id: str) -> list[str]:
    return [r[0] for r in await conn.fetch(_GROUPS_WITH_MEMBERS, tenant_id)]


async def members_of(conn: Conn, tenant_id: str, group_ids: Sequence[str]) -> dict[str, frozenset[str]]:
    """Each direct or nested member of `group_ids`, with the ones of `group_ids` it belongs to."""
    if not group_ids:
        return {}
    return {r[0]: frozenset(r[1]) for r in await conn.fetch(_MEMBERS_OF, tenant_id, list(group_ids))}


async def sample_details(conn: Conn, *, tenant_id: str, organization_id: str, object_ids: Sequence[str]
                         ) -> dict[str, tuple[str | None, str | None]]:
    """Display name and linked End User id of each of `object_ids` (settled users a preview shows as samples)."""
    rows = await conn.fetch(
        """SELECT u.id, u.display_name, e.id::text FROM entra_users u
           LEFT JOIN end_users e ON e.organization_id = $2::uuid AND e.entra_tenant_id = $1 AND e.entra_object_id = u.id
           WHERE u.tenant_id = $1 AND u.id = ANY($3::text[])""",
        tenant_id, organization_id, list(object_ids))
    return {r[0]: (r[1], r[2]) for r in rows}
