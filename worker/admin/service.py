"""Admin operations that change state and then ask the worker for work.

Each one commits through the store first and publishes after, so the worker never reads a command before
the rows it refers to. When an `org-sync` cannot be enqueued its run is marked failed, so the status never
shows a run in progress that nobody will do. `renew-subscriptions` after a disable or an unmap is best effort:
the hourly renewal drops unneeded subscriptions anyway.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog

from schemas import topics
from schemas.messages import Command
from worker.bus import Publisher
from worker.core.projection import project_fields
from worker.store.admin import AdminStore, Conflict, Enqueued, Outcome

from .errors import Unavailable

log = structlog.get_logger(__name__)


def _now() -> str:
    return datetime.now(UTC).isoformat()


class AdminService:
    """The admin API's state-changing operations that involve the worker."""

    def __init__(self, store: AdminStore, publisher: Publisher) -> None:
        self.store = store
        self._publisher = publisher

    async def enable_sync(self, organization_id: str, filters_json: dict[str, Any]) -> str:
        run = await self.store.enable_user_sync(organization_id, filters_json)
        await self._enqueue(run, strict=True)
        return run.run_id

    async def run_now(self, organization_id: str) -> str:
        run = await self.store.queue_org_sync(organization_id)
        await self._enqueue(run, strict=True)
        return run.run_id

    async def confirm_run(self, run_id: str) -> str:
        """Answer a held run: a new org-sync that applies the deactivations the guard held."""
        run = await self.store.queue_confirmation(run_id)
        await self._enqueue(run, strict=True, confirm=True)
        return run.run_id

    async def disable_sync(self, organization_id: str) -> dict[str, Any]:
        return await self._dispatch(await self.store.disable_user_sync(organization_id), "user sync disabled")

    async def map_psa_tenant(self, psa_tenant_id: str, microsoft_tenant_id: str) -> dict[str, Any]:
        outcome = await self.store.map_psa_tenant(psa_tenant_id, microsoft_tenant_id)
        return await self._dispatch(outcome, "PSA tenant remapped")

    async def unmap_psa_tenant(self, psa_tenant_id: str) -> dict[str, Any]:
        return await self._dispatch(await self.store.unmap_psa_tenant(psa_tenant_id), "PSA tenant unmapped")

    async def assign_organization(self, organization_id: str, psa_tenant_id: str) -> dict[str, Any]:
        outcome = await self.store.assign_organization(organization_id, psa_tenant_id)
        return await self._dispatch(outcome, "Organization re-assigned")

    async def resolve_review(
        self, review_id: str, *, end_user_id: str | None = None, create: bool = False
    ) -> dict[str, Any]:
        user = await self.store.review_mirror_user(review_id)
        if end_user_id is not None:
            email = project_fields(user)["email"] if user is not None else None
            outcome = await self.store.resolve_review_link(review_id, end_user_id, email=email)
        else:
            assert create
            if user is None:
                raise Conflict("the review's Entra user is no longer in the tenant mirror")
            outcome = await self.store.resolve_review_create(review_id, project_fields(user))
        body = await self._dispatch(outcome, "review resolved")
        return body | {"run_id": outcome.runs[0].run_id if outcome.runs else None}

    async def _dispatch(self, outcome: Outcome, reason: str) -> dict[str, Any]:
        """Publish what a committed change asks for; failures are logged, the change stands."""
        for run in outcome.runs:
            await self._enqueue(run, strict=False)
        for tenant_id in outcome.stale_tenants:
            await self._renew_subscriptions(tenant_id, reason)
        return outcome.body | outcome.extra

    async def _enqueue(self, run: Enqueued, *, strict: bool, confirm: bool = False) -> None:
        command = Command(
            command="org-sync", tenant_id=run.tenant_id, organization_id=run.organization_id,
            run_id=run.run_id, requested_at=_now(), confirm_deactivations=confirm,
        )
        try:
            await self._publisher.publish(topics.COMMANDS, run.tenant_id, command)
        except Exception as exc:
            log.warning("admin.enqueue_failed", run_id=run.run_id, tenant_id=run.tenant_id, error=repr(exc))
            await self.store.fail_run(run.run_id, f"could not enqueue the run: {exc!r}")
            if strict:
                raise Unavailable(
                    "the change is saved but the sync run could not be queued; retry with"
                    " POST /organizations/{id}/user-sync/runs"
                ) from exc
        else:
            log.info("admin.enqueued", command="org-sync", run_id=run.run_id, tenant_id=run.tenant_id)

    async def _renew_subscriptions(self, tenant_id: str, reason: str) -> None:
        command = Command(command="renew-subscriptions", tenant_id=tenant_id, reason=reason, requested_at=_now())
        try:
            await self._publisher.publish(topics.COMMANDS, tenant_id, command)
        except Exception as exc:
            log.warning("admin.renew_enqueue_failed", tenant_id=tenant_id, error=repr(exc))
