"""Capability gates: the errors Graph gives a tenant without Entra ID P1/P2 or without Intune.

`premium_flaky` (a fault) reproduces the reported intermittent no-premium 403 for licensed tenants
(docs/graph-notes.md).
"""

from __future__ import annotations

import random

from simulator.errors import GraphError
from simulator.model import Tenant

_flakiness = random.Random(0)


def require_premium(tenant: Tenant) -> None:
    flaky = tenant.faults.premium_flaky and _flakiness.random() < tenant.faults.premium_flaky
    if not tenant.capabilities.p1p2 or flaky:
        raise GraphError(403, "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
                         "Neither tenant is B2C or tenant doesn't have premium license")  # fmt: skip


def require_intune(tenant: Tenant) -> None:
    if not tenant.capabilities.intune:
        raise GraphError(400, "BadRequest", "Request not applicable to target tenant.")
