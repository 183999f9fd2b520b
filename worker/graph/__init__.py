"""The Microsoft Graph adapter: the only package that talks to Graph (`client.py`). Callers import from here."""

from worker.credentials import TenantCredentials
from worker.graph.client import (
    REGISTRATION_SELECT,
    SCOPE,
    USER_SELECT,
    CredentialRejected,
    DeltaTokenExpired,
    GraphAuthFailed,
    GraphBadRequest,
    GraphClients,
    GraphError,
    GraphForbidden,
    GraphNotFound,
    GraphThrottled,
    GraphTransient,
    GraphUser,
    GroupPage,
    ManagedDevice,
    RegistrationDetail,
    Sku,
    Subscription,
    TenantGraph,
    TenantThrottle,
    UserPage,
    UserSignIn,
    credential_key,
    delete_subscriptions,
    prefetch,
    retry_after,
    retry_delay,
    verify_credentials,
)

__all__ = [
    "REGISTRATION_SELECT", "SCOPE", "USER_SELECT", "CredentialRejected", "DeltaTokenExpired", "GraphAuthFailed",
    "GraphBadRequest", "GraphClients", "GraphError", "GraphForbidden", "GraphNotFound", "GraphThrottled",
    "GraphTransient", "GraphUser", "GroupPage", "ManagedDevice", "RegistrationDetail", "Sku", "Subscription",
    "TenantCredentials", "TenantGraph", "TenantThrottle", "UserPage", "UserSignIn", "credential_key",
    "delete_subscriptions", "prefetch", "retry_after", "retry_delay", "verify_credentials",
]
