"""A Microsoft tenant's app registration: what the store reads from `microsoft_tenants` and the Graph adapter
signs in with. Its own module, so the store needs nothing of the Graph adapter."""

from __future__ import annotations

from dataclasses import dataclass

from worker.logs import redact_value


@dataclass(frozen=True)
class TenantCredentials:
    tenant_id: str
    client_id: str
    client_secret: str

    def __post_init__(self) -> None:
        redact_value(self.client_secret)  # whatever fails with it from here on, its logs never show it
