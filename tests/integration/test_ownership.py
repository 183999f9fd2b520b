"""What an operator decides wins over the sync (issue 12), through the admin API, the sync engine on the Graph
simulator, PostgreSQL and the broker (the admin API publishes its commands to the session's Tansu; the tests
run the engine's unit of work for the runs it queued).

Field ownership and locks, deletes and exclusions, the journal of every kind of change, unmap/remap of
deactivated End Users, the leaver card, and undoing a sync from the wrong tenant.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from simulator.server import Simulator
from tests.admin.conftest import Api, make_settings
from tests.integration import test_sync_rules
from tests.integration.conftest import ALL, Env, graph_admin
from tests.integration.test_sync_rules import end_users, sim_control
from worker.admin.api import create_admin_app
from worker.bus import KafkaPublisher, ensure_topics
from worker.config import KafkaSettings
from worker.core.macs import normalize_mac

fresh = test_sync_rules.fresh  # the same fixture: a brand-new simulated tenant with one enabled Organization


@pytest.fixture
async def api(database_url: str, pool: asyncpg.Pool, kafka_settings: KafkaSettings, sim: Simulator
              ) -> AsyncIterator[Api]:
    """The admin API on the session database, publishing to the session broker."""
    await ensure_topics(kafka_settings)
    publisher = KafkaPublisher(kafka_settings)
    await publisher.start()
    client: Any = TestClient(TestServer(
        create_admin_app(make_settings(database_url, kafka_settings, sim), pool=pool, publisher=publisher),
        host="127.0.0.1"))
    await client.start_server()
    try:
        yield Api(client, pool, sim)
    finally:
        await client.close()
        await publisher.stop()


async def synced(fresh: Env, pool: asyncpg.Pool) -> dict[str, asyncpg.Record]:
    """The Organization's first sync; its End Users by Entra object id."""
    await fresh.engine.org_sync(fresh.tenant["tenant_id"], fresh.org_id, None)
    return await end_users(pool, fresh.org_id)


async def changes_of(api: Api, end_user_id: str) -> list[dict[str, Any]]:
    return list((await api.ok("GET", f"/end-users/{end_user_id}/changes?limit=100"))["items"])


def enabled_with(users: dict[str, asyncpg.Record], field: str) -> list[str]:
    return sorted(oid for oid, u in users.items() if u[field] and u["sync_state"] == "synced")


# ---- field ownership ------------------------------------------------------------------------------------

async def test_adoption_keeps_what_the_operator_typed_where_entra_has_no_value(
    fresh: Env, pool: asyncpg.Pool, api: Api
) -> None:
    listed = (await fresh.admin.call("GET", "/users?$select=id,mail,accountEnabled&$top=999"))["value"]
    target = next(u for u in listed if u["accountEnabled"] and u["mail"])
    await fresh.admin.call("PATCH", f"/users/{target['id']}", {
        "businessPhones": [], "streetAddress": None, "city": None, "jobTitle": "Engineer"})
    manual = await api.ok("POST", f"/organizations/{fresh.org_id}/end-users", {
        "first_name": "Typed", "email": target["mail"].upper(), "phone": "+47 555 0101", "street": "Storgata 1",
        "city": "Oslo", "job_title": "Typed title"}, status=201)

    users = await synced(fresh, pool)

    adopted = users[target["id"]]
    assert str(adopted["id"]) == manual["id"]  # adopted, not duplicated
    assert (adopted["phone"], adopted["street"], adopted["city"]) == ("+47 555 0101", "Storgata 1", "Oslo")
    assert adopted["job_title"] == "Engineer" and adopted["first_name"] != "Typed"  # Entra's values win
    # The operator's phone survives the user's next unrelated Entra change too.
    await fresh.admin.call("PATCH", f"/users/{target['id']}", {"department": "Elsewhere", "jobTitle": "Lead"})
    await fresh.engine.sync_changes(fresh.tenant["tenant_id"])
    after = (await end_users(pool, fresh.org_id))[target["id"]]
    assert (after["phone"], after["city"], after["job_title"]) == ("+47 555 0101", "Oslo", "Lead")


async def test_a_value_entra_supplied_and_later_cleared_is_cleared(fresh: Env, pool: asyncpg.Pool) -> None:
    users = await synced(fresh, pool)
    oid = enabled_with(users, "city")[0]

    await fresh.admin.call("PATCH", f"/users/{oid}", {"city": None})
    await fresh.engine.sync_changes(fresh.tenant["tenant_id"])

    assert (await end_users(pool, fresh.org_id))[oid]["city"] is None


