"""Deterministic, realistic directory content: tenants, users, groups, licences, sign-ins, MFA and devices.

Everything is drawn from `random.Random` seeded by the caller, so the same seed gives the same tenants and
users (ids included). Generation is a tight loop over pre-built tables: 100,000 users take a few seconds.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, TypeVar

from simulator.clock import iso
from simulator.model import GROUP_TYPE, USER_TYPE, Capabilities, GroupRecord, Tenant

T = TypeVar("T")

GIVEN = [
    "Adele", "Alex", "Allan", "Amara", "Ana", "Arjun", "Ben", "Bianca", "Carlos", "Chen", "Chloe", "Dana",
    "Daniel", "Diego", "Elena", "Emily", "Erik", "Fatima", "Fiona", "Grace", "Hana", "Hiro", "Ibrahim", "Irene",
    "Isaac", "Jamal", "Jana", "Johanna", "Jonas", "Julia", "Kai", "Karin", "Lars", "Laura", "Lee", "Lena",
    "Liam", "Lidia", "Lucas", "Lynne", "Maria", "Megan", "Miriam", "Mohammed", "Nestor", "Nina", "Noah", "Olga",
    "Omar", "Patti", "Pradeep", "Priya", "Rafael", "Raul", "Sara", "Sofia", "Tomas", "Uma", "Victor", "Wei",
    "Yuki", "Zoe"
]
SURNAMES = [
    "Vance", "Wilber", "Adams", "Baker", "Nguyen", "Okafor", "Garcia", "Muller", "Rossi", "Kowalski", "Tanaka",
    "Silva", "Johansson", "Novak", "Haddad", "Patel", "Kim", "Schmidt", "Dubois", "Costa", "Larsen", "Murphy",
    "Ivanova", "Fischer", "Moreau", "Jensen", "Santos", "Yamamoto", "Ali", "Khan", "Fernandez", "Olsen",
    "Weber", "Brown", "Davis", "Miller", "Wilson", "Moore", "Taylor", "Anderson", "Thomas", "Jackson", "White",
    "Harris", "Martin", "Thompson", "Lopez", "Gonzalez", "Clark", "Lewis", "Walker", "Hall", "Young", "Wright",
    "Scott", "Green", "Hill", "Campbell", "Mitchell", "Roberts"
]
DEPARTMENTS = ("Sales", "Support", "Engineering", "Finance", "HR", "Marketing", "Operations", "Legal", "IT")
TITLES = {
    "Sales": ("Account Executive", "Sales Manager", "Sales Representative", "Inside Sales"),
    "Support": ("Support Engineer", "Support Lead", "Customer Success Manager"),
    "Engineering": ("Software Engineer", "Senior Software Engineer", "Engineering Manager", "QA Engineer"),
    "Finance": ("Accountant", "Financial Analyst", "Controller"),
    "HR": ("HR Generalist", "Recruiter", "HR Manager"),
    "Marketing": ("Marketing Specialist", "Content Writer", "Marketing Manager"),
    "Operations": ("Operations Analyst", "Office Manager", "Logistics Coordinator"),
    "Legal": ("Counsel", "Paralegal"),
    "IT": ("Systems Administrator", "Help Desk Technician", "IT Manager"),
}
# officeLocation, streetAddress, city, state, postalCode, country, usageLocation, phone prefix
OFFICES = (
    ("Seattle HQ", "1 Microsoft Way", "Redmond", "WA", "98052", "United States", "US", "+1 425 555 "),
    ("New York", "11 Times Square", "New York", "NY", "10036", "United States", "US", "+1 212 555 "),
    ("London", "2 Kingdom Street", "London", "England", "W2 6BD", "United Kingdom", "GB", "+44 20 7946 "),
    ("Berlin", "Unter den Linden 17", "Berlin", "Berlin", "10117", "Germany", "DE", "+49 30 5555 "),
    ("Toronto", "81 Bay Street", "Toronto", "ON", "M5J 0E7", "Canada", "CA", "+1 416 555 "),
    ("Sydney", "1 Denison Street", "North Sydney", "NSW", "2060", "Australia", "AU", "+61 2 5550 "),
    ("Remote", None, None, None, None, None, "US", "+1 206 555 "),
)
# Properties seeded users leave empty; present so every selectable property is a plain key (fast projection).
RARELY_SET: dict[str, Any] = {"ageGroup": None, "assignedPlans": (), "faxNumber": None, "imAddresses": (),
                              "onPremisesImmutableId": None, "otherMails": (), "provisionedPlans": (),
                              "proxyAddresses": ()}  # fmt: skip
PROJECTS = ("Apollo", "Borealis", "Cobalt", "Delta", "Ember", "Falcon", "Granite", "Helix", "Ion", "Juniper")
SECRET_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
TENANT_NAMES = ("contoso", "fabrikam", "northwind", "adatum", "tailspin", "woodgrove", "litware", "proseware")
GUEST_DOMAINS = ("gmail.com", "outlook.com", "partner.example", "vendor.example")
SKUS = (
    ("05e9a617-0261-4cee-bb44-138d3ef5d965", "SPE_E3", 0.45),
    ("06ebc4ee-1bb5-47dd-8120-11324bc54e06", "SPE_E5", 0.15),
    ("cbdc14ab-d96c-4c30-b9f4-6ada7cdc1d46", "SPB", 0.2),
    ("efccb6f7-5641-4e0e-bd10-b4976e1bf68e", "EMS", 0.1),
    ("f30db892-07e9-47e9-837c-80727f46fd3d", "FLOW_FREE", 0.05),
)
MFA_METHODS = (
    "microsoftAuthenticatorPush", "softwareOneTimePasscode", "mobilePhone", "email", "windowsHelloForBusiness", "fido2",
)
PREFERRED = ("push", "oath", "voiceMobile", "sms", "")
SYSTEM_PREFERRED = {"microsoftAuthenticatorPush": "push", "softwareOneTimePasscode": "oath", "mobilePhone": "sms",
                    "fido2": "Fido2", "windowsHelloForBusiness": "push", "email": "email"}  # fmt: skip
OPERATING_SYSTEMS = (("Windows", "10.0.22631.3447", "Surface Laptop 5", "Microsoft Corporation"),
                     ("macOS", "14.4.1", "MacBook Pro", "Apple"), ("iOS", "17.4.1", "iPhone 15", "Apple"),
                     ("Android", "14", "Pixel 8", "Google"))  # fmt: skip


def rng_uuid(rng: random.Random) -> str:
    """A random version-4 UUID drawn from `rng` (the same value `uuid.UUID(int=…, version=4)` gives)."""
    value = rng.getrandbits(128)
    value = (value & ~(0xC000 << 48)) | (0x8000 << 48)
    value = (value & ~(0xF000 << 64)) | (4 << 76)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def pick(rng: random.Random, items: Sequence[T]) -> T:
    """`rng.choice`, several times faster (the bias is irrelevant here)."""
    return items[int(rng.random() * len(items))]


def below(rng: random.Random, limit: int) -> int:
    return int(rng.random() * limit)


def make_tenant(seed: int, index: int) -> Tenant:
    """Tenant number `index` (0-based) of a simulator seeded with `seed`: ids, secret, domains, licences."""
    rng = random.Random(f"tenant:{seed}:{index}")
    base = TENANT_NAMES[index % len(TENANT_NAMES)]
    name = f"{base}{index + 1}" if index >= len(TENANT_NAMES) else base
    tenant_id, client_id = rng_uuid(rng), rng_uuid(rng)
    secret = "sim~" + "".join(rng.choice(SECRET_ALPHABET) for _ in range(36))
    domains = [
        _domain(f"{name}{seed}.onmicrosoft.com", default=True, initial=True),
        _domain(f"{name}-{seed}{index + 1}.com", default=False, initial=False),
    ]
    tenant = Tenant(
        tenant_id=tenant_id, client_id=client_id, client_secret=secret, name=name,
        display_name=f"{name.capitalize()} Ltd", domains=domains, capabilities=Capabilities(),
    )  # fmt: skip
    tenant.skus = [_sku(sku_id, part, tenant_id) for sku_id, part, _ in SKUS]
    return tenant


def _domain(name: str, *, default: bool, initial: bool) -> dict[str, Any]:
    return {"authenticationType": "Managed", "capabilities": "Email, OfficeCommunicationsOnline",
            "isDefault": default, "isInitial": initial, "name": name, "type": "Managed"}  # fmt: skip


def _sku(sku_id: str, part: str, tenant_id: str) -> dict[str, Any]:
    return {
        "accountId": tenant_id, "accountName": tenant_id, "appliesTo": "User", "capabilityStatus": "Enabled",
        "consumedUnits": 0, "id": f"{tenant_id}_{sku_id}", "skuId": sku_id, "skuPartNumber": part,
        "subscriptionIds": [], "prepaidUnits": {"enabled": 0, "suspended": 0, "warning": 0, "lockedOut": 0},
        "servicePlans": [],
    }  # fmt: skip


class Seeder:
    """Adds `count` users (and their groups, devices, sign-ins, MFA) to a tenant, deterministically."""

    def __init__(self, tenant: Tenant, *, seed: int, now: float) -> None:
        self.tenant = tenant
        self.rng = random.Random(f"users:{seed}:{tenant.tenant_id}:{len(tenant.user_order)}")
        self.now = now - now % 86_400  # midnight UTC: same seed, same day -> same timestamps
        self.custom_domain = tenant.domains[1]["name"] if len(tenant.domains) > 1 else tenant.default_domain
        self._name_counts: dict[str, int] = {}

    def seed(self, count: int) -> None:
        new_ids: list[str] = []
        for _ in range(count):
            new_ids.append(self.add_user())
        self.seed_groups(new_ids)
        self._count_consumed_units()

    def add_user(self) -> str:
        rng = self.rng
        guest = rng.random() < 0.05
        data = {**RARELY_SET, **(self._guest(rng) if guest else self._member(rng))}
        rec = self.tenant.add_user(data, notify=False)
        if not guest:
            rec.sign_in = self._sign_in(rng)
            if rng.random() < 0.8:
                self.tenant.devices.append(self._device(rng, data))
        if data["accountEnabled"]:
            rec.mfa = self._mfa(rng, data)
        return rec.id

    def _names(self, rng: random.Random) -> tuple[str, str, str]:
        given, surname = pick(rng, GIVEN), pick(rng, SURNAMES)
        base = f"{given}.{surname}".lower()
        n = self._name_counts.get(base, 0) + 1
        local = base if n == 1 else f"{base}{n}"
        taken = self.tenant.upn_index
        while f"{local}@{self.custom_domain}" in taken or f"{local}@{self.tenant.default_domain}" in taken:
            n += 1
            local = f"{base}{n}"
        self._name_counts[base] = n
        return given, surname, local

    def _member(self, rng: random.Random) -> dict[str, Any]:
        given, surname, local = self._names(rng)
        domain = self.custom_domain if rng.random() < 0.75 else self.tenant.default_domain
        dept = pick(rng, DEPARTMENTS)
        office = pick(rng, OFFICES)
        upn = f"{local}@{domain}"
        return {
            "id": rng_uuid(rng), "displayName": f"{given} {surname}", "givenName": given, "surname": surname,
            "mail": upn, "userPrincipalName": upn, "mailNickname": local,
            "businessPhones": [office[7] + f"{below(rng, 10000):04d}"] if rng.random() < 0.85 else [],
            "mobilePhone": f"+1 206 555 {below(rng, 10000):04d}" if rng.random() < 0.6 else None,
            "streetAddress": office[1], "city": office[2], "state": office[3], "postalCode": office[4],
            "country": office[5], "usageLocation": office[6], "officeLocation": office[0],
            "jobTitle": pick(rng, TITLES[dept]), "department": dept, "companyName": self.tenant.display_name,
            "userType": "Member", "accountEnabled": rng.random() >= 0.03, "preferredLanguage": "en-US",
            "assignedLicenses": self._licenses(rng), "createdDateTime": self._past(rng, 3 * 365),
            "employeeId": f"E{100000 + below(rng, 900000)}", "onPremisesSyncEnabled": None,
            "creationType": None, "externalUserState": None, "deletedDateTime": None,
        }  # fmt: skip

    def _guest(self, rng: random.Random) -> dict[str, Any]:
        given, surname = pick(rng, GIVEN), pick(rng, SURNAMES)
        mail = f"{given}.{surname}{below(rng, 1000)}@{pick(rng, GUEST_DOMAINS)}".lower()
        upn = f"{mail.replace('@', '_')}#EXT#@{self.tenant.initial_domain}"
        return {
            "id": rng_uuid(rng), "displayName": f"{given} {surname} (Guest)", "givenName": given,
            "surname": surname, "mail": mail, "userPrincipalName": upn, "mailNickname": mail.replace("@", "_"),
            "businessPhones": [], "mobilePhone": None, "streetAddress": None, "city": None, "state": None,
            "postalCode": None, "country": None, "usageLocation": None, "officeLocation": None, "jobTitle": None,
            "department": None, "companyName": None, "userType": "Guest", "accountEnabled": True,
            "preferredLanguage": None, "assignedLicenses": [], "createdDateTime": self._past(rng, 365),
            "employeeId": None, "onPremisesSyncEnabled": None, "creationType": "Invitation",
            "externalUserState": "Accepted", "deletedDateTime": None,
        }  # fmt: skip

    def _licenses(self, rng: random.Random) -> list[dict[str, Any]]:
        if rng.random() >= 0.85:
            return []
        roll, acc = rng.random(), 0.0
        for sku_id, _, share in SKUS:
            acc += share
            if roll < acc:
                add_flow = rng.random() < 0.1 and sku_id != SKUS[4][0]
                extra = [{"disabledPlans": [], "skuId": SKUS[4][0]}] if add_flow else []
                return [{"disabledPlans": [], "skuId": sku_id}, *extra]
        return [{"disabledPlans": [], "skuId": SKUS[0][0]}]

    def _past(self, rng: random.Random, days: int) -> str:
        return iso(self.now - rng.random() * days * 86_400)

    def _sign_in(self, rng: random.Random) -> dict[str, Any] | None:
        if rng.random() < 0.12:
            return None
        interactive = self._past(rng, 60)
        return {
            "lastSignInDateTime": interactive, "lastSignInRequestId": rng_uuid(rng),
            "lastNonInteractiveSignInDateTime": self._past(rng, 7), "lastNonInteractiveSignInRequestId": rng_uuid(rng),
            "lastSuccessfulSignInDateTime": interactive, "lastSuccessfulSignInRequestId": rng_uuid(rng),
        }  # fmt: skip

    def _mfa(self, rng: random.Random, user: dict[str, Any]) -> dict[str, Any]:
        registered = rng.random() < 0.75
        methods = sorted(rng.sample(MFA_METHODS, rng.randint(1, 3))) if registered else []
        if user["userType"] == "Member" or registered:
            methods = methods or (["email"] if rng.random() < 0.3 else [])
        preferred = pick(rng, PREFERRED) if registered else ""
        return {
            "isAdmin": False, "isMfaCapable": registered, "isMfaRegistered": registered,
            "isPasswordlessCapable": "fido2" in methods, "isSelfServicePasswordResetCapable": registered,
            "isSelfServicePasswordResetEnabled": True, "isSelfServicePasswordResetRegistered": registered,
            "isSystemPreferredAuthenticationMethodEnabled": True, "lastUpdatedDateTime": self._past(rng, 90),
            "methodsRegistered": methods, "systemPreferredAuthenticationMethods":
                [SYSTEM_PREFERRED[methods[0]]] if registered and methods else [],
            "userPreferredMethodForSecondaryAuthentication": preferred, "userType": user["userType"].lower(),
        }  # fmt: skip

    def _device(self, rng: random.Random, user: dict[str, Any]) -> dict[str, Any]:
        os_name, os_version, model, maker = pick(rng, OPERATING_SYSTEMS)
        wifi = _mac(rng)
        ethernet = _mac(rng) if os_name in ("Windows", "macOS") and rng.random() < 0.5 else None
        return {
            "id": rng_uuid(rng), "userId": user["id"], "userPrincipalName": user["userPrincipalName"],
            "deviceName": f"{user['givenName'][:3].upper()}-{os_name[:3].upper()}-{below(rng, 10000):04d}",
            "operatingSystem": os_name, "osVersion": os_version, "model": model, "manufacturer": maker,
            "serialNumber": f"{rng.getrandbits(60):015X}"[:12],
            "wiFiMacAddress": wifi, "ethernetMacAddress": ethernet, "emailAddress": user["mail"],
            "managedDeviceOwnerType": "company",
            "complianceState": pick(rng, ("compliant", "compliant", "noncompliant")),
            "enrolledDateTime": self._past(rng, 700), "lastSyncDateTime": self._past(rng, 3),
            "azureADDeviceId": rng_uuid(rng), "userDisplayName": user["displayName"],
        }  # fmt: skip

    def seed_groups(self, user_ids: list[str]) -> None:
        """Department and office groups, "All Staff" nesting the department groups (two levels: "Engineering"
        also nests "Platform Engineering"), VPN users, guests, and one project group per ~400 users."""
        tenant = self.tenant
        by_name = {g.data["displayName"]: g for g in tenant.groups.values() if g.deleted_at is None}

        def group(name: str, mail_enabled: bool = False) -> GroupRecord:
            if name not in by_name:
                by_name[name] = tenant.add_group(self._group_data(name, mail_enabled), notify=False)
            return by_name[name]

        def join(target: GroupRecord, member_id: str, odata_type: str = USER_TYPE) -> None:
            tenant.add_member(target, member_id, odata_type, notify=False)

        all_staff = group("All Staff", mail_enabled=True)
        for dept in DEPARTMENTS:
            join(all_staff, group(f"{dept} Team", True).id, GROUP_TYPE)
        platform = group("Platform Engineering")
        join(group("Engineering Team", True), platform.id, GROUP_TYPE)
        vpn, guests = group("VPN Users"), group("External Collaborators")
        members = []
        for user_id in user_ids:
            data = tenant.users[user_id].data
            if data["userType"] == "Guest":
                join(guests, user_id)
                continue
            members.append(user_id)
            join(group(f"{data['department']} Team", True), user_id)
            join(group(f"Office {data['officeLocation']}"), user_id)
            if self.rng.random() < 0.3:
                join(vpn, user_id)
            if data["department"] == "Engineering" and self.rng.random() < 0.2:
                join(platform, user_id)
        self._seed_projects(members, group, join)

    def _seed_projects(self, members: list[str], group: Any, join: Any) -> None:
        if not members:
            return
        names = (g.data["displayName"] for g in self.tenant.groups.values())
        first = sum(1 for name in names if name.startswith("Project "))
        for number in range(first + 1, first + 1 + max(2, len(members) // 400)):
            project = group(f"Project {PROJECTS[number % len(PROJECTS)]} {number}")
            for _ in range(min(len(members), 10 + below(self.rng, 50))):
                join(project, pick(self.rng, members))

    def _group_data(self, name: str, mail_enabled: bool) -> dict[str, Any]:
        nickname = name.lower().replace(" ", "-")
        return {
            "id": rng_uuid(self.rng), "displayName": name, "description": f"{name} ({self.tenant.display_name})",
            "mail": f"{nickname}@{self.custom_domain}" if mail_enabled else None, "mailEnabled": mail_enabled,
            "mailNickname": nickname, "securityEnabled": True, "groupTypes": [], "classification": None,
            "createdDateTime": self._past(self.rng, 900), "deletedDateTime": None, "visibility": None,
        }  # fmt: skip

    def _count_consumed_units(self) -> None:
        consumed: dict[str, int] = {}
        for rec in self.tenant.users.values():
            for lic in rec.data.get("assignedLicenses") or ():
                consumed[lic["skuId"]] = consumed.get(lic["skuId"], 0) + 1
        for sku in self.tenant.skus:
            used = consumed.get(sku["skuId"], 0)
            sku["consumedUnits"] = used
            sku["prepaidUnits"]["enabled"] = max(25, int(used * 1.1) + 5)


def _mac(rng: random.Random) -> str:
    """A MAC address in one of the formats Intune returns: `AA:BB:…`, `aa-bb-…` or `AABBCC…`."""
    octets = [below(rng, 256) for _ in range(6)]
    octets[0] = (octets[0] | 0x02) & 0xFE
    style = below(rng, 3)
    if style == 0:
        return ":".join(f"{o:02X}" for o in octets)
    if style == 1:
        return "-".join(f"{o:02x}" for o in octets)
    return "".join(f"{o:02X}" for o in octets)
