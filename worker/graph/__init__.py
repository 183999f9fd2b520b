"""The Microsoft Graph adapter: the only package that talks to Graph. Callers import from here.

Two paths (ARCHITECTURE.md): bulk pages (delta, listings) are read as raw JSON, with an `azure-identity`
credential, and parsed into small msgspec structs; control-plane calls (subscriptions) go through the httpx
client msgraph-core's `GraphClientFactory` builds. Both travel on aiohttp's connections (`httpx-aiohttp`).

- `session.py`: one tenant's authenticated HTTP: tokens, per-tenant throttling and retries (`GraphSession`).
- `client.py`: what the engines call (`TenantGraph`): delta and paged reads, subscription calls; `prefetch`.
- `cache.py`: one client per tenant credential over one shared connection pool (`GraphClients`).
- `wire.py`: Graph's pages as typed structs, the `$select` lists, `decode_page`.
- `errors.py`: Graph's failures mapped once into a small class tree.
- `operator.py`: an operator's actions on a credential (test it, delete its subscriptions).

A tenant's credentials (`TenantCredentials`) live in `worker/credentials.py`, outside this package, so that the
store, which reads them, never imports the Graph adapter; they are re-exported here.
"""

from worker.credentials import TenantCredentials
from worker.graph.cache import GraphClients, credential_key
from worker.graph.client import TenantGraph, prefetch
from worker.graph.errors import (
    DeltaTokenExpired,
    GraphAuthFailed,
    GraphBadRequest,
    GraphError,
    GraphForbidden,
    GraphNotFound,
    GraphThrottled,
    GraphTransient,
)
from worker.graph.operator import CredentialRejected, delete_subscriptions, verify_credentials
from worker.graph.session import SCOPE, TenantThrottle, retry_after, retry_delay
from worker.graph.wire import (
    REGISTRATION_SELECT,
    USER_SELECT,
    GraphUser,
    GroupPage,
    ManagedDevice,
    RegistrationDetail,
    Sku,
    Subscription,
    UserPage,
    UserSignIn,
)

__all__ = [
    "REGISTRATION_SELECT", "SCOPE", "USER_SELECT", "CredentialRejected", "DeltaTokenExpired", "GraphAuthFailed",
    "GraphBadRequest", "GraphClients", "GraphError", "GraphForbidden", "GraphNotFound", "GraphThrottled",
    "GraphTransient", "GraphUser", "GroupPage", "ManagedDevice", "RegistrationDetail", "Sku", "Subscription",
    "TenantCredentials", "TenantGraph", "TenantThrottle", "UserPage", "UserSignIn", "credential_key",
    "delete_subscriptions", "prefetch", "retry_after", "retry_delay", "verify_credentials",
]
