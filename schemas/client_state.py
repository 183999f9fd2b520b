"""The `clientState` of our Graph subscriptions: an HMAC of the tenant id under the webhook secret.

The webhook verifies it without any state, and a notification signed for one tenant cannot claim another.
Graph limits clientState to 128 characters; ours is 64 hex characters.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

_DOMAIN = b"entra-sync/client-state/v1\x00"


def client_state_for(tenant_id: str, secret: str) -> str:
    """The clientState to put on every subscription of `tenant_id`."""
    if not secret:
        raise ValueError("webhook secret is empty")
    mac = hmac.new(secret.encode(), _DOMAIN + tenant_id.lower().encode(), hashlib.sha256)
    return mac.hexdigest()


def verify_client_state(tenant_id: str, client_state: str | None, secrets: Iterable[str]) -> bool:
    """True when `client_state` was made for `tenant_id` under any of `secrets` (current, previous)."""
    if not client_state or not tenant_id:
        return False
    try:
        given = client_state.encode("ascii")  # ours is hex; compare_digest refuses non-ASCII str
        tenant_id.encode()  # a lone surrogate cannot have been signed
    except UnicodeEncodeError:
        return False
    ok = False
    for secret in secrets:
        if secret:
            # Compare against every secret so timing does not reveal which one matched.
            ok |= hmac.compare_digest(client_state_for(tenant_id, secret).encode(), given)
    return ok
