"""Tenant-level and enrichment reads: organization, subscribedSkus, MFA registration details, managed devices.

Capability gates behave like Graph: without Entra ID P1/P2 the reports answer 403; without Intune the device
listing answers 400 "Request not applicable to target tenant."
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web

from simulator.context import graph_base, tenant_of
from simulator.delta import project
from simulator.errors import GraphError, json_response, not_found
from simulator.gates import require_intune, require_premium
from simulator.model import Tenant, UserRecord
from simulator.odata import compile_filter, parse_select
from simulator.paging import OffsetCursor, from_position, paged

DEVICE_PROPS = frozenset({
    "id", "deviceName", "userId", "userPrincipalName", "wiFiMacAddress", "ethernetMacAddress", "serialNumber",
    "operatingSystem", "osVersion", "model", "manufacturer", "emailAddress", "managedDeviceOwnerType",
    "complianceState", "enrolledDateTime", "lastSyncDateTime", "azureADDeviceId", "userDisplayName",
})  # fmt: skip
DEVICE_DEFAULT = tuple(sorted(DEVICE_PROPS - {"id"}))
REGISTRATION_PROPS = frozenset({
    "id", "userPrincipalName", "userDisplayName", "userType", "isAdmin", "isMfaCapable", "isMfaRegistered",
    "isPasswordlessCapable", "isSelfServicePasswordResetCapable", "isSelfServicePasswordResetEnabled",
    "isSelfServicePasswordResetRegistered", "isSystemPreferredAuthenticationMethodEnabled", "lastUpdatedDateTime",
    "methodsRegistered", "systemPreferredAuthenticationMethods", "userPreferredMethodForSecondaryAuthentication",
})  # fmt: skip


def organization_view(tenant: Tenant) -> dict[str, Any]:
    return {
        "id": tenant.tenant_id, "displayName": tenant.display_name, "tenantType": "AAD",
        "verifiedDomains": [dict(d) for d in tenant.domains], "countryLetterCode": "US",
        "preferredLanguage": "en", "createdDateTime": "2019-03-01T09:00:00Z", "businessPhones": [],
        "city": "Redmond", "country": None, "postalCode": "98052", "state": "WA", "street": "1 Microsoft Way",
        "assignedPlans": [], "provisionedPlans": [], "technicalNotificationMails": [f"admin@{tenant.default_domain}"],
        "onPremisesSyncEnabled": None, "securityComplianceNotificationMails": [], "deletedDateTime": None,
    }  # fmt: skip


async def list_organization(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    return json_response({"@odata.context": f"{graph_base(request)}/$metadata#organization",
                          "value": [organization_view(tenant)]})  # fmt: skip


async def get_organization(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    if request.match_info["id"] != tenant.tenant_id:
        raise not_found(request.match_info["id"])
    return json_response(organization_view(tenant))


async def list_domains(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    value = [{"id": d["name"], "isVerified": True, "supportedServices": ["Email"], **d} for d in tenant.domains]
    for domain in value:
        domain.pop("name", None)
    return json_response({"@odata.context": f"{graph_base(request)}/$metadata#domains", "value": value})


async def list_skus(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    return json_response({"@odata.context": f"{graph_base(request)}/$metadata#subscribedSkus", "value": tenant.skus})


def registration_row(rec: UserRecord) -> dict[str, Any]:
    """A user's row of the userRegistrationDetails report."""
    return {"id": rec.id, "userPrincipalName": rec.data["userPrincipalName"],
            "userDisplayName": rec.data["displayName"], **(rec.mfa or {})}  # fmt: skip


async def list_registration_details(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    require_premium(tenant)

    def rows(cursor: OffsetCursor, start: int) -> Iterator[tuple[int, UserRecord]]:
        predicate = compile_filter(cursor.q)
        for position, user_id in from_position(tenant.user_order, start):
            rec = tenant.users.get(user_id)
            if rec is None or rec.deleted_at is not None or rec.mfa is None or not rec.data["accountEnabled"]:
                continue  # the report skips disabled users
            if predicate is None or predicate(registration_row(rec)):
                yield position, rec

    def render(cursor: OffsetCursor) -> Callable[[UserRecord], dict[str, Any]]:
        select = parse_select(cursor.s, known=REGISTRATION_PROPS, default=tuple(sorted(REGISTRATION_PROPS)),
                              entity="userRegistrationDetails")  # fmt: skip
        return lambda rec: project(registration_row(rec), select)

    return paged(request, rows=rows, render=render, default_top=1000, max_top=1000,
                 context="reports/authenticationMethods/userRegistrationDetails")  # fmt: skip


async def list_devices(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    require_intune(tenant)

    def rows(cursor: OffsetCursor, start: int) -> Iterator[tuple[int, dict[str, Any]]]:
        predicate = compile_filter(cursor.q)
        return ((i, d) for i, d in from_position(tenant.devices, start) if predicate is None or predicate(d))

    def render(cursor: OffsetCursor) -> Callable[[dict[str, Any]], dict[str, Any]]:
        select = parse_select(cursor.s, known=DEVICE_PROPS, default=DEVICE_DEFAULT, entity="managedDevice")
        listed = [p for p in select if p != "ethernetMacAddress"]
        # Intune leaves ethernetMacAddress null in lists; only a single-device GET returns it.
        if "ethernetMacAddress" in select:
            return lambda device: project(device, listed) | {"ethernetMacAddress": None}
        return lambda device: project(device, listed)

    return paged(request, rows=rows, render=render, context="deviceManagement/managedDevices",
                 default_top=1000, max_top=1000)  # fmt: skip


async def get_device(request: web.Request) -> web.Response:
    tenant = tenant_of(request)
    require_intune(tenant)
    device = next((d for d in tenant.devices if d["id"] == request.match_info["id"]), None)
    if device is None:
        raise GraphError(404, "ResourceNotFound", f"Resource '{request.match_info['id']}' not found.")
    return json_response({"@odata.context": f"{graph_base(request)}/$metadata#deviceManagement/managedDevices/$entity",
                          **device})  # fmt: skip


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/v1.0/organization", list_organization)
    router.add_get("/v1.0/organization/{id}", get_organization)
    router.add_get("/v1.0/domains", list_domains)
    router.add_get("/v1.0/subscribedSkus", list_skus)
    router.add_get("/v1.0/reports/authenticationMethods/userRegistrationDetails", list_registration_details)
    router.add_get("/v1.0/deviceManagement/managedDevices", list_devices)
    router.add_get("/v1.0/deviceManagement/managedDevices/{id}", get_device)
