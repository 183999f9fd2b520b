"""Unmapping, remapping and re-assigning: End Users linked to the old Microsoft tenant stop being updated,
are kept and marked with a reason naming the tenant; manual End Users and other tenants are untouched."""

from __future__ import annotations

import uuid

from .conftest import Api, FakePublisher, World, end_user_states, insert_end_user


async def _linked_and_manual(api: Api, world: World) -> tuple[list[str], str]:
    linked = [await insert_end_user(api.pool, world.org_id, tenant_id=world.tenant_id,
                                    object_id=str(uuid.uuid4()), state=state, email=f"{state}@x.example")
              for state in ("synced", "out_of_scope")]
    manual = await insert_end_user(api.pool, world.org_id, state="manual", email="m@x.example")
    return linked, manual


async def test_unmap_marks_linked_end_users_and_keeps_them(api: Api, publisher: FakePublisher) -> None:
    world = await api.world()
    await api.enable(world.org_id)
    linked, manual = await _linked_and_manual(api, world)
    unmapped = await api.ok("DELETE", f"/psa-tenants/{world.psa_id}/microsoft-tenant")
    assert unmapped["end_users_stopped"] == 2 and unmapped["microsoft_tenant_id"] is None
    states = await end_user_states(api.pool, world.org_id)
    assert set(states) == {*linked, manual}
    for end_user in linked:
        state, reason = states[end_user]
        assert state == "sync_disabled" and world.tenant_id in reason and "unmapped" in reason
    assert states[manual] == ("manual", None)
    assert [c.tenant_id for c in publisher.commands("renew-subscriptions")] == [world.tenant_id]
    resp = await api.call("POST", f"/organizations/{world.org_id}/user-sync/runs")
    assert resp.status == 409 and "not mapped" in resp.body["error"]["message"]


async def test_remap_marks_old_links_and_syncs_from_the_new_tenant(api: Api, publisher: FakePublisher) -> None:
    world = await api.world()
    await api.enable(world.org_id)
    linked, manual = await _linked_and_manual(api, world)
    new_tenant = await api.microsoft_tenant()
    publisher.sent.clear()
    await api.ok("PUT", f"/psa-tenants/{world.psa_id}/microsoft-tenant", {"microsoft_tenant_id": new_tenant})
    states = await end_user_states(api.pool, world.org_id)
    assert all(states[i][0] == "sync_disabled" and world.tenant_id in str(states[i][1]) for i in linked)
    assert states[manual] == ("manual", None)
    [sync] = publisher.commands("org-sync")
    assert (sync.tenant_id, sync.organization_id) == (new_tenant, world.org_id)
    assert [c.tenant_id for c in publisher.commands("renew-subscriptions")] == [world.tenant_id]
    status = await api.ok("GET", f"/organizations/{world.org_id}/user-sync")
    assert status["in_progress"] and status["last_run"]["tenant_id"] == new_tenant


async def test_reassign_marks_links_to_the_old_tenant_only_for_that_organization(
    api: Api, publisher: FakePublisher
) -> None:
    world = await api.world()
    sibling = (await api.organization(world.psa_id))["id"]
    await api.enable(world.org_id)
    linked, manual = await _linked_and_manual(api, world)
    sibling_user = await insert_end_user(api.pool, sibling, tenant_id=world.tenant_id, object_id="o1")
    other_tenant = await api.microsoft_tenant()
    target = await api.psa_tenant(other_tenant)
    publisher.sent.clear()
    await api.ok("PUT", f"/organizations/{world.org_id}/psa-tenant", {"psa_tenant_id": target["id"]})
    states = await end_user_states(api.pool, world.org_id)
    assert set(states) == {*linked, manual}
    assert all(states[i][0] == "sync_disabled" and world.tenant_id in str(states[i][1]) for i in linked)
    assert states[manual] == ("manual", None)
    assert (await end_user_states(api.pool, sibling))[sibling_user] == ("synced", None)
    [sync] = publisher.commands("org-sync")
    assert (sync.tenant_id, sync.organization_id) == (other_tenant, world.org_id)


async def test_unmap_dismisses_open_reviews_of_the_old_tenant(api: Api) -> None:
    world = await api.world()
    await api.pool.execute(
        "INSERT INTO review_items (organization_id, entra_tenant_id, entra_object_id, reason)"
        " VALUES ($1, $2, 'u1', 'two candidates')", world.org_id, world.tenant_id,
    )
    await api.ok("DELETE", f"/psa-tenants/{world.psa_id}/microsoft-tenant")
    items = (await api.ok("GET", f"/review-items?organization_id={world.org_id}&status=all"))["items"]
    assert [i["status"] for i in items] == ["resolved"] and items[0]["resolution"]["action"] == "dismissed"