async def test_an_operator_edit_is_locked_and_survives_the_resync_and_the_users_next_entra_changes(
    fresh: Env, pool: asyncpg.Pool, api: Api
) -> None:
    users = await synced(fresh, pool)
    oid = enabled_with(users, "job_title")[0]
    end_user = str(users[oid]["id"])

    edited = await api.ok("PATCH", f"/end-users/{end_user}", {"job_title": "Chief of Everything"})
    assert edited["locked_fields"] == ["job_title"] and edited["job_title"] == "Chief of Everything"

    tid = fresh.tenant["tenant_id"]
    await fresh.admin.call("PATCH", f"/users/{oid}", {"city": "Lima"})  # unrelated
    await fresh.engine.sync_changes(tid)
    await fresh.admin.call("PATCH", f"/users/{oid}", {"jobTitle": "Entra's title"})  # the locked field itself
    await fresh.engine.sync_changes(tid)
    await fresh.engine.resync(tid)

    row = (await end_users(pool, fresh.org_id))[oid]
    assert (row["job_title"], row["city"]) == ("Chief of Everything", "Lima")
    edit = next(c for c in await changes_of(api, end_user) if c["action"] == "edit")
    assert edit["actor"] == {"kind": "operator"}
    assert edit["fields"] == {"job_title": [users[oid]["job_title"], "Chief of Everything"]}

    # Handing the field back: the next sync fills it, with no Entra change needed.
    unlocked = await api.ok("DELETE", f"/end-users/{end_user}/locks/job_title")
    assert unlocked["locked_fields"] == []
    await fresh.engine.sync_changes(tid)
    assert (await end_users(pool, fresh.org_id))[oid]["job_title"] == "Entra's title"


async def test_edits_are_validated_and_a_manual_end_user_gets_no_locks(
    fresh: Env, pool: asyncpg.Pool, api: Api
) -> None:
    users = await synced(fresh, pool)
    end_user = str(next(iter(users.values()))["id"])
    for body, field in [({"sync_state": "manual"}, "sync_state"), ({"city": 5}, "city"),
                        ({"email": "not-an-email"}, "email"), ({"street": "x" * 257}, "street"), ({}, "body")]:
        resp = await api.call("PATCH", f"/end-users/{end_user}", body)
        assert resp.status == 400 and resp.body["error"]["field"] == field, (body, resp.body)
    taken = next(u["email"] for u in users.values() if str(u["id"]) != end_user and u["email"])
    assert (await api.call("PATCH", f"/end-users/{end_user}", {"email": taken.upper()})).status == 409
    assert (await api.call("DELETE", f"/end-users/{end_user}/locks/city")).status == 404  # not locked
    assert (await api.call("DELETE", f"/end-users/{end_user}/locks/colour")).status == 400
    assert (await end_users(pool, fresh.org_id)) == users  # nothing written

    manual = await api.ok("POST", f"/organizations/{fresh.org_id}/end-users", {"first_name": "M"}, status=201)
    edited = await api.ok("PATCH", f"/end-users/{manual['id']}", {"city": "Bergen", "phone": None})
    assert edited["city"] == "Bergen" and edited["locked_fields"] == []


# ---- deletes and exclusions -------------------------------------------------------------------------------

async def test_a_deleted_synced_end_user_is_excluded_and_never_re_created_until_included(
    fresh: Env, pool: asyncpg.Pool, api: Api
) -> None:
    users = await synced(fresh, pool)
    oid = enabled_with(users, "email")[0]
    tid = fresh.tenant["tenant_id"]

    assert (await api.call("DELETE", f"/end-users/{users[oid]['id']}")).status == 204
    await fresh.admin.call("PATCH", f"/users/{oid}", {"jobTitle": "Changed after the delete"})
    await fresh.engine.sync_changes(tid)
    await fresh.engine.resync(tid)
    await fresh.engine.org_sync(tid, fresh.org_id, None)
    assert oid not in await end_users(pool, fresh.org_id)

    exclusions = (await api.ok("GET", f"/organizations/{fresh.org_id}/exclusions"))["items"]
    assert [(x["entra_object_id"], x["how"], x["excluded_by"]) for x in exclusions] == [(oid, "deleted", "operator")]
    assert exclusions[0]["created_at"] and exclusions[0]["email"] == users[oid]["email"]

    assert (await api.call("DELETE", f"/organizations/{fresh.org_id}/exclusions/{oid}")).status == 204
    await fresh.engine.sync_changes(tid)
    assert (await end_users(pool, fresh.org_id))[oid]["job_title"] == "Changed after the delete"
    assert (await api.call("DELETE", f"/organizations/{fresh.org_id}/exclusions/{oid}")).status == 404


