"""Operator actions on a tenant's credential, with an operator's patience: test it as the worker will use it,
and delete the tenant's subscriptions in Graph when it is removed."""

from __future__ import annotations

import msgspec

from worker.config import GraphSettings
from worker.credentials import TenantCredentials
from worker.graph.client import TenantGraph
from worker.graph.errors import GraphAuthFailed, GraphBadRequest, GraphForbidden, GraphNotFound
from worker.graph.wire import Listing, Organization


class CredentialRejected(Exception):
    """A credential failed its test: `code` is Entra's error (or ours when Entra accepted but Graph did not
    confirm the tenant), `field` the registration field an operator should look at."""

    def __init__(self, code: str, message: str, *, field: str, entra_codes: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.code, self.message, self.field, self.entra_codes = code, message, field, entra_codes


# AADSTS codes that point at one field of a registration (learn.microsoft.com/entra/identity-platform/
# reference-error-codes); anything else is about the application as a whole, so its id.
_FIELD_OF_AADSTS = {
    90002: "tenant_id", 900023: "tenant_id", 90072: "tenant_id",  # tenant not found / invalid / not in tenant
    7000215: "client_secret", 7000222: "client_secret", 7000216: "client_secret",  # wrong, expired, missing
}


def _for_an_operator(settings: GraphSettings) -> GraphSettings:
    """An operator waits for the answer: a couple of retries and a short timeout, not a worker's patience."""
    return settings.model_copy(update={"max_retries": min(settings.max_retries, 2),
                                       "timeout_s": min(settings.timeout_s, 15.0)})


async def verify_credentials(creds: TenantCredentials, settings: GraphSettings) -> None:
    """Test a credential as the worker will use it: a token from the authority, then `GET /organization`,
    whose id must be the tenant's. Raises CredentialRejected (Entra's error code) when it fails and
    GraphTransient when the authority or Graph cannot be reached."""
    graph = TenantGraph(creds, _for_an_operator(settings))
    try:
        response = await graph.request("GET", "/organization", params={"$select": "id"})
        organizations = msgspec.json.decode(response.content, type=Listing[Organization]).value
    except GraphAuthFailed as exc:
        field_name = next((_FIELD_OF_AADSTS[c] for c in exc.entra_codes if c in _FIELD_OF_AADSTS), "client_id")
        raise CredentialRejected(exc.code, exc.message, field=field_name, entra_codes=exc.entra_codes) from exc
    except (GraphForbidden, GraphBadRequest, GraphNotFound) as exc:
        raise CredentialRejected(exc.code or "graph_refused", f"GET /organization: {exc.message}",
                                 field="client_id") from exc
    finally:
        await graph.close()
    ids = [o.id.lower() for o in organizations]
    if creds.tenant_id.lower() not in ids:
        raise CredentialRejected("tenant_mismatch", f"the credential reaches organization {', '.join(ids) or 'none'},"
                                 f" not {creds.tenant_id}", field="tenant_id")


async def delete_subscriptions(
    creds: TenantCredentials, settings: GraphSettings, *, ids: list[str], notification_url: str,
) -> list[str]:
    """Delete these subscriptions, and any other of ours (`notification_url`) Graph lists, in Graph; a
    subscription Graph no longer knows counts as deleted. Returns what was deleted."""
    graph = TenantGraph(creds, _for_an_operator(settings))
    try:
        listed = {s.id for s in await graph.list_subscriptions() if s.notification_url == notification_url}
        deleted = []
        for subscription_id in sorted(set(ids) | listed):
            await graph.delete_subscription(subscription_id)
            deleted.append(subscription_id)
        return deleted
    finally:
        await graph.close()
