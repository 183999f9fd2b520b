"""Outbound calls to notification endpoints: the validation handshake and change/lifecycle delivery.

Delivery is asynchronous: changes enqueue items; a background task waits a short batching window, groups due
items by URL (mixing subscriptions and tenants, as Graph does), POSTs `{"value": [...]}` with a 3 s timeout,
and retries failures with exponential backoff on the simulated clock for up to 4 hours, then drops them.
Endpoints answering slower than 2.9 s are throttled (delayed 10 minutes at >= 10 % slow, dropped at >= 15 %)
once they have received 100 notifications within a 10-minute window.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
import re
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, urlsplit

import aiohttp
import msgspec
import yarl

from simulator.clock import iso_precise
from simulator.model import Subscription, Tenant
from simulator.state import SimState
from simulator.tokens import make_jwt

VALIDATION_MESSAGE = "Validation: Testing client application reachability for subscription Request-Id: {}"
SLOW_WINDOW_S = 600.0
SLOW_MIN_NOTIFICATIONS = 100
SLOW_DELAY_S = 600.0
_SEQUENCE = itertools.count(1)
GRAPH_NOTIFICATION_APP = "0bf30f3b-4a52-48df-9a82-234910c4a086"  # appid in real validation tokens


@dataclass(order=True)
class Pending:
    due: float
    order: int
    url: str = field(compare=False)
    item: dict[str, Any] = field(compare=False)
    tenant_id: str = field(compare=False)
    first: float = field(compare=False)
    lifecycle: bool = field(default=False, compare=False)
    attempts: int = field(default=0, compare=False)
    delayed: bool = field(default=False, compare=False)


@dataclass
class DeliveryStats:
    enqueued: int = 0
    delivered: int = 0
    failed_attempts: int = 0
    dropped_fault: int = 0
    dropped_expired: int = 0
    dropped_slow: int = 0
    delayed_slow: int = 0
    duplicated: int = 0
    lifecycle_sent: int = 0
    event_hub_skipped: int = 0


@dataclass
class EndpointHealth:
    """Outcomes of recent deliveries to one endpoint: (simulated time, notifications, slow notifications)."""

    window: deque[tuple[float, int, int]] = field(default_factory=deque)

    def record(self, now: float, count: int, slow: bool) -> None:
        self.window.append((now, count, count if slow else 0))

    def verdict(self, now: float) -> str:
        """'ok', 'delay' (>= 10 % slow) or 'drop' (>= 15 % slow), once 100 notifications were seen."""
        while self.window and now - self.window[0][0] > SLOW_WINDOW_S:
            self.window.popleft()
        total = sum(entry[1] for entry in self.window)
        if total < SLOW_MIN_NOTIFICATIONS:
            return "ok"
        share = sum(entry[2] for entry in self.window) / total
        return "drop" if share >= 0.15 else "delay" if share >= 0.10 else "ok"


def endpoint_key(url: str) -> str:
    """The 'notification URL' the slow-endpoint rule applies to: scheme, host and path (all tenants)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def with_query(url: str, name: str, value: str) -> yarl.URL:
    """`url` plus `name=value`, encoded as Graph (.NET UrlEncode) does it: `+` for spaces, lower-case `%3a`.

    Returned as an already-encoded URL so the HTTP client sends these bytes unchanged.
    """
    encoded = re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote_plus(value, safe=""))
    base = yarl.URL(url, encoded=False)
    separator = "&" if base.raw_query_string else "?"
    return yarl.URL(f"{base}{separator}{name}={encoded}", encoded=True)