async def test_deleting_a_manual_end_user_excludes_nobody(fresh: Env, api: Api) -> None:
    manual = await api.ok("POST", f"/organizations/{fresh.org_id}/end-users", {"first_name": "M"}, status=201)
    assert (await api.call("DELETE", f"/end-users/{manual['id']}")).status == 204
    assert (await api.ok("GET", f"/organizations/{fresh.org_id}/exclusions"))["items"] == []
    assert (await api.call("POST", f"/end-users/{manual['id']}/exclude")).status == 404


async def test_exclude_keeps_the_record_and_stops_syncing_it_until_included(
    fresh: Env, pool: asyncpg.Pool, api: Api
) -> None:
    users = await synced(fresh, pool)
    oid = enabled_with(users, "city")[0]
    end_user = str(users[oid]["id"])
    tid = fresh.tenant["tenant_id"]

    excluded = await api.ok("POST", f"/end-users/{end_user}/exclude")
    assert excluded["sync_state"] == "excluded"
    await fresh.admin.call("PATCH", f"/users/{oid}", {"city": "Quito"})
    await fresh.engine.sync_changes(tid)
    await fresh.engine.org_sync(tid, fresh.org_id, None)
    row = (await end_users(pool, fresh.org_id))[oid]
    assert (row["sync_state"], row["city"]) == ("excluded", users[oid]["city"])  # not updated
    await fresh.admin.call("PATCH", f"/users/{oid}", {"accountEnabled": False})
    await fresh.engine.sync_changes(tid)
    assert (await end_users(pool, fresh.org_id))[oid]["sync_state"] == "excluded"  # nor deactivated

    manual = await api.ok("POST", f"/organizations/{fresh.org_id}/end-users", {"first_name": "M"}, status=201)
    assert (await api.call("POST", f"/end-users/{manual['id']}/exclude")).status == 409

    await api.ok("DELETE", f"/organizations/{fresh.org_id}/exclusions/{oid}", status=204)
    await fresh.admin.call("PATCH", f"/users/{oid}", {"accountEnabled": True})
    await fresh.engine.sync_changes(tid)
    row = (await end_users(pool, fresh.org_id))[oid]
    assert (row["sync_state"], row["city"]) == ("synced", "Quito")


# ---- the journal ------------------------------------------------------------------------------------------

async def test_the_journal_records_every_kind_of_change_with_its_actor_newest_first(
    fresh: Env, pool: asyncpg.Pool, api: Api
) -> None:
    tid = fresh.tenant["tenant_id"]
    users = await synced(fresh, pool)
    oid = enabled_with(users, "city")[0]
    end_user = str(users[oid]["id"])
    first_run = (await pool.fetchrow("SELECT id::text FROM sync_runs WHERE organization_id = $1::uuid",
                                     fresh.org_id))[0]
    await fresh.admin.call("PATCH", f"/users/{oid}", {"city": "Lima"})
    await fresh.engine.sync_changes(tid)
    await api.ok("PATCH", f"/end-users/{end_user}", {"phone": "+1 555"})
    await api.ok("DELETE", f"/end-users/{end_user}/locks/phone")
    await api.ok("POST", f"/end-users/{end_user}/exclude")
    await api.ok("DELETE", f"/organizations/{fresh.org_id}/exclusions/{oid}", status=204)
    await fresh.engine.sync_changes(tid)  # included again: the next sync resumes it
    await fresh.admin.call("PATCH", f"/users/{oid}", {"accountEnabled": False})
    await fresh.engine.sync_changes(tid)
    await api.ok("DELETE", f"/organizations/{fresh.org_id}/user-sync")

    journal = await changes_of(api, end_user)

    assert [c["action"] for c in journal] == [
        "deactivate", "update", "include", "exclude", "unlock", "edit", "update", "create"]
    by_action = {c["action"]: c for c in journal}
    assert by_action["create"]["actor"] == {"kind": "sync", "run_id": first_run}
    assert by_action["create"]["sync_state"] == [None, "synced"]
    lima = journal[-2]
    assert lima["actor"]["kind"] == "sync" and lima["fields"] == {"city": [users[oid]["city"], "Lima"]}
    assert by_action["edit"]["actor"] == {"kind": "operator"} and by_action["edit"]["fields"]["phone"][1] == "+1 555"
    assert by_action["exclude"]["sync_state"] == ["synced", "excluded"]
    assert by_action["include"]["sync_state"] == ["excluded", "sync_disabled"]
    assert journal[1]["sync_state"] == ["sync_disabled", "synced"]  # the include's next sync resumed it
    assert by_action["deactivate"]["sync_state"] == ["synced", "deactivated"]
    assert "disabled" in by_action["deactivate"]["reason"]
    assert all(c["at"] for c in journal)
    # Disabling the sync stopped the others, journalled as the operator's; the leaver stayed deactivated.
    other = str(users[enabled_with(users, "email")[-1]]["id"])
    assert (await changes_of(api, other))[0]["action"] == "disable_sync"
    assert (await changes_of(api, other))[0]["actor"] == {"kind": "operator"}
    paged = await api.ok("GET", f"/end-users/{end_user}/changes?limit=2&offset=1")
    assert [c["action"] for c in paged["items"]] == ["update", "include"]
    assert (await api.call("GET", f"/end-users/{end_user}/changes?limit=x")).status == 400


