"""Tenant data and enrichment: organization domains, licences, sign-in activity, MFA registration, devices,
and the capability gates (P1/P2, Intune) that make those calls fail the way Graph does."""

from __future__ import annotations

import re
from typing import Any

from msgraph.generated.device_management.managed_devices.managed_devices_request_builder import (
    ManagedDevicesRequestBuilder,
)
from msgraph.generated.users.users_request_builder import UsersRequestBuilder

from tests.simulator.conftest import Graph

MAC = re.compile(r"^([0-9A-F]{2}:){5}[0-9A-F]{2}$|^([0-9a-f]{2}-){5}[0-9a-f]{2}$|^[0-9A-F]{12}$")


async def test_organization_lists_verified_domains_through_the_sdk(shared_graph: Graph) -> None:
    orgs = await shared_graph.sdk.organization.get()
    assert orgs is not None and orgs.value
    org = orgs.value[0]
    assert org.id == shared_graph.tenant["tenant_id"]
    domains = org.verified_domains or []
    assert len(domains) == 2
    default = next(d for d in domains if d.is_default)
    assert default.name == shared_graph.tenant["default_domain"] and default.is_initial
    assert all(d.type and d.capabilities for d in domains)


async def test_subscribed_skus_name_the_assigned_licences(shared_graph: Graph) -> None:
    skus = await shared_graph.sdk.subscribed_skus.get()
    assert skus is not None and skus.value
    by_id = {str(s.sku_id): s for s in skus.value}
    assert all(s.sku_part_number and s.capability_status and s.prepaid_units for s in skus.value)
    _, body, _ = await shared_graph.call("GET", "/users?$select=id,assignedLicenses&$top=999")
    assigned = {lic["skuId"] for u in body["value"] for lic in u["assignedLicenses"]}
    assert assigned and assigned <= set(by_id)
    assert sum(s.consumed_units or 0 for s in skus.value) >= len(assigned)


async def test_sign_in_activity_only_via_users_select_in_pages_of_120(shared_graph: Graph) -> None:
    config = UsersRequestBuilder.UsersRequestBuilderGetRequestConfiguration(
        query_parameters=UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
            select=["id", "signInActivity"], top=120)
    )  # fmt: skip
    page = await shared_graph.sdk.users.get(request_configuration=config)
    assert page is not None and page.value and len(page.value) == 120 and page.odata_next_link
    with_activity = [u for u in page.value if u.sign_in_activity is not None]
    assert with_activity and with_activity[0].sign_in_activity.last_sign_in_date_time is not None  # type: ignore[union-attr]
    assert len(with_activity) < len(page.value)
    _, raw, _ = await shared_graph.call("GET", "/users?$select=id,signInActivity&$top=120")
    assert any("signInActivity" not in u for u in raw["value"])  # absent for users who never signed in
    status, error, _ = await shared_graph.call("GET", "/users?$select=id,signInActivity&$top=121")
    assert status == 400 and error["error"]["code"] == "Request_UnsupportedQuery"


async def test_sign_in_activity_in_delta_select_is_400(shared_graph: Graph) -> None:
    status, error, _ = await shared_graph.call("GET", "/users/delta?$select=id,signInActivity")
    assert status == 400 and error["error"]["code"] == "BadRequest"


async def test_user_registration_details_skip_disabled_users(shared_graph: Graph) -> None:
    report = await shared_graph.sdk.reports.authentication_methods.user_registration_details.get()
    assert report is not None and report.value
    tenant = shared_graph.sim.state.tenants[shared_graph.tenant["tenant_id"]]
    disabled = {r.id for r in tenant.live_users() if not r.data["accountEnabled"]}
    assert disabled and not disabled & {d.id for d in report.value}
    _, raw, _ = await shared_graph.call("GET", "/reports/authenticationMethods/userRegistrationDetails")
    row = raw["value"][0]
    assert {"id", "userPrincipalName", "isMfaRegistered", "isMfaCapable", "methodsRegistered",
            "userPreferredMethodForSecondaryAuthentication", "systemPreferredAuthenticationMethods",
            "userType"} <= set(row)  # fmt: skip
    assert "defaultMfaMethod" not in row
    assert "" in {r["userPreferredMethodForSecondaryAuthentication"] for r in raw["value"]}