async def validate_endpoint(session: aiohttp.ClientSession, url: str, timeout_s: float) -> str | None:
    """Graph's validation handshake against `url`; None when it passed, else the failure's error code."""
    token = VALIDATION_MESSAGE.format(uuid.uuid4())
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    try:
        async with session.post(with_query(url, "validationToken", token), headers=headers, data=b"",
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:  # fmt: skip
            body = await response.text()
            plain = response.content_type == "text/plain"
            return None if response.status == 200 and plain and body == token else "ValidationError"
    except TimeoutError:
        return "Timeout"
    except aiohttp.ClientError:
        return "ValidationError"


class Notifier:
    """Queues and delivers change and lifecycle notifications for every tenant of a simulator."""

    def __init__(self, state: SimState, session: aiohttp.ClientSession) -> None:
        self.state = state
        self.session = session
        self.stats = DeliveryStats()
        self.health: dict[str, EndpointHealth] = {}
        self._heap: list[Pending] = []
        self._counter = itertools.count()
        self._wake = asyncio.Event()
        self._rng = random.Random(state.seed)
        self._inflight: set[asyncio.Task[None]] = set()
        self._inflight_items = 0

    # -- producing ---------------------------------------------------------------------------------------

    def on_change(self, tenant: Tenant, kind: str, obj_id: str, change_type: str, members: bool) -> None:
        for sub in list(tenant.subscriptions.values()):
            if change_type in sub.change_type.split(",") and sub.covers(kind, obj_id, members_only=members):
                self._enqueue(tenant, sub.notification_url, change_item(tenant, sub, kind, obj_id, change_type))

    def lifecycle(self, tenant: Tenant, sub: Subscription, event: str, form: str | None = None) -> bool:
        """Queue a lifecycle notification; False when the subscription has no lifecycle URL."""
        if not sub.lifecycle_notification_url:
            return False
        item = lifecycle_item(tenant, sub, event, form or sub.lifecycle_form)
        self._enqueue(tenant, sub.lifecycle_notification_url, item, lifecycle=True)
        self.stats.lifecycle_sent += 1
        return True

    def _enqueue(self, tenant: Tenant, url: str, item: dict[str, Any], *, lifecycle: bool = False) -> None:
        faults = tenant.faults
        self.stats.enqueued += 1
        if url.startswith("EventHub:"):
            self.stats.event_hub_skipped += 1  # the simulator has no Event Hubs; such subscriptions stay silent
            return
        if faults.drop_notifications and self._rng.random() < faults.drop_notifications:
            self.stats.dropped_fault += 1
            return
        copies = 2 if faults.duplicate_notifications and self._rng.random() < faults.duplicate_notifications else 1
        self.stats.duplicated += copies - 1
        now = self.state.clock.now()
        for _ in range(copies):
            pending = Pending(now, next(self._counter), url, item, tenant.tenant_id, now, lifecycle)
            heapq.heappush(self._heap, pending)
        self._wake.set()

    @property
    def pending(self) -> int:
        """Notifications queued or being delivered."""
        return len(self._heap) + self._inflight_items

    # -- delivering --------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until cancelled; wakes on new items and every 50 ms for retries on the simulated clock."""
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=0.05)
                if self._wake.is_set():
                    self._wake.clear()
                    await asyncio.sleep(self.state.tunables.batch_window_s)
                self._dispatch_due()
        finally:
            for task in list(self._inflight):
                task.cancel()

    def _dispatch_due(self) -> None:
        now = self.state.clock.now()
        by_url: dict[str, list[Pending]] = {}
        while self._heap and self._heap[0].due <= now:
            pending = heapq.heappop(self._heap)
            by_url.setdefault(pending.url, []).append(pending)
        max_batch = self.state.tunables.max_batch
        for url, items in by_url.items():
            for start in range(0, len(items), max_batch):
                task = asyncio.create_task(self._deliver(url, items[start : start + max_batch]))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

    async def _deliver(self, url: str, batch: list[Pending]) -> None:
        self._inflight_items += len(batch)
        try:
            await self._attempt(url, batch)
        finally:
            self._inflight_items -= len(batch)

    async def _attempt(self, url: str, batch: list[Pending]) -> None:
        batch = self._apply_slow_rule(url, batch)
        if not batch:
            return
        tenants = [self.state.tenants.get(p.tenant_id) for p in batch]
        if any(t is not None and t.faults.reorder_notifications for t in tenants):
            self._rng.shuffle(batch)
        body = self._body(batch)
        started = time.monotonic()
        ok = await self._post(url, body)
        slow = time.monotonic() - started > self.state.tunables.slow_response_s
        self.health.setdefault(endpoint_key(url), EndpointHealth()).record(self.state.clock.now(), len(batch), slow)
        if ok:
            self.stats.delivered += len(batch)
        else:
            self._retry(batch)

    def _body(self, batch: list[Pending]) -> bytes:
        payload: dict[str, Any] = {
            "value": [{k: v for k, v in p.item.items() if k != "_validationTokens"} for p in batch]
        }
        tokens = [t for p in batch for t in p.item.get("_validationTokens", ())]
        if tokens:
            payload["validationTokens"] = tokens
        return msgspec.json.encode(payload)

    async def _post(self, url: str, body: bytes) -> bool:
        timeout = aiohttp.ClientTimeout(total=self.state.tunables.delivery_timeout_s)
        headers = {"Content-Type": "application/json; charset=utf-8"}
        try:
            async with self.session.post(url, data=body, headers=headers, timeout=timeout) as response:
                await response.read()
                return 200 <= response.status < 300
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    def _apply_slow_rule(self, url: str, batch: list[Pending]) -> list[Pending]:
        health = self.health.get(endpoint_key(url))
        verdict = health.verdict(self.state.clock.now()) if health else "ok"
        if verdict == "drop":
            self.stats.dropped_slow += len(batch)
            return []
        if verdict == "delay":
            fresh = [p for p in batch if not p.delayed]
            for pending in fresh:
                pending.delayed = True
                self._push(pending, self.state.clock.now() + SLOW_DELAY_S)
            self.stats.delayed_slow += len(fresh)
            return [p for p in batch if p not in fresh]
        return batch

    def _retry(self, batch: list[Pending]) -> None:
        now = self.state.clock.now()
        window = self.state.tunables.retry_window_s
        for pending in batch:
            self.stats.failed_attempts += 1
            pending.attempts += 1
            due = now + min(5.0 * 2 ** (pending.attempts - 1), 1800.0)
            if due - pending.first > window:
                self.stats.dropped_expired += 1
                continue
            self._push(pending, due)

    def _push(self, pending: Pending, due: float) -> None:
        pending.due = due
        pending.order = next(self._counter)
        heapq.heappush(self._heap, pending)


