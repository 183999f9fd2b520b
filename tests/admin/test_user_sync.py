"""Enable, edit, run now, status and disable: what is written, what is published, and what never is."""

from __future__ import annotations

import uuid

from schemas import topics

from .conftest import ALL_FILTERS, Api, FakePublisher, end_user_states, insert_end_user

SALES = {**ALL_FILTERS, "departments": ["Sales", "Support"], "domains": ["contoso.com"]}


async def test_status_before_set_up(api: Api) -> None:
    world = await api.world()
    status = await api.ok("GET", f"/organizations/{world.org_id}/user-sync")
    assert status["status"] == "not_set_up" and status["filters"] is None
    assert status["in_progress"] is False and status["last_run"] is None


async def test_enable_queues_an_org_sync_and_publishes_its_command(api: Api, publisher: FakePublisher) -> None:
    world = await api.world()
    run_id = await api.enable(world.org_id, SALES)
    [(topic, key, command)] = publisher.sent
    assert (topic, key) == (topics.COMMANDS, world.tenant_id)
    assert (command.command, command.tenant_id, command.organization_id, command.run_id) == (
        "org-sync", world.tenant_id, world.org_id, run_id)
    assert command.requested_at
    status = await api.ok("GET", f"/organizations/{world.org_id}/user-sync")
    assert status["status"] == "enabled" and status["filters"] == SALES and status["in_progress"] is True
    assert status["last_run"]["id"] == run_id and status["last_run"]["status"] == "queued"
    assert status["last_run"]["kind"] == "org-sync"
    run = await api.ok("GET", f"/sync-runs/{run_id}")
    assert (run["organization_id"], run["tenant_id"], run["status"]) == (world.org_id, world.tenant_id, "queued")


async def test_edit_replaces_filters_and_queues_another_run(api: Api, publisher: FakePublisher) -> None:
    world = await api.world()
    first = await api.enable(world.org_id, SALES)
    enabled_at = (await api.ok("GET", f"/organizations/{world.org_id}/user-sync"))["enabled_at"]
    second = await api.enable(world.org_id, ALL_FILTERS)
    status = await api.ok("GET", f"/organizations/{world.org_id}/user-sync")
    assert first != second and status["filters"] == ALL_FILTERS and status["enabled_at"] == enabled_at
    assert [c.run_id for c in publisher.commands("org-sync")] == [first, second]


async def test_bad_filters_name_the_field_and_write_nothing(api: Api, publisher: FakePublisher) -> None:
    world = await api.world()
    path = f"/organizations/{world.org_id}/user-sync"
    cases = [
        ({"filters": {**ALL_FILTERS, "departments": []}}, "filters.departments"),
        ({"filters": {**ALL_FILTERS, "departments": "some"}}, "filters.departments"),
        ({"filters": {**ALL_FILTERS, "domains": ["a@b.com"]}}, "filters.domains[0]"),
        ({"filters": {**ALL_FILTERS, "colour": "all"}}, "filters.colour"),
        ({"filters": {k: v for k, v in ALL_FILTERS.items() if k != "groups"}}, "filters.groups"),
        ({"filters": "all"}, "filters"),
        ({}, "filters"),
        ({"filters": ALL_FILTERS, "extra": 1}, "extra"),
    ]
    for body, field in cases:
        for method in ("PUT", "POST"):
            target = path if method == "PUT" else path + "/preview"
            resp = await api.call(method, target, body)
            assert resp.status == 400, (body, resp.body)
            assert resp.body["error"]["field"] == field and field in resp.body["error"]["message"]
    assert publisher.sent == []
    assert not await api.pool.fetchval("SELECT count(*) FROM org_user_syncs WHERE organization_id = $1", world.org_id)
    assert not await api.pool.fetchval("SELECT count(*) FROM sync_runs WHERE organization_id = $1", world.org_id)


