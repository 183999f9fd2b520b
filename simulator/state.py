"""The whole simulated world: the clock, the tenants, the signing key and the tunables.

Tests reach it as `Simulator.state` to inspect the directory or advance time directly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from simulator.clock import Clock
from simulator.model import ChangeHook, Tenant
from simulator.seed import Seeder, make_tenant


@dataclass
class Tunables:
    """Knobs of the simulated service (Graph's documented values by default)."""

    delta_page_size: int = 200
    users_page_default: int = 100
    users_page_max: int = 999
    sign_in_page_max: int = 120
    member_of_page_max: int = 999
    group_members_per_page: int = 500  # members@delta entries per delta page before a group is split
    delta_token_lifetime_s: float = 7 * 86_400.0
    max_subscription_minutes: int = 41_760
    subscriptions_per_app_tenant: int = 100
    subscriptions_per_tenant: int = 1_000
    subscriptions_per_app: int = 50_000
    handshake_timeout_s: float = 10.0
    delivery_timeout_s: float = 3.0
    slow_response_s: float = 2.9
    retry_window_s: float = 4 * 3600.0
    batch_window_s: float = 0.075
    max_batch: int = 100
    reauthorize_before_s: float = 3600.0  # reauthorizationRequired this long before expiry


@dataclass
class SimState:
    seed: int
    clock: Clock = field(default_factory=Clock)
    tenants: dict[str, Tenant] = field(default_factory=dict)
    tunables: Tunables = field(default_factory=Tunables)
    on_change: ChangeHook | None = None

    @property
    def key(self) -> bytes:
        """Signing key of tokens: stable for a seed, so tokens survive a restart with the same seed."""
        return hashlib.sha256(f"entra-sync-simulator:{self.seed}".encode()).digest()

    def add_tenant(self, *, users: int = 0) -> Tenant:
        tenant = make_tenant(self.seed, len(self.tenants))
        tenant.on_change = self._on_change
        self.tenants[tenant.tenant_id] = tenant
        if users:
            self.seed_users(tenant, users)
        return tenant

    def seed_users(self, tenant: Tenant, count: int) -> None:
        Seeder(tenant, seed=self.seed, now=self.clock.now()).seed(count)

    def tenant_by_id_or_domain(self, key: str) -> Tenant | None:
        found = self.tenants.get(key.lower())
        if found is not None:
            return found
        lowered = key.lower()
        for tenant in self.tenants.values():
            if any(d["name"].lower() == lowered for d in tenant.domains):
                return tenant
        return None

    def first_tenant(self) -> Tenant:
        return next(iter(self.tenants.values()))

    def tick(self) -> None:
        """Housekeeping at the current simulated time: purge soft-deleted objects past retention."""
        now = self.clock.now()
        for tenant in self.tenants.values():
            tenant.purge_expired(now)

    def _on_change(self, tenant: Tenant, kind: str, obj_id: str, change_type: str, members: bool) -> None:
        if self.on_change is not None:
            self.on_change(tenant, kind, obj_id, change_type, members)
