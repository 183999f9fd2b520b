"""Simulator-only controls under `/_sim/` (JSON, no authentication, loopback clients only).

Faults, the clock, bulk seeding, capabilities, extra tenants, secret rotation, lifecycle events on demand and a
state summary.
Documented in simulator/README.md.
"""

from __future__ import annotations

import secrets
from typing import Any

import msgspec
from aiohttp import web

from simulator.context import Services, services
from simulator.errors import GraphError, bad_request, json_response
from simulator.model import Capabilities, Faults, Subscription, Tenant, ThrottleRule


class ThrottleIn(msgspec.Struct, forbid_unknown_fields=True):
    status: int = 429
    retry_after: str | float | int | None = "1"
    count: int = 1
    path_prefix: str = "/v1.0/"
    method: str | None = None


class FaultsIn(msgspec.Struct, forbid_unknown_fields=True):
    tenant_id: str | None = None
    throttle: ThrottleIn | list[ThrottleIn] | None = None
    latency_ms: float | None = None
    drop_notifications: float | None = None
    duplicate_notifications: float | None = None
    reorder_notifications: bool | None = None
    delta_gone: int | None = None
    delta_expired: int | None = None
    delta_empty_page_every: int | None = None
    delta_repeat: bool | None = None
    organization_id_form: bool | None = None
    rate_limits: bool | None = None
    premium_flaky: float | None = None
    notification_extras: bool | None = None
    consent_revoked: bool | None = None


class ClockIn(msgspec.Struct, forbid_unknown_fields=True):
    seconds: float = 0.0
    minutes: float = 0.0
    hours: float = 0.0
    days: float = 0.0


class SeedIn(msgspec.Struct, forbid_unknown_fields=True):
    users: int
    tenant_id: str | None = None


class CapabilitiesIn(msgspec.Struct, forbid_unknown_fields=True):
    tenant_id: str | None = None
    p1p2: bool | None = None
    intune: bool | None = None


class CredentialsIn(msgspec.Struct, forbid_unknown_fields=True):
    tenant_id: str
    client_secret: str | None = None  # None: a new random secret
    revoke_tokens: bool = False


class LifecycleIn(msgspec.Struct, forbid_unknown_fields=True):
    subscription_id: str
    event: str = "reauthorizationRequired"
    form: str | None = None  # "tenantId" or "organizationId"


async def _body(request: web.Request, type_: Any) -> Any:
    raw = await request.read()
    try:
        return msgspec.json.decode(raw or b"{}", type=type_)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise bad_request(f"Invalid body: {exc}") from None


def _tenants(svc: Services, tenant_id: str | None) -> list[Tenant]:
    if tenant_id is None:
        return list(svc.state.tenants.values())
    tenant = svc.state.tenants.get(tenant_id)
    if tenant is None:
        raise GraphError(404, "NotFound", f"No simulated tenant '{tenant_id}'.")
    return [tenant]


def faults_view(faults: Faults) -> dict[str, Any]:
    return msgspec.to_builtins(faults.__dict__ | {"throttle": [r.__dict__ for r in faults.throttle]})


SCALAR_FAULTS = (
    "latency_ms", "drop_notifications", "duplicate_notifications", "reorder_notifications", "delta_gone",
    "delta_expired", "delta_empty_page_every", "delta_repeat", "organization_id_form", "rate_limits",
    "premium_flaky", "notification_extras", "consent_revoked",
)  # fmt: skip


def apply_faults(tenant: Tenant, body: FaultsIn) -> None:
    faults = tenant.faults
    rules = body.throttle if isinstance(body.throttle, list) else [body.throttle] if body.throttle else []
    for rule in rules:
        retry_after = None if rule.retry_after is None else str(rule.retry_after)
        faults.throttle.append(ThrottleRule(rule.status, retry_after, rule.count, rule.path_prefix, rule.method))
    for name in SCALAR_FAULTS:
        value = getattr(body, name)
        if value is not None:
            setattr(faults, name, value)


async def post_faults(request: web.Request) -> web.Response:
    body: FaultsIn = await _body(request, FaultsIn)
    tenants = _tenants(services(request), body.tenant_id)
    for tenant in tenants:
        apply_faults(tenant, body)
    return json_response({t.tenant_id: faults_view(t.faults) for t in tenants})


async def get_faults(request: web.Request) -> web.Response:
    tenants = _tenants(services(request), request.query.get("tenant_id"))
    return json_response({t.tenant_id: faults_view(t.faults) for t in tenants})


async def delete_faults(request: web.Request) -> web.Response:
    for tenant in _tenants(services(request), request.query.get("tenant_id")):
        tenant.faults = Faults()
    return web.Response(status=204)


async def post_clock(request: web.Request) -> web.Response:
    body: ClockIn = await _body(request, ClockIn)
    svc = services(request)
    seconds = body.seconds + body.minutes * 60 + body.hours * 3600 + body.days * 86_400
    try:
        svc.state.clock.advance(seconds)
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    svc.housekeeping()
    return json_response(_clock_view(svc))


async def get_clock(request: web.Request) -> web.Response:
    return json_response(_clock_view(services(request)))