async def test_managed_devices_have_mixed_mac_formats_and_null_ethernet_in_lists(shared_graph: Graph) -> None:
    query = ManagedDevicesRequestBuilder.ManagedDevicesRequestBuilderGetQueryParameters(top=60)
    config = ManagedDevicesRequestBuilder.ManagedDevicesRequestBuilderGetRequestConfiguration(query_parameters=query)
    devices = await shared_graph.sdk.device_management.managed_devices.get(request_configuration=config)
    assert devices is not None and devices.value
    macs = [d.wi_fi_mac_address for d in devices.value]
    assert all(m and MAC.match(m) for m in macs)
    assert any(":" in m for m in macs if m) and any("-" in m for m in macs if m)
    assert any(m and len(m) == 12 for m in macs)
    assert all(d.ethernet_mac_address is None for d in devices.value)
    tenant = shared_graph.sim.state.tenants[shared_graph.tenant["tenant_id"]]
    wired = next(d for d in tenant.devices if d["ethernetMacAddress"])
    single = await shared_graph.sdk.device_management.managed_devices.by_managed_device_id(wired["id"]).get()
    assert single is not None and single.ethernet_mac_address == wired["ethernetMacAddress"]
    assert single.user_id and single.serial_number and single.operating_system and single.device_name


async def test_without_p1p2_sign_in_and_mfa_reports_fail_like_graph(graph: Graph) -> None:
    await graph.sim_call("POST", "/_sim/capabilities", json={"tenant_id": graph.tenant["tenant_id"], "p1p2": False})
    status, error, _ = await graph.call("GET", "/users?$select=id,signInActivity")
    assert status == 403
    assert error["error"]["code"] == "Authentication_RequestFromNonPremiumTenantOrB2CTenant"
    status, _, _ = await graph.call("GET", "/reports/authenticationMethods/userRegistrationDetails")
    assert status == 403
    status, _, _ = await graph.call("GET", "/users?$select=id,displayName")
    assert status == 200


async def test_without_intune_managed_devices_fail_like_graph(graph: Graph) -> None:
    await graph.sim_call("POST", "/_sim/capabilities", json={"tenant_id": graph.tenant["tenant_id"], "intune": False})
    status, error, _ = await graph.call("GET", "/deviceManagement/managedDevices")
    assert status == 400
    assert error["error"]["message"] == "Request not applicable to target tenant."
    caps = await graph.sim_call("GET", f"/_sim/capabilities?tenant_id={graph.tenant['tenant_id']}")
    assert caps[graph.tenant["tenant_id"]] == {"p1p2": True, "intune": False}


async def test_premium_403_can_be_made_intermittent_for_licensed_tenants(graph: Graph) -> None:
    await graph.sim_call("POST", "/_sim/faults", json={"tenant_id": graph.tenant["tenant_id"], "premium_flaky": 0.5})
    statuses = {(await graph.call("GET", "/users?$select=id,signInActivity&$top=1"))[0] for _ in range(20)}
    assert statuses == {200, 403}


async def collect(graph: Graph, url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while url:
        status, page, _ = await graph.call("GET", url)
        assert status == 200, page
        items.extend(page["value"])
        url = page.get("@odata.nextLink", "")
    return items


async def test_paged_listings_return_every_row_once(shared_graph: Graph) -> None:
    tenant = shared_graph.sim.state.tenants[shared_graph.tenant["tenant_id"]]
    groups = await collect(shared_graph, "/groups?$select=id&$top=3")
    assert sorted(g["id"] for g in groups) == sorted(g.id for g in tenant.groups.values() if g.deleted_at is None)
    rows = await collect(shared_graph, "/reports/authenticationMethods/userRegistrationDetails?$top=7")
    expected = [r.id for r in tenant.live_users() if r.mfa is not None and r.data["accountEnabled"]]
    assert [r["id"] for r in rows] == expected
    devices = await collect(shared_graph, "/deviceManagement/managedDevices?$select=id&$top=11")
    assert [d["id"] for d in devices] == [d["id"] for d in tenant.devices]
