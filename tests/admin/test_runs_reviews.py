"""Sync runs (list, one) and review items (list, resolve by linking or by creating)."""

from __future__ import annotations

import uuid

import pytest

from worker.engine.sync import SyncEngine

from .conftest import Api, FakePublisher, World, insert_end_user, make_settings, seed_mirror


async def test_runs_list_and_one(api: Api) -> None:
    world = await api.world()
    first = await api.enable(world.org_id)
    second = (await api.ok("POST", f"/organizations/{world.org_id}/user-sync/runs", status=202))["run_id"]
    runs = (await api.ok("GET", f"/sync-runs?organization_id={world.org_id}"))["items"]
    assert [r["id"] for r in runs] == [second, first]
    assert runs[0]["counts"] == {} and runs[0]["warnings"] == [] and runs[0]["error"] is None
    assert [r["id"] for r in (await api.ok("GET", f"/sync-runs?organization_id={world.org_id}&limit=1"))["items"]] \
        == [second]
    assert {r["id"] for r in (await api.ok("GET", f"/sync-runs?tenant_id={world.tenant_id}"))["items"]} == {
        first, second}
    assert (await api.ok("GET", f"/sync-runs/{first}"))["status"] == "queued"
    assert (await api.call("GET", f"/sync-runs/{uuid.uuid4()}")).status == 404
    resp = await api.call("GET", "/sync-runs?organization_id=zzz")
    assert resp.status == 400 and resp.body["error"]["field"] == "organization_id"


async def test_confirming_a_held_run_queues_an_org_sync_that_applies_deactivations(
    api: Api, publisher: FakePublisher
) -> None:
    world = await api.world()
    queued = await api.enable(world.org_id)
    held = await api.pool.fetchval(
        "INSERT INTO sync_runs (kind, organization_id, tenant_id, status, warnings) VALUES ('org-sync', $1, $2,"
        " 'held', '[\"held 30 deactivations\"]') RETURNING id::text", world.org_id, world.tenant_id,
    )
    publisher.sent.clear()
    run_id = (await api.ok("POST", f"/sync-runs/{held}/confirm", status=202))["run_id"]
    [command] = publisher.commands("org-sync")
    assert (command.run_id, command.confirm_deactivations, command.organization_id) == (run_id, True, world.org_id)
    resp = await api.call("POST", f"/sync-runs/{queued}/confirm")
    assert resp.status == 409 and "held" in resp.body["error"]["message"]
    assert (await api.call("POST", f"/sync-runs/{uuid.uuid4()}/confirm")).status == 404
    await api.ok("DELETE", f"/organizations/{world.org_id}/user-sync")
    assert (await api.call("POST", f"/sync-runs/{held}/confirm")).status == 409


async def _review(api: Api, world: World, *, candidates: list[str], object_id: str = "entra-1") -> str:
    review_id = await api.pool.fetchval(
        "INSERT INTO review_items (organization_id, entra_tenant_id, entra_object_id, reason, candidate_ids)"
        " VALUES ($1, $2, $3, 'two End Users share this email', $4::uuid[]) RETURNING id",
        world.org_id, world.tenant_id, object_id, candidates,
    )
    return str(review_id)


async def _ambiguous(api: Api) -> tuple[World, list[str], str]:
    world = await api.world()
    await api.enable(world.org_id)
    await seed_mirror(api.pool, world.tenant_id, [{
        "id": "entra-1", "display_name": "Jane Doe", "given_name": "Jane", "surname": "Doe",
        "mail": "jane@contoso.com", "user_principal_name": "jdoe@contoso.com"}])
    a = await insert_end_user(api.pool, world.org_id, state="manual", email="jane@contoso.com")
    b = await insert_end_user(api.pool, world.org_id, state="manual", email="jdoe@contoso.com")
    return world, [a, b], await _review(api, world, candidates=[a, b])


async def test_review_list_shows_the_entra_user_and_candidates(api: Api) -> None:
    world, candidates, review_id = await _ambiguous(api)
    [item] = (await api.ok("GET", f"/review-items?organization_id={world.org_id}"))["items"]
    assert item["id"] == review_id and item["status"] == "open" and item["candidate_ids"] == candidates
    assert item["entra_user"]["mail"] == "jane@contoso.com"
    assert {c["email"] for c in item["candidates"]} == {"jane@contoso.com", "jdoe@contoso.com"}
    assert (await api.ok("GET", f"/review-items?organization_id={world.org_id}&status=resolved"))["items"] == []
    resp = await api.call("GET", "/review-items?status=maybe")
    assert resp.status == 400 and resp.body["error"]["field"] == "status"


async def test_resolve_by_linking(api: Api, publisher: FakePublisher) -> None:
    world, (chosen, _), review_id = await _ambiguous(api)
    publisher.sent.clear()
    result = await api.ok("POST", f"/review-items/{review_id}/resolve", {"end_user_id": chosen})
    assert result["action"] == "link" and result["end_user_id"] == chosen and result["run_id"]
    linked = await api.ok("GET", f"/end-users/{chosen}")
    assert (linked["entra_object_id"], linked["sync_state"]) == ("entra-1", "synced")
    [sync] = publisher.commands("org-sync")
    assert sync.run_id == result["run_id"] and sync.organization_id == world.org_id
    resp = await api.call("POST", f"/review-items/{review_id}/resolve", {"end_user_id": chosen})
    assert resp.status == 409 and "already resolved" in resp.body["error"]["message"]
    [item] = (await api.ok("GET", f"/review-items?organization_id={world.org_id}&status=all"))["items"]
    assert item["status"] == "resolved" and item["resolution"] == {"action": "link", "end_user_id": chosen}


