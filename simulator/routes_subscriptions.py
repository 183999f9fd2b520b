"""`/v1.0/subscriptions`: create (with the validation handshake), read, renew, delete and reauthorize.

Every rule of GRAPH.md is enforced here: change types, resources, the 41,760-minute lifetime, clientState
length, quotas (403), HTTPS notification URLs (loopback HTTP allowed), and the handshake on both URLs.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from simulator.clock import iso_precise, parse_iso
from simulator.context import graph_base, services, tenant_of
from simulator.errors import GraphError, bad_request, json_response
from simulator.model import Subscription, Tenant, new_id
from simulator.notify import validate_endpoint
from simulator.odata import read_json_object

CHANGE_TYPES = ("updated", "deleted")
LOOPBACK_HOSTS = ("localhost",)


def invalid(message: str) -> GraphError:
    return GraphError(400, "InvalidRequest", message)


def subscription_view(request: web.Request, sub: Subscription, *, context: bool = True) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": sub.id, "resource": sub.resource, "applicationId": sub.application_id,
        "changeType": sub.change_type, "clientState": sub.client_state, "notificationUrl": sub.notification_url,
        "notificationQueryOptions": None, "lifecycleNotificationUrl": sub.lifecycle_notification_url,
        "expirationDateTime": iso_precise(sub.expiration), "creatorId": sub.creator_id,
        "includeResourceData": False, "latestSupportedTlsVersion": sub.latest_supported_tls_version,
        "encryptionCertificate": None, "encryptionCertificateId": None, "notificationUrlAppId": None,
        "notificationContentType": sub.notification_content_type,
    }  # fmt: skip
    if context:
        view = {"@odata.context": f"{graph_base(request)}/$metadata#subscriptions/$entity", **view}
    return view


def _check_change_type(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise invalid("Invalid 'changeType' attribute: ''.")
    parts = [p.strip() for p in raw.split(",")]
    for part in parts:
        if part not in CHANGE_TYPES:
            raise invalid(f"Invalid 'changeType' attribute: '{part}'.")
    return ",".join(parts)


def _check_resource(raw: Any) -> str:
    if not isinstance(raw, str):
        raise invalid("Resource is required.")
    parts = raw.strip().strip("/").split("/")
    kind = parts[0].lower()
    ok = kind in ("users", "groups") and (
        len(parts) == 1 or len(parts) == 2 or (len(parts) == 3 and kind == "groups" and parts[2].lower() == "members")
    )
    if not ok or any(not p for p in parts):
        raise invalid(f"Resource '{raw}' is not supported for change notifications.")
    return raw.strip()


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(raw: Any, name: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise invalid(f"'{name}' is a required property.")
    if raw.startswith("EventHub:"):
        return raw
    parts = urlsplit(raw)
    allowed = parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname or ""))
    if allowed and parts.hostname:
        return raw
    raise invalid(f"The {name} must be an HTTPS URL ('{raw}').")


def _check_expiration(request: web.Request, raw: Any) -> float:
    state = services(request).state
    if not isinstance(raw, str):
        raise invalid("expirationDateTime is a required property.")
    try:
        expiration = parse_iso(raw)
    except ValueError:
        raise bad_request(f"Invalid expirationDateTime '{raw}'.") from None
    now, limit = state.clock.now(), state.tunables.max_subscription_minutes
    if expiration <= now:
        raise invalid("Subscription expiration can only be in the future.")
    if expiration > now + limit * 60:
        raise invalid(f"Subscription expiration can only be {limit} minutes in the future.")
    return expiration


def _check_quota(request: web.Request, tenant: Tenant) -> None:
    limits = services(request).state.tunables
    app_count = sum(1 for t in services(request).state.tenants.values() for s in t.subscriptions.values()
                    if s.application_id == tenant.client_id)  # fmt: skip
    in_tenant = len(tenant.subscriptions)
    for count, limit, what in (
        (in_tenant, limits.subscriptions_per_app_tenant, "subscriptions per application and tenant"),
        (in_tenant, limits.subscriptions_per_tenant, "subscriptions per tenant"),
        (app_count, limits.subscriptions_per_app, "subscriptions per application"),
    ):
        if count >= limit:
            raise GraphError(403, "ExtensionError", f"Operation: Create; Exception: [Status Code: Forbidden; "
                             f"Reason: The number of {what} has reached its limit of {limit}.]")  # fmt: skip


async def _handshake(request: web.Request, url: str) -> None:
    if url.startswith("EventHub:"):
        return
    svc = services(request)
    outcome = await validate_endpoint(svc.session, url, svc.state.tunables.handshake_timeout_s)
    if outcome == "Timeout":
        raise invalid("Subscription validation request timed out.")
    if outcome is not None:
        raise GraphError(400, "ValidationError", "Subscription validation request failed. Notification endpoint "
                         "must respond with 200 OK to validation request.")  # fmt: skip


def _new_subscription(request: web.Request, tenant: Tenant, body: dict[str, Any]) -> Subscription:
    client_state = body.get("clientState")
    if client_state is not None and (not isinstance(client_state, str) or len(client_state) > 128):
        raise invalid("clientState must be a string of at most 128 characters.")
    lifecycle = body.get("lifecycleNotificationUrl")
    return Subscription(
        id=new_id(), tenant_id=tenant.tenant_id, application_id=tenant.client_id,
        resource=_check_resource(body.get("resource")), change_type=_check_change_type(body.get("changeType")),
        notification_url=_check_url(body.get("notificationUrl"), "notificationUrl"),
        expiration=_check_expiration(request, body.get("expirationDateTime")), client_state=client_state,
        lifecycle_notification_url=_check_url(lifecycle, "lifecycleNotificationUrl") if lifecycle else None,
        creator_id=tenant.client_id,
        latest_supported_tls_version=str(body.get("latestSupportedTlsVersion") or "v1_2"),
    )  # fmt: skip


async def create_subscription(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    body = await read_json_object(request)
    sub = _new_subscription(request, tenant, body)
    _check_quota(request, tenant)
    await _handshake(request, sub.notification_url)
    if sub.lifecycle_notification_url:
        await _handshake(request, sub.lifecycle_notification_url)
    _check_quota(request, tenant)  # again: others may have subscribed during the handshake
    tenant.subscriptions[sub.id] = sub
    return json_response(subscription_view(request, sub), status=201)


def _find(request: web.Request) -> tuple[Tenant, Subscription]:
    tenant = tenant_of(request)
    sub = tenant.subscriptions.get(request.match_info["id"])
    if sub is None:
        raise GraphError(404, "ResourceNotFound", f"The object was not found. Subscription "
                         f"'{request.match_info['id']}' does not exist.")  # fmt: skip
    return tenant, sub


async def list_subscriptions(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    value = [subscription_view(request, s, context=False) for s in tenant.subscriptions.values()]
    return json_response({"@odata.context": f"{graph_base(request)}/$metadata#subscriptions", "value": value})


async def get_subscription(request: web.Request) -> web.Response:
    _, sub = _find(request)
    return json_response(subscription_view(request, sub))


async def update_subscription(request: web.Request) -> web.Response:
    _, sub = _find(request)
    body = await read_json_object(request)
    if "expirationDateTime" in body:
        sub.expiration = _check_expiration(request, body["expirationDateTime"])
        sub.reauthorize_warned = False  # a renewal also reauthorizes
    if "notificationUrl" in body:
        sub.notification_url = _check_url(body["notificationUrl"], "notificationUrl")
    return json_response(subscription_view(request, sub))


async def delete_subscription(request: web.Request) -> web.Response:
    tenant, sub = _find(request)
    del tenant.subscriptions[sub.id]
    return web.Response(status=204)


async def reauthorize_subscription(request: web.Request) -> web.Response:
    _find(request)  # access is checked on every call here, so reauthorizing only has to succeed
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/v1.0/subscriptions", list_subscriptions)
    router.add_post("/v1.0/subscriptions", create_subscription)
    router.add_get("/v1.0/subscriptions/{id}", get_subscription)
    router.add_patch("/v1.0/subscriptions/{id}", update_subscription)
    router.add_delete("/v1.0/subscriptions/{id}", delete_subscription)
    router.add_post("/v1.0/subscriptions/{id}/reauthorize", reauthorize_subscription)
