"""The Graph client cache: keyed by the credential, so a changed secret gets a new client at the next unit of
work, and the old client is closed once no unit of work holds it (no network: clients are only built)."""

from __future__ import annotations

import asyncio

from worker.config import GraphSettings
from worker.graph import GraphClients, TenantCredentials, credential_key

OLD = TenantCredentials("7d1f1c9e-0000-4000-8000-000000000001", "app", "old-secret")
NEW = TenantCredentials(OLD.tenant_id, OLD.client_id, "new-secret")


def test_the_key_tells_credentials_apart_without_holding_the_secret() -> None:
    assert credential_key(OLD) != credential_key(NEW)
    assert credential_key(OLD) == credential_key(TenantCredentials(OLD.tenant_id, "app", "old-secret"))
    assert credential_key(OLD) != credential_key(TenantCredentials(OLD.tenant_id, "other-app", "old-secret"))
    assert "old-secret" not in "".join(credential_key(OLD))


async def test_a_changed_secret_gets_a_new_client_and_the_old_one_closes_after_its_last_lease() -> None:
    clients = GraphClients(GraphSettings())
    try:
        async with clients.lease(OLD) as old:
            async with clients.lease(OLD) as same:
                assert same is old
            async with clients.lease(NEW) as new:  # another unit of work starts after the operator's change
                assert new is not old and not old.closed  # the running unit of work keeps its client
            assert not new.closed
        assert old.closed  # its last lease ended
        async with clients.lease(NEW) as again:
            assert again is new
    finally:
        await clients.close()
    assert new.closed


async def test_an_unleased_client_is_closed_when_it_is_replaced() -> None:
    clients = GraphClients(GraphSettings())
    try:
        old = clients.for_tenant(OLD)
        new = clients.for_tenant(NEW)
        await asyncio.sleep(0)  # the close runs as a task
        await asyncio.sleep(0)
        assert old.closed and not new.closed
    finally:
        await clients.close()