async def test_resolving_by_creating_a_taken_email_is_refused_naming_the_holder(
    api: Api, publisher: FakePublisher
) -> None:
    world, (holder, _), review_id = await _ambiguous(api)
    publisher.sent.clear()
    resp = await api.call("POST", f"/review-items/{review_id}/resolve", {"create": True})
    assert resp.status == 409 and holder in resp.body["error"]["message"], resp.body
    assert "jane@contoso.com" in resp.body["error"]["message"]
    assert await api.pool.fetchval(
        "SELECT count(*) FROM end_users WHERE organization_id = $1 AND entra_object_id = 'entra-1'", world.org_id) == 0
    [item] = (await api.ok("GET", f"/review-items?organization_id={world.org_id}"))["items"]
    assert item["id"] == review_id and item["status"] == "open"
    assert publisher.commands("org-sync") == []


async def test_linking_an_end_user_whose_email_another_holds_is_refused_naming_the_holder(api: Api) -> None:
    _, (holder, other), review_id = await _ambiguous(api)
    resp = await api.call("POST", f"/review-items/{review_id}/resolve", {"end_user_id": other})
    assert resp.status == 409 and holder in resp.body["error"]["message"], resp.body
    assert (await api.ok("GET", f"/end-users/{other}"))["entra_object_id"] is None


@pytest.mark.parametrize("resolution", ["link", "create"])
async def test_a_resolution_ends_its_review_for_good(api: Api, database_url: str, resolution: str) -> None:
    """After the resolution the sync updates the End User and opens no review about that user again."""
    world = await api.world()
    await api.enable(world.org_id)
    await seed_mirror(api.pool, world.tenant_id, [{
        "id": "entra-9", "display_name": "Kim Lee", "given_name": "Kim", "surname": "Lee",
        "mail": "kim@contoso.com", "user_principal_name": "kim@contoso.com", "user_type": "Member"}])
    manual = await insert_end_user(api.pool, world.org_id, state="manual", email="KIM@contoso.com",
                                   first_name="K", last_name="L")
    review_id = await _review(api, world, candidates=[manual], object_id="entra-9")
    body = {"end_user_id": manual} if resolution == "link" else {"create": True}
    if resolution == "create":  # the email must be free for a create: the manual record goes
        await api.pool.execute("DELETE FROM end_users WHERE id = $1", manual)
    result = await api.ok("POST", f"/review-items/{review_id}/resolve", body)
    engine = SyncEngine(pool=api.pool, graph=None, settings=make_settings(database_url))  # type: ignore[arg-type]
    for _ in range(2):
        counts = await engine.project_organization(world.tenant_id, world.org_id)
        assert counts["review"] == 0, counts
    end_user = await api.ok("GET", f"/end-users/{result['end_user_id']}")
    assert (end_user["sync_state"], end_user["first_name"], end_user["email"]) == ("synced", "Kim", "kim@contoso.com")
    status = await api.ok("GET", f"/organizations/{world.org_id}/user-sync")
    assert status["open_review_items"] == 0


async def test_resolve_errors_write_nothing(api: Api) -> None:
    world, (a, _), review_id = await _ambiguous(api)
    path = f"/review-items/{review_id}/resolve"
    for body, field in [({}, "end_user_id"), ({"end_user_id": a, "create": True}, "end_user_id"),
                        ({"create": "yes"}, "create"), ({"end_user_id": "x"}, "end_user_id"),
                        ({"end_user_id": str(uuid.uuid4())}, "end_user_id"), ({"why": 1}, "why")]:
        resp = await api.call("POST", path, body)
        assert resp.status == 400 and resp.body["error"]["field"] == field, (body, resp.body)
    elsewhere = await api.world()
    stranger = await insert_end_user(api.pool, elsewhere.org_id, state="manual")
    resp = await api.call("POST", path, {"end_user_id": stranger})
    assert resp.status == 400 and resp.body["error"]["field"] == "end_user_id"
    taken = await insert_end_user(api.pool, world.org_id, tenant_id=world.tenant_id, object_id="someone-else")
    resp = await api.call("POST", path, {"end_user_id": taken})
    assert resp.status == 409
    assert (await api.call("POST", f"/review-items/{uuid.uuid4()}/resolve", {"create": True})).status == 404
    [item] = (await api.ok("GET", f"/review-items?organization_id={world.org_id}"))["items"]
    assert item["status"] == "open"
    assert (await api.ok("GET", f"/end-users/{a}"))["entra_object_id"] is None
    assert await api.pool.fetchval(
        "SELECT count(*) FROM end_users WHERE organization_id = $1 AND entra_object_id = 'entra-1'", world.org_id) == 0
