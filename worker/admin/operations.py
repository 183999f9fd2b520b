"""Admin operations that change state and then ask the worker for work, or that need Microsoft Graph; and
ending a held run's hold. The admin API and the console both call them (`AdminOperations`), so the console
can do nothing the API cannot.

A tenant's credential is tested (token, then `GET /organization`) before it is registered or changed, and its
subscriptions are deleted in Graph when it is removed; `worker.graph` makes those calls.

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
from worker.config import GraphSettings
from worker.core.model import Filters
from worker.core.projection import project_fields
from worker.engine.preview import preview
from worker.graph import (
    CredentialRejected,
    GraphError,
    GraphTransient,
    TenantCredentials,
    delete_subscriptions,
    verify_credentials,
)
from worker.store import holds
from worker.store.admin import AdminStore
from worker.store.records import Conflict
from worker.store.runs import Enqueued, Outcome

from .errors import ApiError, Unavailable

log = structlog.get_logger(__name__)


def _now() -> str:
    return datetime.now(UTC).isoformat()


class AdminOperations:
    """The admin API's state-changing operations that involve the worker or Microsoft Graph."""

    def __init__(
        self, store: AdminStore, publisher: Publisher, *, graph: GraphSettings | None = None,
        notification_url: str = "",
    ) -> None:
        self.store = store
        self._publisher = publisher
        self._graph = graph or GraphSettings()
        self._notification_url = notification_url  # ours: the subscriptions a removal deletes in Graph

    async def preview(self, organization_id: str, filters: Filters) -> dict[str, Any]:
        """What proposed filters would do: `worker.engine.preview.preview`, the sync's own decisions over the mirror,
        for the Organization's mapped tenant."""
        tenant_id = await self.store.mapped_tenant(organization_id)
        return await preview(self.store.pool, tenant_id=tenant_id, organization_id=organization_id, filters=filters)

    # ---- Microsoft tenants: a credential is tested before it is stored -----------------------------------

    async def register_tenant(
        self, *, tenant_id: str, display_name: str, client_id: str, client_secret: str,
        default_domain: str | None,
    ) -> dict[str, Any]:
        await self.store.require_unregistered(tenant_id)
        await self._verify(TenantCredentials(tenant_id, client_id, client_secret))
        return await self.store.create_microsoft_tenant(
            tenant_id=tenant_id, display_name=display_name, client_id=client_id, client_secret=client_secret,
            default_domain=default_domain,
        )

    async def update_tenant(
        self, tenant_id: str, *, display_name: str | None, client_id: str | None, client_secret: str | None,
    ) -> dict[str, Any]:
        """Change the name and/or credential; a changed credential is tested first and refused (the stored one
        kept) when Entra or Graph refuse it. Workers read it at their next unit of work of the tenant."""
        current = await self.store.microsoft_tenant_credential(tenant_id)
        wanted = TenantCredentials(tenant_id, client_id or current.client_id, client_secret or current.client_secret)
        if wanted != current:
            await self._verify(wanted)
            log.info("admin.credential_changed", tenant_id=tenant_id, client_id_changed=wanted.client_id !=
                     current.client_id, secret_changed=wanted.client_secret != current.client_secret)
        return await self.store.update_microsoft_tenant(
            tenant_id, display_name=display_name, client_id=wanted.client_id, client_secret=wanted.client_secret,
        )

    async def remove_tenant(self, tenant_id: str) -> dict[str, Any]:
        """Remove an unmapped tenant: its Graph subscriptions (in Graph too), then its mirror and status.

        Graph unreachable → 503 and nothing removed (retry). Credentials refused (often why a tenant is removed)
        → the removal goes on and the answer lists the subscriptions left in Graph: they stop at their expiry
        (at most 29 days) and their notifications are ignored, the tenant being unknown."""
        creds, recorded = await self.store.removable_microsoft_tenant(tenant_id)
        deleted: list[str] = []
        left: dict[str, Any] = {}
        try:
            deleted = await delete_subscriptions(creds, self._graph, ids=recorded,
                                                 notification_url=self._notification_url)
        except GraphTransient as exc:
            raise Unavailable(f"Microsoft Graph could not be reached to delete the tenant's subscriptions"
                              f" ({exc.code}); nothing was removed, retry") from exc
        except GraphError as exc:
            left = {"subscriptions_left_in_graph": sorted(recorded),
                    "graph_error": f"{exc.status} {exc.code}: {exc.message}"}
            log.warning("admin.subscriptions_not_deleted", tenant_id=tenant_id, status=exc.status, code=exc.code)
        removed = await self.store.delete_microsoft_tenant(tenant_id)
        log.info("admin.tenant_removed", tenant_id=tenant_id, subscriptions_deleted=len(deleted))
        return {"tenant_id": tenant_id, "removed": True, "subscriptions_deleted": deleted,
                "rows_deleted": removed, **left}

    async def _verify(self, creds: TenantCredentials) -> None:
        try:
            await verify_credentials(creds, self._graph)
        except CredentialRejected as exc:
            log.info("admin.credential_refused", tenant_id=creds.tenant_id, code=exc.code, field=exc.field)
            raise ApiError(
                400, f"{exc.field}: the credential was refused ({exc.code}): {exc.message}; nothing was stored",
                field=exc.field, code=exc.code, details={"entra_error_codes": list(exc.entra_codes)},
            ) from exc
        except GraphTransient as exc:
            raise Unavailable(f"the credential could not be tested: Entra or Graph unreachable ({exc.code});"
                              " nothing was stored, retry") from exc

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

    async def dismiss_held_run(self, run_id: str) -> None:
        """Keep everyone a held run would deactivate, and end its hold (404/409 as API errors)."""
        try:
            await holds.dismiss_run(self.store.pool, run_id)
        except LookupError:
            raise ApiError(404, f"no sync run {run_id}") from None
        except holds.NotHeld as exc:
            raise ApiError(409, str(exc)) from None

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
