"""Options and preview from the tenant mirror: counts by hand, the SQL checked against the pure core on a
random matrix (filters.compile_filters, projection.email_of / email_keys), and the 100,000-user timing."""

from __future__ import annotations

import random
import statistics
import time
import uuid
from typing import Any

from worker.core.filters import compile_filters, parse_filters
from worker.core.projection import email_keys, email_of
from worker.store.sync import load_mirror_users

from .conftest import ALL_FILTERS, Api, insert_end_user, seed_mirror

GROUPS = {"g-all": "All staff", "g-sales": "Sales team", "g-emea": "EMEA sales", "g-empty": "Empty"}
# g-all ⊃ g-sales ⊃ g-emea (nested), plus direct members
USERS: list[dict[str, Any]] = [
    {"id": "u1", "display_name": "Ann", "mail": "ann@contoso.com", "user_principal_name": "ann@contoso.com",
     "department": "Sales", "office_location": "Oslo", "user_type": "Member"},
    {"id": "u2", "display_name": "Bob", "mail": "bob@fabrikam.com", "user_principal_name": "bob@contoso.com",
     "department": "sales ", "office_location": "Paris", "user_type": "Member"},
    {"id": "u3", "display_name": "Cat", "mail": None, "user_principal_name": "cat_tailspin.com#EXT#@contoso.com",
     "department": "Support", "office_location": None, "user_type": "Guest"},
    {"id": "u4", "display_name": "Dan", "mail": "dan@contoso.com", "user_principal_name": "dan@contoso.com",
     "department": None, "office_location": "Oslo", "user_type": "Member"},
    {"id": "u5", "display_name": "Eve", "mail": "eve@contoso.com", "user_principal_name": "eve@contoso.com",
     "department": "Sales", "office_location": "Oslo", "user_type": "Member", "removed": "deleted"},
]
MEMBERS = [("g-all", "g-sales", "group"), ("g-sales", "g-emea", "group"), ("g-emea", "u2", "user"),
           ("g-sales", "u1", "user"), ("g-all", "u4", "user"), ("g-emea", "u5", "user")]


async def _seeded(api: Api) -> Any:
    world = await api.world()
    await seed_mirror(api.pool, world.tenant_id, USERS, groups=GROUPS, members=MEMBERS)
    return world


async def test_options_list_values_with_counts(api: Api) -> None:
    world = await _seeded(api)
    options = await api.ok("GET", f"/organizations/{world.org_id}/user-sync/options")
    assert options["total_users"] == 4
    assert options["user_types"] == [{"value": "Member", "count": 3}, {"value": "Guest", "count": 1}]
    assert options["departments"] == [{"value": "Sales", "count": 2}, {"value": "Support", "count": 1}]
    assert options["office_locations"] == [{"value": "Oslo", "count": 2}, {"value": "Paris", "count": 1}]
    assert options["domains"] == [{"value": "contoso.com", "count": 3}, {"value": "fabrikam.com", "count": 1},
                                  {"value": "tailspin.com", "count": 1}]
    assert options["groups"] == [
        {"id": "g-all", "name": "All staff", "count": 3}, {"id": "g-sales", "name": "Sales team", "count": 2},
        {"id": "g-emea", "name": "EMEA sales", "count": 1}, {"id": "g-empty", "name": "Empty", "count": 0}]


async def test_options_and_preview_need_a_mapped_tenant(api: Api) -> None:
    world = await api.world(mapped=False)
    assert (await api.call("GET", f"/organizations/{world.org_id}/user-sync/options")).status == 409
    resp = await api.call("POST", f"/organizations/{world.org_id}/user-sync/preview", {"filters": ALL_FILTERS})
    assert resp.status == 409
    assert (await api.call("GET", f"/organizations/{uuid.uuid4()}/user-sync/options")).status == 404