def change_item(tenant: Tenant, sub: Subscription, kind: str, obj_id: str, change_type: str) -> dict[str, Any]:
    """One change notification item (basic: no resource data), as Graph sends for users and groups."""
    entity = "User" if kind == "users" else "Group"
    resource = f"{entity}s/{obj_id}"
    item: dict[str, Any] = {
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": iso_precise(sub.expiration),
        "changeType": change_type,
        "resource": resource,
        "resourceData": {
            "@odata.type": f"#Microsoft.Graph.{entity}",
            "@odata.id": resource,
            "id": obj_id,
            "organizationId": tenant.tenant_id,
        },
        "clientState": sub.client_state,
        "tenantId": tenant.tenant_id,
    }
    if tenant.faults.organization_id_form:
        item["organizationId"] = item.pop("tenantId")
    if tenant.faults.notification_extras:
        item.update({"@odata.type": "#Microsoft.Graph.ChangeNotification", "resource": resource.lower(),
                     "sequenceNumber": next(_SEQUENCE), "encryptedContent": None})  # fmt: skip
    return item


def lifecycle_item(tenant: Tenant, sub: Subscription, event: str, form: str) -> dict[str, Any]:
    """A lifecycle notification item; the 'organizationId' form also carries validation tokens."""
    item: dict[str, Any] = {
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": iso_precise(sub.expiration),
        "clientState": sub.client_state,
        "lifecycleEvent": event,
    }
    if form == "organizationId":
        item["organizationId"] = tenant.tenant_id
        item["resource"] = sub.resource
        now = int(time.time())
        claims = {"aud": sub.application_id, "iss": "https://sts.windows.net/simulator/", "iat": now,
                  "exp": now + 3600, "tid": tenant.tenant_id, "appid": GRAPH_NOTIFICATION_APP}  # fmt: skip
        item["_validationTokens"] = [make_jwt(claims, b"simulator-validation-tokens")]
    else:
        item["tenantId"] = tenant.tenant_id
    return item
