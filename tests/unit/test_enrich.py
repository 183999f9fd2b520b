"""Pure parts of the enrichment: a user's last sign-in from Graph's signInActivity, MFA rows; how a listing
shares its connection."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import msgspec
import pytest

from worker.engine.enrich import COPY_ROWS, Enricher, last_sign_in, mfa_of
from worker.graph import RegistrationDetail, UserSignIn


def sign_in(activity: dict[str, str | None] | None) -> UserSignIn:
    body = {"id": "u1"} | ({"signInActivity": activity} if activity is not None else {})
    return msgspec.json.decode(msgspec.json.encode(body), type=UserSignIn)


@pytest.mark.parametrize(("activity", "expected"), [
    pytest.param(None, None, id="never-signed-in-no-activity"),
    pytest.param({"lastSignInDateTime": "0001-01-01T00:00:00Z"}, None, id="graph-never-sentinel"),
    pytest.param({"lastSignInDateTime": "2026-11-01T09:30:00Z", "lastNonInteractiveSignInDateTime": None},
                 datetime(2026, 11, 1, 9, 30, tzinfo=UTC), id="interactive-only"),
    pytest.param({"lastSignInDateTime": "2026-11-01T09:30:00Z",
                  "lastNonInteractiveSignInDateTime": "2026-11-20T08:00:00.5Z",
                  "lastSuccessfulSignInDateTime": "0001-01-01T00:00:00Z"},
                 datetime(2026, 11, 20, 8, 0, 0, 500000, tzinfo=UTC), id="latest-of-three-with-fraction"),
])  # fmt: skip
def test_last_sign_in(activity: dict[str, str | None] | None, expected: datetime | None) -> None:
    assert last_sign_in(sign_in(activity)) == expected


def test_malformed_sign_in_time_is_refused_with_its_path() -> None:
    with pytest.raises(msgspec.ValidationError, match="lastSignInDateTime"):
        sign_in({"lastSignInDateTime": "yesterday"})


def test_mfa_prefers_the_users_choice_and_falls_back_to_the_systems() -> None:
    row = RegistrationDetail(id="u1", is_mfa_registered=True, is_mfa_capable=True,
                             methods_registered=["sms", "microsoftAuthenticatorPush"],
                             user_preferred_method_for_secondary_authentication="",
                             system_preferred_authentication_methods=["push"])
    assert mfa_of(row) == {"registered": True, "capable": True, "methods": ["microsoftAuthenticatorPush", "sms"],
                           "preferred_method": "push"}


async def test_a_listing_keeps_fetching_while_another_holds_the_connection_and_loses_no_row() -> None:
    """The sign-in listing is the longest chain: while MFA and devices are written on the shared connection,
    its pages are gathered instead of waiting, and written once the connection is free."""
    enricher = Enricher(graph=None, tenant_id="t")  # type: ignore[arg-type]  # _stream takes its pages
    fetched: list[int] = []
    written: list[list[int]] = []

    async def pages() -> AsyncIterator[list[int]]:
        for n in range(6):
            fetched.append(n)
            yield list(range(n * COPY_ROWS, (n + 1) * COPY_ROWS))

    async def write(rows: list[int]) -> None:
        written.append(rows)

    async with enricher._conn_turn:  # another listing's write in flight
        stream = asyncio.create_task(enricher._stream(pages(), lambda page: page, write))
        for _ in range(50):
            await asyncio.sleep(0)
        assert fetched == list(range(6)) and written == []
    assert await stream
    assert [row for rows in written for row in rows] == list(range(6 * COPY_ROWS))