async def test_preview_counts_create_update_stop_and_review(api: Api) -> None:
    world = await _seeded(api)
    linked = await insert_end_user(api.pool, world.org_id, tenant_id=world.tenant_id, object_id="u1")
    gone = await insert_end_user(api.pool, world.org_id, tenant_id=world.tenant_id, object_id="u4",
                                 first_name="Dan", last_name="D")
    adopt = await insert_end_user(api.pool, world.org_id, state="manual", email="BOB@fabrikam.com")
    path = f"/organizations/{world.org_id}/user-sync/preview"
    sales = {**ALL_FILTERS, "groups": ["G-SALES"]}  # u1 directly, u2 through g-emea; u5 is removed
    preview = await api.ok("POST", path, {"filters": sales})
    assert (preview["matching"], preview["would_create"], preview["would_update"],
            preview["would_stop_updating"], preview["would_review"]) == (2, 0, 2, 1, 0)
    assert {s["end_user_id"] for s in preview["samples"]["would_update"]} == {linked, adopt}
    assert [s["end_user_id"] for s in preview["samples"]["would_stop_updating"]] == [gone]
    everyone = await api.ok("POST", path, {"filters": ALL_FILTERS})
    assert (everyone["would_create"], everyone["would_update"], everyone["would_stop_updating"]) == (1, 3, 0)
    assert [s["entra_object_id"] for s in everyone["samples"]["would_create"]] == ["u3"]
    assert everyone["samples"]["would_create"][0]["email"] is None  # a guest UPN is not an email
    nobody = await api.ok("POST", path, {"filters": {**ALL_FILTERS, "departments": ["Nobody"]}})
    assert nobody["matching"] == 0 and nobody["warnings"] == ["these filters select nobody"]
    assert nobody["would_stop_updating"] == 2


def _random_users(rng: random.Random, n: int) -> list[dict[str, Any]]:
    depts = ["Sales", "sales", " Sales ", "Support", "Engineering", None, ""]
    domains = ["contoso.com", "Contoso.COM", "fabrikam.com", "tailspin.io"]
    users = []
    for i in range(n):
        domain = rng.choice(domains)
        guest = rng.random() < 0.15
        upn = f"g{i}_{rng.choice(domains)}#EXT#@contoso.onmicrosoft.com" if guest else f"u{i}@{domain}"
        users.append({
            "id": f"m{i:04d}", "display_name": f"User {i:04d}",
            "mail": rng.choice([None, f"u{i}@{rng.choice(domains)}", f" U{i}@{domain} "]),
            "user_principal_name": upn, "department": rng.choice(depts),
            "office_location": rng.choice(["Oslo", "oslo", "Paris", None]),
            "user_type": "Guest" if guest else rng.choice(["Member", "member", None]),
            "removed": "deleted" if rng.random() < 0.05 else None,
        })
    return users


FILTER_MATRIX = [
    ALL_FILTERS,
    {**ALL_FILTERS, "departments": ["sales"]},
    {**ALL_FILTERS, "departments": ["Support", "ENGINEERING"], "office_locations": ["OSLO"]},
    {**ALL_FILTERS, "domains": ["contoso.com"]},
    {**ALL_FILTERS, "domains": ["tailspin.io", "contoso.onmicrosoft.com"]},
    {**ALL_FILTERS, "user_types": ["guest"]},
    {**ALL_FILTERS, "groups": ["gr-top"]},
    {**ALL_FILTERS, "groups": ["gr-leaf", "gr-mid"], "user_types": ["Member"]},
    {**ALL_FILTERS, "groups": ["gr-cycle-a"]},
]