async def test_enable_requires_a_mapped_psa_tenant(api: Api, publisher: FakePublisher) -> None:
    world = await api.world(mapped=False)
    resp = await api.call("PUT", f"/organizations/{world.org_id}/user-sync", {"filters": ALL_FILTERS})
    assert resp.status == 409 and "not mapped" in resp.body["error"]["message"]
    assert publisher.sent == []
    assert (await api.ok("GET", f"/organizations/{world.org_id}/user-sync"))["status"] == "not_set_up"
    resp = await api.call("PUT", f"/organizations/{uuid.uuid4()}/user-sync", {"filters": ALL_FILTERS})
    assert resp.status == 404


async def test_run_now(api: Api, publisher: FakePublisher) -> None:
    world = await api.world()
    path = f"/organizations/{world.org_id}/user-sync/runs"
    resp = await api.call("POST", path)
    assert resp.status == 409 and "not enabled" in resp.body["error"]["message"]
    await api.enable(world.org_id, SALES)
    run_id = (await api.ok("POST", path, status=202))["run_id"]
    assert publisher.commands("org-sync")[-1].run_id == run_id
    await api.ok("DELETE", f"/organizations/{world.org_id}/user-sync")
    assert (await api.call("POST", path)).status == 409
    assert (await api.call("POST", f"/organizations/{uuid.uuid4()}/user-sync/runs")).status == 404


async def test_disable_keeps_everyone_marks_linked_and_leaves_manual(api: Api, publisher: FakePublisher) -> None:
    world = await api.world()
    await api.enable(world.org_id)
    linked = [await insert_end_user(api.pool, world.org_id, tenant_id=world.tenant_id, object_id=str(uuid.uuid4()),
                                    state=state, email=f"{state}@contoso.com")
              for state in ("synced", "out_of_scope", "deactivated")]
    manual = await insert_end_user(api.pool, world.org_id, state="manual", email="manual@contoso.com")
    status = await api.ok("DELETE", f"/organizations/{world.org_id}/user-sync")
    assert status["status"] == "disabled" and status["filters"] == ALL_FILTERS and status["disabled_at"]
    assert status["end_users_stopped"] == 2
    states = await end_user_states(api.pool, world.org_id)
    assert set(states) == {*linked, manual}
    synced, out_of_scope, deactivated = linked
    assert all(states[i] == ("sync_disabled", "user sync disabled") for i in (synced, out_of_scope))
    assert states[deactivated][0] == "deactivated"  # a leaver stays a leaver
    assert states[manual] == ("manual", None)
    [renew] = publisher.commands("renew-subscriptions")
    assert renew.tenant_id == world.tenant_id and publisher.sent[-1][1] == world.tenant_id
    assert (await api.ok("GET", "/organizations?psa_tenant_id=" + world.psa_id))["items"][0][
        "user_sync_status"] == "disabled"


async def test_disable_when_not_set_up_is_a_conflict(api: Api) -> None:
    world = await api.world()
    resp = await api.call("DELETE", f"/organizations/{world.org_id}/user-sync")
    assert resp.status == 409 and "not set up" in resp.body["error"]["message"]


async def test_re_enable_after_disable(api: Api) -> None:
    world = await api.world()
    await api.enable(world.org_id, SALES)
    await api.ok("DELETE", f"/organizations/{world.org_id}/user-sync")
    await api.enable(world.org_id, SALES)
    status = await api.ok("GET", f"/organizations/{world.org_id}/user-sync")
    assert status["status"] == "enabled" and status["filters"] == SALES


async def test_broker_down_answers_503_and_fails_the_run(api: Api, publisher: FakePublisher) -> None:
    world = await api.world()
    publisher.fail = True
    resp = await api.call("PUT", f"/organizations/{world.org_id}/user-sync", {"filters": SALES})
    assert resp.status == 503 and resp.body["error"]["code"] == "unavailable"
    status = await api.ok("GET", f"/organizations/{world.org_id}/user-sync")
    assert status["status"] == "enabled" and status["in_progress"] is False
    assert status["last_run"]["status"] == "failed" and "enqueue" in status["last_run"]["error"]
    publisher.fail = False
    assert (await api.call("POST", f"/organizations/{world.org_id}/user-sync/runs")).status == 202
