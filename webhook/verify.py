"""clientState verification with a small cache of verified pairs.

The HMAC itself is `schemas.client_state.verify_client_state` (constant-time compare, current and previous
secret). It is deterministic for a fixed set of secrets, so a pair that verified once verifies forever: a
bounded LRU keyed by the exact `(tenant, clientState)` pair spares two HMACs per item on the hot path. Only
successes are cached, so a flood of forged pairs cannot fill the cache with anything but evictions. The
lookup is a dict probe on a randomised hash of the whole pair, which reveals nothing about partial matches.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from schemas.client_state import verify_client_state


class ClientStateVerifier:
    """Callable `(tenant_id, client_state) -> bool`, for one fixed list of secrets."""

    def __init__(self, secrets: Sequence[str], *, cache_size: int = 4096) -> None:
        self._secrets = tuple(s for s in secrets if s)
        self._cache: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._cache_size = cache_size

    def __call__(self, tenant_id: str, client_state: str | None) -> bool:
        if not client_state or not self._secrets:
            return False
        key = (tenant_id, client_state)
        if key in self._cache:
            self._cache.move_to_end(key)
            return True
        if not verify_client_state(tenant_id, client_state, self._secrets):
            return False
        self._cache[key] = None
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return True