# ---- unmap and remap ------------------------------------------------------------------------------------

async def test_unmap_remap_and_disable_leave_deactivated_end_users_deactivated(
    fresh: Env, pool: asyncpg.Pool, api: Api, sim: Simulator
) -> None:
    tid = fresh.tenant["tenant_id"]
    users = await synced(fresh, pool)
    leaver = enabled_with(users, "email")[0]
    await fresh.admin.call("PATCH", f"/users/{leaver}", {"accountEnabled": False})
    await fresh.engine.sync_changes(tid)
    psa = await pool.fetchval("SELECT psa_tenant_id::text FROM organizations WHERE id = $1::uuid", fresh.org_id)

    unmapped = await api.ok("DELETE", f"/psa-tenants/{psa}/microsoft-tenant")
    states = {oid: u["sync_state"] for oid, u in (await end_users(pool, fresh.org_id)).items()}
    assert states[leaver] == "deactivated"
    assert {s for oid, s in states.items() if oid != leaver} == {"sync_disabled"}
    assert unmapped["end_users_stopped"] == len(states) - 1

    await api.ok("PUT", f"/psa-tenants/{psa}/microsoft-tenant", {"microsoft_tenant_id": tid})
    other = await sim_control(sim, "POST", "/_sim/tenants", {"users": 2})
    await api.ok("POST", "/microsoft-tenants", {
        "tenant_id": other["tenant_id"], "display_name": "Other", "client_id": other["client_id"],
        "client_secret": other["client_secret"]}, status=201)
    await fresh.engine.org_sync(tid, fresh.org_id, None)  # relinked and synced again: the leaver stays a leaver
    remapped = await api.ok("PUT", f"/psa-tenants/{psa}/microsoft-tenant", {"microsoft_tenant_id": other["tenant_id"]})
    rows = await end_users(pool, fresh.org_id)
    assert rows[leaver]["sync_state"] == "deactivated" and rows[leaver]["leaver"] is not None
    assert remapped["end_users_stopped"] == len(rows) - 1
    journal = await changes_of(api, str(rows[leaver]["id"]))
    assert "remap" not in {c["action"] for c in journal} and "unmap" not in {c["action"] for c in journal}
    some_other = next(str(r["id"]) for oid, r in rows.items() if oid != leaver)
    assert [c["action"] for c in await changes_of(api, some_other)][:1] == ["remap"]


# ---- the leaver card ------------------------------------------------------------------------------------