async def test_preview_agrees_with_the_pure_core(api: Api) -> None:
    rng = random.Random(7)
    world = await api.world()
    users = _random_users(rng, 400)
    ids = [u["id"] for u in users]
    groups = {"gr-top": "Top", "gr-mid": "Mid", "gr-leaf": "Leaf", "gr-cycle-a": "A", "gr-cycle-b": "B"}
    members = [("gr-top", "gr-mid", "group"), ("gr-mid", "gr-leaf", "group"),
               ("gr-cycle-a", "gr-cycle-b", "group"), ("gr-cycle-b", "gr-cycle-a", "group")]
    members += [(rng.choice(list(groups)), uid, "user") for uid in rng.sample(ids, 200)]
    await seed_mirror(api.pool, world.tenant_id, users, groups=groups, members=sorted(set(members)))
    linked = {uid: await insert_end_user(api.pool, world.org_id, tenant_id=world.tenant_id, object_id=uid,
                                         state=rng.choice(["synced", "out_of_scope"]))
              for uid in rng.sample(ids, 60)}
    emails = [f"u{i}@contoso.com" for i in rng.sample(range(400), 80)]
    for email in dict.fromkeys(e.lower() for e in emails):
        await insert_end_user(api.pool, world.org_id, state="manual", email=email)
    async with api.pool.acquire() as conn:
        mirror = [u for u in await load_mirror_users(conn, world.tenant_id, ids) if u.removed is None]
        states = dict(await conn.fetch("SELECT entra_object_id, sync_state FROM end_users WHERE"
                                       " organization_id = $1 AND entra_object_id IS NOT NULL", world.org_id))
        unlinked = {r[0] for r in await conn.fetch("SELECT lower(email) FROM end_users WHERE organization_id = $1"
                                                   " AND entra_object_id IS NULL", world.org_id)}
    for filters in FILTER_MATRIX:
        keep = compile_filters(parse_filters(filters))
        matched = [u for u in mirror if keep(u)]
        expected = {"matching": len(matched), "would_create": 0, "would_update": 0, "would_review": 0}
        for u in matched:
            hits = len(set(email_keys(u)) & unlinked)
            kind = "would_update" if u.id in linked or hits == 1 else "would_create" if hits == 0 else "would_review"
            expected[kind] += 1
        matched_ids = {u.id for u in matched}
        stopped = [uid for uid, state in states.items() if state == "synced" and uid not in matched_ids]
        expected["would_stop_updating"] = len(stopped)
        preview = await api.ok("POST", f"/organizations/{world.org_id}/user-sync/preview", {"filters": filters})
        assert {k: preview[k] for k in expected} == expected, filters
        by_id = {u.id: u for u in matched}
        for sample in preview["samples"]["would_create"] + preview["samples"]["would_update"]:
            assert sample["email"] == email_of(by_id[sample["entra_object_id"]])


async def test_preview_of_100k_users_is_well_under_a_second(api: Api) -> None:
    world = await api.world()
    rng = random.Random(1)
    n = 100_000
    groups = {f"grp-{i}": f"Group {i}" for i in range(40)}
    members = {(f"grp-{i}", f"grp-{i + 1}", "group") for i in range(0, 39, 2)}
    users = []
    for i in range(n):
        uid = f"{i:08d}-0000-0000-0000-000000000000"
        domain = rng.choice(["contoso.com", "fabrikam.com"])
        users.append({"id": uid, "display_name": f"User {i}", "mail": f"user{i}@{domain}",
                      "user_principal_name": f"user{i}@contoso.com", "department": f"Dept {i % 12}",
                      "office_location": f"Office {i % 8}", "user_type": "Guest" if i % 10 == 0 else "Member"})
        members.add((f"grp-{i % 40}", uid, "user"))
    await seed_mirror(api.pool, world.tenant_id, users, groups=groups, members=members)
    async with api.pool.acquire() as conn:
        await conn.copy_records_to_table("end_users", columns=(
            "organization_id", "first_name", "email", "sync_state", "entra_tenant_id", "entra_object_id"),
            records=[(uuid.UUID(world.org_id), f"U{i}", f"user{i}@contoso.com", "synced", world.tenant_id,
                      users[i]["id"]) for i in range(0, n, 5)])
        await conn.execute("ANALYZE entra_users; ANALYZE entra_group_members; ANALYZE end_users")
    path = f"/organizations/{world.org_id}/user-sync/preview"
    cases = {
        "all": ALL_FILTERS,
        "departments+domains": {**ALL_FILTERS, "departments": ["Dept 1", "dept 2"], "domains": ["contoso.com"]},
        "nested groups": {**ALL_FILTERS, "groups": ["grp-0", "grp-10"], "user_types": ["Member"]},
    }
    timings: dict[str, float] = {}
    for name, filters in cases.items():
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            preview = await api.ok("POST", path, {"filters": filters})
            runs.append(time.perf_counter() - started)
        timings[name] = statistics.median(runs)
        assert preview["matching"] > 0
    print(f"\npreview 100k users, median of 3 (s): {timings}")
    assert max(timings.values()) < 1.0, timings
    everyone = await api.ok("POST", path, {"filters": ALL_FILTERS})
    assert (everyone["matching"], everyone["would_update"], everyone["would_create"]) == (n, n // 5, n - n // 5)

