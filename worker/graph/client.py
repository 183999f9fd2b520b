"""What the engines call on one tenant's Graph (`TenantGraph`): delta and paged reads of the directory, its
licences, sign-ins, MFA registrations and devices, and the subscription calls of the control plane; and
`prefetch`, which overlaps a caller's writes with the next pages' reads."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeVar

import msgspec

from worker.graph.errors import GraphNotFound
from worker.graph.session import GraphSession
from worker.graph.wire import (
    GROUP_PAGES,
    REGISTRATION_SELECT,
    USER_PAGES,
    USER_SELECT,
    GroupPage,
    ManagedDevice,
    RegistrationDetail,
    Sku,
    Subscription,
    SubscriptionList,
    UserPage,
    UserSignIn,
    decode_page,
    listing_decoder,
)

T = TypeVar("T")


async def prefetch(pages: AsyncIterator[T], *, depth: int) -> AsyncIterator[T]:
    """Iterate `pages` while up to `depth` further pages are fetched (and parsed) in the background.

    The consumer's database writes then overlap Graph's latency. An error of the producer surfaces at the
    point of the page that failed; leaving the loop early stops the producer.
    """
    queue: asyncio.Queue[tuple[T | None, BaseException | None, bool]] = asyncio.Queue(maxsize=depth)

    async def produce() -> None:
        try:
            async for page in pages:
                await queue.put((page, None, False))
            await queue.put((None, None, True))
        except Exception as exc:  # handed to the consumer, raised there
            await queue.put((None, exc, True))

    task = asyncio.create_task(produce())
    try:
        while True:
            page, error, done = await queue.get()
            if error is not None:
                raise error
            if done:
                return
            yield page  # type: ignore[misc]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class TenantGraph(GraphSession):
    """Graph calls for one Microsoft tenant; each is a `request` of its session (tokens, throttling, retries)."""

    # -- bulk: delta and paged reads -------------------------------------------------------------------

    async def users_delta(self, delta_link: str | None) -> AsyncIterator[UserPage]:
        """Walk /users/delta from `delta_link` (or from scratch) page by page, empty pages included.

        The last page carries `delta_link`. Raises DeltaTokenExpired when Graph wants a full restart.
        """
        url: str | None = delta_link or "/users/delta"
        params: dict[str, str] | None = None if delta_link else {"$select": USER_SELECT}
        while url:
            response = await self.request("GET", url, params=params)
            page: UserPage
            page, scrubbed = decode_page(USER_PAGES, response.content, "users")
            page.scrubbed = scrubbed
            yield page
            url, params = page.next_link, None

    async def groups_delta(self, delta_link: str | None) -> AsyncIterator[GroupPage]:
        """Walk /groups/delta with members; a large group may repeat across pages with other members."""
        url: str | None = delta_link or "/groups/delta"
        params: dict[str, str] | None = None if delta_link else {"$select": "id,displayName,members"}
        while url:
            response = await self.request("GET", url, params=params)
            page, _ = decode_page(GROUP_PAGES, response.content, "groups")
            yield page
            url, params = page.next_link, None

    async def _list(self, path: str, item: type[T], params: Mapping[str, str] | None = None) -> AsyncIterator[list[T]]:
        """Pages of a plain OData collection, each item parsed as `item`."""
        url: str | None = path
        while url:
            response = await self.request("GET", url, params=params)
            page, _ = decode_page(listing_decoder(item), response.content, path)  # type: ignore[arg-type]
            yield page.value
            url, params = page.next_link, None

    async def subscribed_skus(self) -> list[Sku]:
        return [sku async for page in self._list("/subscribedSkus", Sku) for sku in page]

    def sign_ins(self) -> AsyncIterator[list[UserSignIn]]:
        """signInActivity, only readable through /users with $select (pages of at most 120); P1/P2."""
        return self._list("/users", UserSignIn, {"$select": "id,signInActivity", "$top": "120"})

    def registration_details(self) -> AsyncIterator[list[RegistrationDetail]]:
        """MFA registration (P1/P2); the report skips disabled users."""
        return self._list("/reports/authenticationMethods/userRegistrationDetails", RegistrationDetail,
                          {"$select": REGISTRATION_SELECT})

    def managed_devices(self) -> AsyncIterator[list[ManagedDevice]]:
        """Intune devices with their MACs (ethernetMacAddress is often null in lists)."""
        return self._list("/deviceManagement/managedDevices", ManagedDevice,
                          {"$select": "id,userId,wiFiMacAddress,ethernetMacAddress"})

    # -- control plane: subscriptions ------------------------------------------------------------------

    async def create_subscription(
        self, *, resource: str, notification_url: str, lifecycle_url: str | None,
        client_state: str, expiration: str,
    ) -> Subscription:
        body: dict[str, Any] = {
            "changeType": "updated,deleted",
            "notificationUrl": notification_url,
            "resource": resource,
            "expirationDateTime": expiration,
            "clientState": client_state,
        }
        if lifecycle_url:
            body["lifecycleNotificationUrl"] = lifecycle_url
        response = await self.request("POST", "/subscriptions", json=body)
        return msgspec.json.decode(response.content, type=Subscription)

    async def renew_subscription(self, subscription_id: str, *, expiration: str) -> Subscription:
        response = await self.request(
            "PATCH", f"/subscriptions/{subscription_id}", json={"expirationDateTime": expiration}
        )
        return msgspec.json.decode(response.content, type=Subscription)

    async def reauthorize_subscription(self, subscription_id: str) -> None:
        await self.request("POST", f"/subscriptions/{subscription_id}/reauthorize")

    async def delete_subscription(self, subscription_id: str) -> None:
        try:
            await self.request("DELETE", f"/subscriptions/{subscription_id}")
        except GraphNotFound:
            pass

    async def list_subscriptions(self) -> list[Subscription]:
        response = await self.request("GET", "/subscriptions")
        return msgspec.json.decode(response.content, type=SubscriptionList).value