async def test_a_deactivated_end_user_carries_its_leaver_card(
    fresh: Env, pool: asyncpg.Pool, api: Api, sim: Simulator
) -> None:
    tid = fresh.tenant["tenant_id"]
    sim_users = sim.state.tenants[tid].users
    device = next(d for d in sim.state.tenants[tid].devices if d.get("wiFiMacAddress")
                  and sim_users[d["userId"]].data["accountEnabled"] and sim_users[d["userId"]].sign_in
                  and sim_users[d["userId"]].data["assignedLicenses"])
    asset = await api.ok("POST", f"/organizations/{fresh.org_id}/assets", {
        "name": "Laptop", "mac_addresses": [normalize_mac(device["wiFiMacAddress"])]}, status=201)
    users = await synced(fresh, pool)
    disabled = device["userId"]
    deleted = next(oid for oid in enabled_with(users, "email") if oid != disabled)
    before = await pool.fetchval("SELECT now()")
    await fresh.admin.call("PATCH", f"/users/{disabled}", {"accountEnabled": False})
    await fresh.admin.call("DELETE", f"/users/{deleted}")
    await fresh.engine.sync_changes(tid)

    card = (await api.ok("GET", f"/end-users/{users[disabled]['id']}"))["leaver"]
    microsoft = users[disabled]["microsoft"]
    assert card["evidence"] == "disabled" and "disabled" in card["reason"]
    assert card["last_sign_in_at"] == microsoft["last_sign_in_at"] is not None
    assert card["licenses"] == microsoft["licenses"] != []
    assert card["assets"] == [{"id": asset["id"], "name": "Laptop"}]
    assert datetime.fromisoformat(card["at"]) >= before
    gone = (await api.ok("GET", f"/end-users/{users[deleted]['id']}"))["leaver"]
    assert gone["evidence"] == "soft_deleted"  # Graph's DELETE is a soft delete first
    still = next(oid for oid in enabled_with(users, "email") if oid not in (disabled, deleted))
    assert (await api.ok("GET", f"/end-users/{users[still]['id']}"))["leaver"] is None

    path = f"/organizations/{fresh.org_id}/leavers"
    listed = (await api.ok("GET", f"{path}?since={before.isoformat().replace('+00:00', 'Z')}"))["items"]
    assert {x["entra_object_id"] for x in listed} == {disabled, deleted}
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (await api.call("GET", f"{path}?since={later.replace('+00:00', 'Z')}")).body["items"] == []
    assert (await api.call("GET", f"{path}?since=yesterday")).body["error"]["field"] == "since"

    # Restored in Entra: reactivated, no longer a leaver.
    await fresh.admin.call("PATCH", f"/users/{disabled}", {"accountEnabled": True})
    await fresh.engine.sync_changes(tid)
    assert (await api.ok("GET", f"/end-users/{users[disabled]['id']}"))["leaver"] is None


# ---- undo -----------------------------------------------------------------------------------------------