def _clock_view(svc: Services) -> dict[str, Any]:
    clock = svc.state.clock
    return {"now": clock.iso(), "epoch": clock.now(), "offset_seconds": clock.offset}


async def post_seed(request: web.Request) -> web.Response:
    body: SeedIn = await _body(request, SeedIn)
    svc = services(request)
    tenant = _tenants(svc, body.tenant_id)[0]
    svc.state.seed_users(tenant, body.users)
    return json_response(tenant_summary(svc, tenant))


async def post_tenant(request: web.Request) -> web.Response:
    body: SeedIn = await _body(request, SeedIn)
    svc = services(request)
    tenant = svc.state.add_tenant(users=body.users)
    svc.tenant_added(tenant)
    return json_response(credentials(tenant), status=201)


def credentials(tenant: Tenant) -> dict[str, str]:
    return {"tenant_id": tenant.tenant_id, "client_id": tenant.client_id, "client_secret": tenant.client_secret,
            "default_domain": tenant.default_domain}  # fmt: skip


async def post_credentials(request: web.Request) -> web.Response:
    """Rotate the app's secret as an administrator would in Entra (the old one stops working for new tokens);
    `revoke_tokens` also refuses tokens issued before, as if their hour had run out."""
    body: CredentialsIn = await _body(request, CredentialsIn)
    tenant = _tenants(services(request), body.tenant_id)[0]
    tenant.client_secret = body.client_secret or "sim~" + secrets.token_urlsafe(27)
    if body.revoke_tokens:
        tenant.token_generation += 1
    return json_response(credentials(tenant))


async def get_capabilities(request: web.Request) -> web.Response:
    tenants = _tenants(services(request), request.query.get("tenant_id"))
    return json_response({t.tenant_id: t.capabilities.__dict__ for t in tenants})


async def post_capabilities(request: web.Request) -> web.Response:
    body: CapabilitiesIn = await _body(request, CapabilitiesIn)
    tenants = _tenants(services(request), body.tenant_id)
    for tenant in tenants:
        caps = tenant.capabilities
        tenant.capabilities = Capabilities(
            p1p2=caps.p1p2 if body.p1p2 is None else body.p1p2,
            intune=caps.intune if body.intune is None else body.intune,
        )
    return json_response({t.tenant_id: t.capabilities.__dict__ for t in tenants})


async def post_lifecycle(request: web.Request) -> web.Response:
    body: LifecycleIn = await _body(request, LifecycleIn)
    svc = services(request)
    for tenant in svc.state.tenants.values():
        sub = tenant.subscriptions.get(body.subscription_id)
        if sub is not None:
            if not svc.notifier.lifecycle(tenant, sub, body.event, body.form):
                raise bad_request("The subscription has no lifecycleNotificationUrl.")
            if body.event == "subscriptionRemoved":
                del tenant.subscriptions[sub.id]
            return json_response({"queued": body.event, "subscription_id": sub.id}, status=202)
    raise GraphError(404, "NotFound", f"No subscription '{body.subscription_id}'.")


def tenant_summary(svc: Services, tenant: Tenant) -> dict[str, Any]:
    deleted = sum(1 for r in tenant.users.values() if r.deleted_at is not None)
    summary: dict[str, Any] = dict(credentials(tenant))
    return summary | {
        "name": tenant.name, "domains": [d["name"] for d in tenant.domains],
        "users": len(tenant.users) - deleted, "deleted_users": deleted,
        "groups": sum(1 for g in tenant.groups.values() if g.deleted_at is None), "devices": len(tenant.devices),
        "user_changes": tenant.user_log.seq, "group_changes": tenant.group_log.seq,
        "capabilities": tenant.capabilities.__dict__, "faults": faults_view(tenant.faults),
        "subscriptions": [_subscription_summary(svc, s) for s in tenant.subscriptions.values()],
    }  # fmt: skip


def _subscription_summary(svc: Services, sub: Subscription) -> dict[str, Any]:
    return {
        "id": sub.id,
        "resource": sub.resource,
        "changeType": sub.change_type,
        "notificationUrl": sub.notification_url,
        "expirationDateTime": svc.state.clock.iso(sub.expiration),
    }


async def get_state(request: web.Request) -> web.Response:
    svc = services(request)
    delivery: dict[str, Any] = dict(svc.notifier.stats.__dict__)
    delivery["pending"] = svc.notifier.pending
    tenants = [tenant_summary(svc, t) for t in svc.state.tenants.values()]
    return json_response({"clock": _clock_view(svc), "tenants": tenants, "delivery": delivery})


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/_sim/state", get_state)
    router.add_get("/_sim/faults", get_faults)
    router.add_post("/_sim/faults", post_faults)
    router.add_delete("/_sim/faults", delete_faults)
    router.add_get("/_sim/clock", get_clock)
    router.add_post("/_sim/clock", post_clock)
    router.add_post("/_sim/seed", post_seed)
    router.add_post("/_sim/tenants", post_tenant)
    router.add_post("/_sim/credentials", post_credentials)
    router.add_get("/_sim/capabilities", get_capabilities)
    router.add_post("/_sim/capabilities", post_capabilities)
    router.add_post("/_sim/lifecycle", post_lifecycle)
