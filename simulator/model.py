"""The simulator's in-memory directory: tenants, users, groups, devices, subscriptions and change logs.

Pure data and bookkeeping, no HTTP: handlers and tests call these methods, which record every change in the
tenant's change log (what delta queries and notifications are computed from) and tell the `on_change` hook.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

DAY = 86_400.0
SOFT_DELETE_RETENTION_S = 30 * DAY

USER_TYPE = "#microsoft.graph.user"
GROUP_TYPE = "#microsoft.graph.group"

# What `GET /users` returns without `$select` (Graph's documented default set).
USER_DEFAULT_PROPS: tuple[str, ...] = (
    "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone", "officeLocation",
    "preferredLanguage", "surname", "userPrincipalName", "id",
)  # fmt: skip
USER_PROPS: frozenset[str] = frozenset(
    {
        *USER_DEFAULT_PROPS, "streetAddress", "city", "state", "postalCode", "country", "department",
        "userType", "accountEnabled", "assignedLicenses", "companyName", "createdDateTime", "usageLocation",
        "employeeId", "mailNickname", "otherMails", "proxyAddresses", "deletedDateTime", "faxNumber",
        "onPremisesSyncEnabled", "onPremisesImmutableId", "creationType", "externalUserState",
        "assignedPlans", "provisionedPlans", "ageGroup", "imAddresses", "signInActivity",
    }
)  # fmt: skip
GROUP_DEFAULT_PROPS: tuple[str, ...] = (
    "id", "deletedDateTime", "classification", "createdDateTime", "description", "displayName", "groupTypes",
    "mail", "mailEnabled", "mailNickname", "securityEnabled", "visibility",
)  # fmt: skip
GROUP_PROPS: frozenset[str] = frozenset({*GROUP_DEFAULT_PROPS, "members", "membershipRule", "renewedDateTime"})


def new_id() -> str:
    return str(uuid.uuid4())


class ChangeLog:
    """Append-only log of changed object ids; the sequence number of an entry is its index + 1."""

    __slots__ = ("ids", "props")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.props: list[frozenset[str] | None] = []

    @property
    def seq(self) -> int:
        return len(self.ids)

    def record(self, obj_id: str, props: frozenset[str] | None) -> int:
        """Log a change of `props` (None: the whole object: created, removed, restored)."""
        self.ids.append(obj_id)
        self.props.append(props)
        return len(self.ids)

    def since(self, start: int, end: int) -> dict[str, set[str] | None]:
        """Objects changed in (start, end], in order of their last change, with the union of changed props."""
        merged: dict[str, set[str] | None] = {}
        for obj_id, props in zip(self.ids[start:end], self.props[start:end], strict=True):
            previous = merged.pop(obj_id, set())
            if previous is None or props is None:
                merged[obj_id] = None
            else:
                merged[obj_id] = previous | props
        return merged


@dataclass(slots=True)
class UserRecord:
    data: dict[str, Any]
    version: int = 0
    deleted_at: float | None = None
    sign_in: dict[str, Any] | None = None
    mfa: dict[str, Any] | None = None
    saved_groups: list[str] = field(default_factory=list)  # direct memberships while soft-deleted

    @property
    def id(self) -> str:
        return str(self.data["id"])


@dataclass(slots=True)
class GroupRecord:
    data: dict[str, Any]
    members: dict[str, str] = field(default_factory=dict)  # member id -> @odata.type, insertion order
    version: int = 0
    deleted_at: float | None = None
    # (group change seq, member id, @odata.type, added?) for members@delta
    member_log: list[tuple[int, str, str, bool]] = field(default_factory=list)
    saved_groups: list[str] = field(default_factory=list)  # direct memberships while soft-deleted

    @property
    def id(self) -> str:
        return str(self.data["id"])


@dataclass(slots=True)
class Subscription:
    id: str
    tenant_id: str
    application_id: str
    resource: str
    change_type: str
    notification_url: str
    expiration: float
    client_state: str | None = None
    lifecycle_notification_url: str | None = None
    creator_id: str = ""
    latest_supported_tls_version: str = "v1_2"
    notification_content_type: str = "application/json"
    lifecycle_form: str = "tenantId"  # or "organizationId": the form of lifecycle notifications sent
    reauthorize_warned: bool = False

    def covers(self, kind: str, obj_id: str, members_only: bool = False) -> bool:
        """Whether a change of `kind` ('users'/'groups') object `obj_id` falls under this subscription."""
        resource = self.resource.strip("/").lower()
        if members_only:
            return resource in (kind, f"{kind}/{obj_id}", f"{kind}/{obj_id}/members")
        return resource in (kind, f"{kind}/{obj_id}")


@dataclass
class Capabilities:
    p1p2: bool = True
    intune: bool = True


@dataclass
class ThrottleRule:
    """Answer the next `count` matching requests with `status` (and `Retry-After` when given)."""

    status: int = 429
    retry_after: str | None = "1"
    count: int = 1
    path_prefix: str = "/v1.0/"
    method: str | None = None


@dataclass
class Faults:
    """Per-tenant fault injection, set through `POST /_sim/faults`."""

    throttle: list[ThrottleRule] = field(default_factory=list)
    latency_ms: float = 0.0
    drop_notifications: float = 0.0  # probability that a notification is silently lost
    duplicate_notifications: float = 0.0  # probability that a notification is delivered twice
    reorder_notifications: bool = False  # shuffle the items of each delivered batch
    delta_gone: int = 0  # the next N delta requests with a token answer 410 Gone + Location
    delta_expired: int = 0  # the next N delta requests with a token answer 400 syncStateNotFound
    delta_empty_page_every: int = 0  # every Nth delta page is empty (but carries a nextLink)
    delta_repeat: bool = False  # each delta page repeats the last object of the previous page
    organization_id_form: bool = False  # change notifications carry organizationId instead of tenantId
    notification_extras: bool = False  # items add sequenceNumber, encryptedContent, @odata.type; lower-case resource
    rate_limits: bool = False  # enforce Graph's per-app-and-tenant budgets (simulator/throttle.py)
    premium_flaky: float = 0.0  # probability that a P1/P2 call answers the no-premium 403 although licensed
    consent_revoked: bool = False  # the app's consent (service principal) is gone: the token endpoint refuses

    def take_throttle(self, method: str, path: str) -> ThrottleRule | None:
        for rule in self.throttle:
            if rule.count > 0 and path.startswith(rule.path_prefix) and rule.method in (None, method):
                rule.count -= 1
                if rule.count == 0:
                    self.throttle.remove(rule)
                return rule
        return None


ChangeHook = Callable[["Tenant", str, str, str, bool], None]  # tenant, kind, id, changeType, members only


@dataclass
class Tenant:
    tenant_id: str
    client_id: str
    client_secret: str
    name: str
    display_name: str
    domains: list[dict[str, Any]]
    capabilities: Capabilities = field(default_factory=Capabilities)
    faults: Faults = field(default_factory=Faults)
    users: dict[str, UserRecord] = field(default_factory=dict)
    user_order: list[str] = field(default_factory=list)
    user_log: ChangeLog = field(default_factory=ChangeLog)
    groups: dict[str, GroupRecord] = field(default_factory=dict)
    group_order: list[str] = field(default_factory=list)
    group_log: ChangeLog = field(default_factory=ChangeLog)
    devices: list[dict[str, Any]] = field(default_factory=list)
    skus: list[dict[str, Any]] = field(default_factory=list)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    upn_index: dict[str, str] = field(default_factory=dict)  # lower-case UPN -> id
    parents: dict[str, set[str]] = field(default_factory=dict)  # member id -> ids of groups it is directly in
    # Soft-deleted users and groups (id -> deleted_at), so the housekeeping tick (every 0.2 s) looks at these
    # instead of scanning every object of a 100,000-user tenant.
    deleted_users: dict[str, float] = field(default_factory=dict)
    deleted_groups: dict[str, float] = field(default_factory=dict)
    on_change: ChangeHook | None = None
    # Bumped when /_sim/credentials revokes the app's tokens: access tokens carry the generation they were
    # issued in, and older ones are refused as expired (Entra's tokens outlive a secret's removal until their
    # expiry; this stands for that hour having passed).
    token_generation: int = 0

    @property
    def default_domain(self) -> str:
        return next(d["name"] for d in self.domains if d["isDefault"])

    @property
    def initial_domain(self) -> str:
        return next(d["name"] for d in self.domains if d["isInitial"])

    # -- users -------------------------------------------------------------------------------------------

    def live_user(self, user_id: str) -> UserRecord | None:
        rec = self.users.get(user_id) or self.users.get(self.upn_index.get(user_id.lower(), ""))
        return rec if rec is not None and rec.deleted_at is None else None

    def live_users(self) -> Iterator[UserRecord]:
        for user_id in self.user_order:
            rec = self.users.get(user_id)
            if rec is not None and rec.deleted_at is None:
                yield rec

    def add_user(self, data: dict[str, Any], *, notify: bool = True) -> UserRecord:
        rec = UserRecord(data=data)
        self.users[rec.id] = rec
        self.user_order.append(rec.id)
        self.upn_index[str(data["userPrincipalName"]).lower()] = rec.id
        rec.version = self.user_log.record(rec.id, None)
        if notify:
            self._changed("users", rec.id, "updated")
        return rec

    def update_user(self, rec: UserRecord, changes: dict[str, Any]) -> None:
        changed = frozenset(k for k, v in changes.items() if rec.data.get(k) != v)
        if not changed:
            return
        if "userPrincipalName" in changed:
            self.upn_index.pop(str(rec.data["userPrincipalName"]).lower(), None)
            self.upn_index[str(changes["userPrincipalName"]).lower()] = rec.id
        rec.data.update(changes)
        rec.version = self.user_log.record(rec.id, changed)
        self._changed("users", rec.id, "updated")

    def soft_delete_user(self, rec: UserRecord, now: float) -> None:
        rec.deleted_at = self.deleted_users[rec.id] = now
        self.upn_index.pop(str(rec.data["userPrincipalName"]).lower(), None)
        rec.version = self.user_log.record(rec.id, None)
        rec.saved_groups = self._remove_memberships(rec.id)
        self._changed("users", rec.id, "updated")

    def restore_user(self, rec: UserRecord) -> None:
        """Undo a soft delete; like Entra, group memberships come back too."""
        rec.deleted_at = None
        self.deleted_users.pop(rec.id, None)
        self.upn_index[str(rec.data["userPrincipalName"]).lower()] = rec.id
        rec.version = self.user_log.record(rec.id, None)
        self._restore_memberships(rec.id, USER_TYPE, rec.saved_groups)
        rec.saved_groups = []
        self._changed("users", rec.id, "updated")

    def purge_user(self, rec: UserRecord) -> None:
        del self.users[rec.id]
        self.deleted_users.pop(rec.id, None)
        if rec.deleted_at is None:
            self.upn_index.pop(str(rec.data["userPrincipalName"]).lower(), None)
        self._remove_memberships(rec.id)
        self.parents.pop(rec.id, None)
        self.user_log.record(rec.id, None)
        self._changed("users", rec.id, "deleted")

    def purge_expired(self, now: float) -> int:
        """Permanently delete soft-deleted users and groups older than 30 days; returns how many."""
        cutoff = now - SOFT_DELETE_RETENTION_S
        expired_users = [self.users[i] for i, at in self.deleted_users.items() if at <= cutoff]
        expired_groups = [self.groups[i] for i, at in self.deleted_groups.items() if at <= cutoff]
        for rec in expired_users:
            self.purge_user(rec)
        for group in expired_groups:
            self.purge_group(group)
        return len(expired_users) + len(expired_groups)

    # -- groups ------------------------------------------------------------------------------------------

    def live_group(self, group_id: str) -> GroupRecord | None:
        group = self.groups.get(group_id)
        return group if group is not None and group.deleted_at is None else None

    def add_group(self, data: dict[str, Any], *, notify: bool = True) -> GroupRecord:
        group = GroupRecord(data=data)
        self.groups[group.id] = group
        self.group_order.append(group.id)
        group.version = self.group_log.record(group.id, None)
        if notify:
            self._changed("groups", group.id, "updated")
        return group

    def update_group(self, group: GroupRecord, changes: dict[str, Any]) -> None:
        changed = frozenset(k for k, v in changes.items() if group.data.get(k) != v)
        if changed:
            group.data.update(changes)
            group.version = self.group_log.record(group.id, changed)
            self._changed("groups", group.id, "updated")

    def add_member(self, group: GroupRecord, member_id: str, odata_type: str, *, notify: bool = True) -> bool:
        if member_id in group.members:
            return False
        group.members[member_id] = odata_type
        self.parents.setdefault(member_id, set()).add(group.id)
        self._log_membership(group, member_id, odata_type, added=True, notify=notify)
        return True

    def remove_member(self, group: GroupRecord, member_id: str) -> bool:
        odata_type = group.members.pop(member_id, None)
        if odata_type is None:
            return False
        self.parents.get(member_id, set()).discard(group.id)
        self._log_membership(group, member_id, odata_type, added=False, notify=True)
        return True

    def soft_delete_group(self, group: GroupRecord, now: float) -> None:
        group.deleted_at = self.deleted_groups[group.id] = now
        group.version = self.group_log.record(group.id, None)
        group.saved_groups = self._remove_memberships(group.id)
        self._changed("groups", group.id, "updated")

    def restore_group(self, group: GroupRecord) -> None:
        group.deleted_at = None
        self.deleted_groups.pop(group.id, None)
        group.version = self.group_log.record(group.id, None)
        self._restore_memberships(group.id, GROUP_TYPE, group.saved_groups)
        group.saved_groups = []
        self._changed("groups", group.id, "updated")

    def purge_group(self, group: GroupRecord) -> None:
        del self.groups[group.id]
        self.deleted_groups.pop(group.id, None)
        self._remove_memberships(group.id)
        for member_id in group.members:
            self.parents.get(member_id, set()).discard(group.id)
        self.group_log.record(group.id, None)
        self._changed("groups", group.id, "deleted")

    def member_of(self, obj_id: str) -> list[GroupRecord]:
        """Live groups with `obj_id` as a direct member."""
        groups = (self.groups.get(group_id) for group_id in self.parents.get(obj_id, ()))
        return [g for g in groups if g is not None and g.deleted_at is None]

    def transitive_member_of(self, obj_id: str) -> list[GroupRecord]:
        """Live groups that contain `obj_id` directly or through nested groups (each once)."""
        seen: dict[str, GroupRecord] = {}
        frontier = [obj_id]
        while frontier:
            for group in self.member_of(frontier.pop()):
                if group.id not in seen:
                    seen[group.id] = group
                    frontier.append(group.id)
        return list(seen.values())

    def transitive_members(self, group: GroupRecord) -> dict[str, str]:
        """Every object under `group`, nested groups included, each once, in discovery order."""
        found: dict[str, str] = {}
        frontier = [group]
        visited = {group.id}
        while frontier:
            current = frontier.pop(0)
            for member_id, odata_type in current.members.items():
                found.setdefault(member_id, odata_type)
                nested = self.live_group(member_id) if odata_type == GROUP_TYPE else None
                if nested is not None and nested.id not in visited:
                    visited.add(nested.id)
                    frontier.append(nested)
        return found

    def _log_membership(
        self, group: GroupRecord, member_id: str, odata_type: str, *, added: bool, notify: bool
    ) -> None:
        group.version = self.group_log.record(group.id, frozenset({"members"}))
        group.member_log.append((group.version, member_id, odata_type, added))
        if notify:
            self._changed("groups", group.id, "updated", members=True)

    def _remove_memberships(self, obj_id: str) -> list[str]:
        """Drop `obj_id` from its groups (soft delete); returns them, so a restore can put it back."""
        groups = self.member_of(obj_id)
        for group in groups:
            self.remove_member(group, obj_id)
        return [g.id for g in groups]

    def _restore_memberships(self, obj_id: str, odata_type: str, group_ids: list[str]) -> None:
        for group_id in group_ids:
            group = self.live_group(group_id)
            if group is not None:
                self.add_member(group, obj_id, odata_type)

    def _changed(self, kind: str, obj_id: str, change_type: str, members: bool = False) -> None:
        if self.on_change is not None:
            self.on_change(self, kind, obj_id, change_type, members)