async def test_undo_of_a_sync_from_the_wrong_tenant(pool: asyncpg.Pool, api: Api, sim: Simulator, fresh: Env) -> None:
    """The vendor doc's troubleshooting flow in one action: map the wrong tenant, enable, sync; undo is refused
    while that is in force; fix the mapping, dry run, undo: the adopted End User is restored, the created ones
    are gone, the one an operator edited since is kept and listed as skipped."""
    wrong = await sim_control(sim, "POST", "/_sim/tenants", {"users": 30})
    right = await sim_control(sim, "POST", "/_sim/tenants", {"users": 5})
    for t in (wrong, right):
        await api.ok("POST", "/microsoft-tenants", {"tenant_id": t["tenant_id"], "display_name": "Sim",
                                                    "client_id": t["client_id"], "client_secret": t["client_secret"]},
                     status=201)
    psa = await api.psa_tenant(wrong["tenant_id"])
    org = (await api.organization(psa["id"]))["id"]
    graph = await graph_admin(sim, wrong)
    listed = (await graph.call("GET", "/users?$select=id,mail,accountEnabled&$top=999"))["value"]
    adoptee = next(u for u in listed if u["accountEnabled"] and u["mail"])
    manual = await api.ok("POST", f"/organizations/{org}/end-users", {
        "first_name": "Kept", "last_name": "Contact", "email": adoptee["mail"], "phone": "+47 1"}, status=201)
    unrelated = await api.ok("POST", f"/organizations/{org}/end-users", {"first_name": "Other"}, status=201)

    run_id = await api.enable(org, ALL)
    await fresh.engine.org_sync(wrong["tenant_id"], org, run_id)
    users = await end_users(pool, org)
    created = sorted(str(u["id"]) for oid, u in users.items() if oid and oid != adoptee["id"])
    assert str(users[adoptee["id"]]["id"]) == manual["id"] and len(created) > 10
    edited = created[0]
    await api.ok("PATCH", f"/end-users/{edited}", {"city": "Typed by an operator"})

    refused = await api.call("POST", f"/sync-runs/{run_id}/undo?dry_run=true")
    assert refused.status == 409 and "in force" in refused.body["error"]["message"]

    await api.ok("PUT", f"/psa-tenants/{psa['id']}/microsoft-tenant", {"microsoft_tenant_id": right["tenant_id"]})
    count = await pool.fetchval("SELECT count(*) FROM end_users WHERE organization_id = $1::uuid", org)
    dry = await api.ok("POST", f"/sync-runs/{run_id}/undo?dry_run=true")
    assert await pool.fetchval("SELECT count(*) FROM end_users WHERE organization_id = $1::uuid", org) == count
    undone = await api.ok("POST", f"/sync-runs/{run_id}/undo")

    assert {k: v for k, v in dry.items() if k != "dry_run"} == {k: v for k, v in undone.items() if k != "dry_run"}
    assert sorted(undone["removed"]) == created[1:]
    assert undone["skipped"] == [{"end_user_id": edited, "reason": "changed by an operator since the run"}]
    assert [u["end_user_id"] for u in undone["unlinked"]] == [manual["id"]]
    left = {str(r["id"]): r for r in await pool.fetch("SELECT * FROM end_users WHERE organization_id = $1::uuid", org)}
    assert set(left) == {manual["id"], unrelated["id"], edited}
    restored = left[manual["id"]]
    assert (restored["first_name"], restored["last_name"], restored["phone"], restored["email"]) == (
        "Kept", "Contact", "+47 1", adoptee["mail"])
    assert (restored["sync_state"], restored["entra_object_id"], restored["microsoft"]) == ("manual", None, None)
    undo_entry = (await changes_of(api, manual["id"]))[0]
    assert undo_entry["action"] == "undo" and undo_entry["actor"] == {"kind": "operator", "run_id": run_id}
    assert undo_entry["sync_state"][1] == "manual" and undo_entry["fields"]["first_name"][1] == "Kept"
    assert (await api.call("POST", f"/sync-runs/{run_id}/undo")).status == 409  # once

    # The next sync is from the right tenant: nobody of the wrong one comes back.
    right_run = await api.ok("POST", f"/organizations/{org}/user-sync/runs", status=202)
    await fresh.engine.org_sync(right["tenant_id"], org, right_run["run_id"])
    tenants = {r["entra_tenant_id"] for r in await pool.fetch(
        "SELECT entra_tenant_id FROM end_users WHERE organization_id = $1::uuid AND id <> $2::uuid", org, edited)}
    assert tenants <= {right["tenant_id"], None}
    assert (await api.call("POST", "/sync-runs/00000000-0000-0000-0000-000000000000/undo")).status == 404


async def test_undo_restores_the_fields_and_states_a_run_changed_unless_changed_since(
    fresh: Env, pool: asyncpg.Pool, api: Api
) -> None:
    tid = fresh.tenant["tenant_id"]
    users = await synced(fresh, pool)
    moved, leaver, overtaken = enabled_with(users, "city")[:3]
    await fresh.admin.call("PATCH", f"/users/{moved}", {"city": "Lima"})
    await fresh.admin.call("PATCH", f"/users/{overtaken}", {"city": "Quito"})
    await fresh.admin.call("PATCH", f"/users/{leaver}", {"accountEnabled": False})
    await fresh.engine.sync_changes(tid)
    run_id = (await pool.fetchrow("SELECT id::text FROM sync_runs WHERE organization_id = $1::uuid AND kind = 'delta'",
                                  fresh.org_id))[0]
    await api.ok("PATCH", f"/end-users/{users[overtaken]['id']}", {"city": "Typed later"})
    await api.ok("DELETE", f"/organizations/{fresh.org_id}/user-sync")  # the cause is no longer in force

    undone = await api.ok("POST", f"/sync-runs/{run_id}/undo")

    rows = await end_users(pool, fresh.org_id)
    assert rows[moved]["city"] == users[moved]["city"]
    assert (rows[leaver]["sync_state"], rows[leaver]["leaver"]) == ("synced", None)
    assert rows[overtaken]["city"] == "Typed later"
    assert {s["end_user_id"] for s in undone["restored"]} == {str(users[moved]["id"]), str(users[leaver]["id"])}
    assert [s["end_user_id"] for s in undone["skipped"]] == [str(users[overtaken]["id"])]
    entry = (await changes_of(api, str(users[moved]["id"])))[0]
    assert (entry["action"], entry["fields"]) == ("undo", {"city": ["Lima", users[moved]["city"]]})
