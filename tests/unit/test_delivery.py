"""The consumers' pure decisions: retry budget, parking due time, Retry-After cap, what may be committed; and the
boundary cleaning of text PostgreSQL cannot store."""

from __future__ import annotations

import httpx
import msgspec
import pytest

from worker.core.delivery import (
    Action,
    Kind,
    Outcome,
    RetryPolicy,
    committable,
    decide,
    poll_timeout_ms,
    to_commit,
)
from worker.core.text import json_without_lone_surrogates, may_hold_unstorable, scrub, unstorable_warnings
from worker.graph import GraphUser, TenantThrottle, retry_after, retry_delay

POLICY = RetryPolicy(max_attempts=3, max_retry_after_s=300.0, base_backoff_s=0.5, max_backoff_s=30.0)
NOW = 1000.0


@pytest.mark.parametrize(
    "outcome,attempts,retries,action,due,attempts_after",
    [
        pytest.param(Outcome(Kind.DONE), 2, 4, Action.FINISH, 0.0, 0, id="done-finishes-whatever-came-before"),
        pytest.param(Outcome(Kind.REFUSED, "invalid_client"), 0, 0, Action.FINISH, 0.0, 0,
                     id="refused-credentials-finish-no-retry-loop"),
        pytest.param(Outcome(Kind.THROTTLED, retry_after=45), 0, 0, Action.PARK, NOW + 45, 0,
                     id="throttled-parks-until-retry-after"),
        pytest.param(Outcome(Kind.THROTTLED, retry_after=3600), 1, 0, Action.PARK, NOW + 300, 1,
                     id="throttled-retry-after-capped"),
        pytest.param(Outcome(Kind.THROTTLED, retry_after=-5), 0, 0, Action.PARK, NOW, 0,
                     id="throttled-negative-retry-after-is-now"),
        pytest.param(Outcome(Kind.TRANSIENT), 0, 0, Action.PARK, NOW + 0.5, 0, id="transient-first-backoff"),
        pytest.param(Outcome(Kind.TRANSIENT), 2, 3, Action.PARK, NOW + 4.0, 2,
                     id="transient-backoff-grows-spends-no-attempt"),
        pytest.param(Outcome(Kind.TRANSIENT), 2, 50, Action.PARK, NOW + 30.0, 2, id="transient-backoff-capped"),
        pytest.param(Outcome(Kind.FAILED), 0, 0, Action.PARK, NOW + 0.5, 1, id="failure-spends-an-attempt"),
        pytest.param(Outcome(Kind.FAILED), 1, 1, Action.PARK, NOW + 1.0, 2, id="second-failure-parks-again"),
        pytest.param(Outcome(Kind.FAILED), 2, 2, Action.DEAD_LETTER, 0.0, 3,
                     id="failure-at-budget-dead-letters"),
        pytest.param(Outcome(Kind.FAILED), 2, 9, Action.DEAD_LETTER, 0.0, 3,
                     id="transient-retries-before-do-not-save-it"),
    ],
)
def test_decide_matrix(outcome: Outcome, attempts: int, retries: int, action: Action, due: float,
                       attempts_after: int) -> None:
    decision = decide(outcome, attempts=attempts, retries=retries, now=NOW, policy=POLICY)
    assert decision.action is action
    assert decision.due == pytest.approx(due)
    if action is not Action.FINISH:
        assert decision.attempts == attempts_after


def test_one_attempt_budget_dead_letters_at_the_first_failure() -> None:
    decision = decide(Outcome(Kind.FAILED), attempts=0, retries=0, now=NOW, policy=RetryPolicy(max_attempts=1))
    assert decision.action is Action.DEAD_LETTER


@pytest.mark.parametrize(
    "taken,held,expect",
    [
        pytest.param({"p0": 10}, {}, {"p0": 10}, id="nothing-held-commits-all-taken"),
        pytest.param({"p0": 10}, {"p0": 4}, {"p0": 4}, id="never-past-a-parked-record"),
        pytest.param({"p0": 10, "p1": 7}, {"p0": 4}, {"p0": 4, "p1": 7}, id="other-partitions-unaffected"),
        pytest.param({"p0": 10}, {"p1": 2}, {"p0": 10}, id="held-elsewhere-irrelevant"),
    ],
)
def test_committable_matrix(taken: dict[str, int], held: dict[str, int], expect: dict[str, int]) -> None:
    assert committable(taken, held) == expect


@pytest.mark.parametrize(
    "taken,held,committed,expect",
    [
        pytest.param({"p0": 10}, {}, {"p0": 10}, {}, id="already-committed"),
        pytest.param({"p0": 10}, {"p0": 4}, {"p0": 4}, {}, id="held-at-the-committed-offset"),
        pytest.param({"p0": 12}, {}, {"p0": 4}, {"p0": 12}, id="parked-work-finished-moves-on"),
        pytest.param({"p0": 3}, {}, {}, {"p0": 3}, id="first-commit"),
    ],
)
def test_to_commit_matrix(taken: dict[str, int], held: dict[str, int], committed: dict[str, int],
                          expect: dict[str, int]) -> None:
    assert to_commit(taken, held, committed) == expect


@pytest.mark.parametrize(
    "dues,expect",
    [
        pytest.param([], 500, id="nothing-parked-idle-poll"),
        pytest.param([NOW + 0.2], 200, id="wake-when-due"),
        pytest.param([NOW + 9, NOW + 0.05], 50, id="earliest-due"),
        pytest.param([NOW - 1], 0, id="overdue-no-wait"),
        pytest.param([NOW + 60], 500, id="far-due-idle-poll"),
    ],
)
def test_poll_timeout_matrix(dues: list[float], expect: int) -> None:
    assert poll_timeout_ms(NOW, dues, idle_ms=500) == expect


@pytest.mark.parametrize(
    "header,cap,expect",
    [
        pytest.param("45", 300.0, 45.0, id="seconds"),
        pytest.param("2.128", 300.0, 2.128, id="fractional"),
        pytest.param("3600", 300.0, 300.0, id="capped"),
        pytest.param("-1", 300.0, 0.0, id="negative-is-zero"),
        pytest.param("Wed, 21 Oct 2015 07:28:00 GMT", 300.0, None, id="http-date-ignored"),
        pytest.param("nan", 300.0, None, id="nan-ignored"),
        pytest.param(None, 300.0, None, id="absent"),
    ],
)
def test_retry_after_matrix(header: str | None, cap: float, expect: float | None) -> None:
    assert retry_after(header, cap=cap) == expect


def test_retry_delay_honours_the_cap() -> None:
    response = httpx.Response(429, headers={"Retry-After": "900"})
    assert retry_delay(response, 0, cap=120.0) == 120.0


async def test_a_paused_tenant_past_the_inline_wait_raises_instead_of_sleeping() -> None:
    from worker.graph import GraphThrottled

    throttle = TenantThrottle(2, max_wait_s=5.0)
    throttle.pause(45)
    with pytest.raises(GraphThrottled) as raised:
        async with throttle:
            pass
    assert 44 < raised.value.retry_after <= 45
    throttle.resume_at = 0.0
    async with throttle, throttle:  # the semaphore was given back: both slots are free
        pass


@pytest.mark.parametrize(
    "raw,job_title,phones,changed",
    [
        pytest.param(rb'{"id":"u","jobTitle":"Chief\u0000Officer"}', "ChiefOfficer", [], ["jobTitle"], id="nul"),
        pytest.param(rb'{"id":"u","jobTitle":"A\ud800B"}', "AB", [], ["jobTitle"], id="lone-high-surrogate"),
        pytest.param(rb'{"id":"u","businessPhones":["1\udc00"]}', None, ["1"], ["businessPhones[0]"],
                     id="lone-low-surrogate-in-a-list"),
        pytest.param(rb'{"id":"u","jobTitle":"\ud83d\ude00"}', "\U0001f600", [], [], id="valid-pair-kept"),
        pytest.param(rb'{"id":"u","jobTitle":"C:\\u0000"}', "C:\\u0000", [], [], id="escaped-backslash-is-text"),
        pytest.param(rb'{"id":"u","jobTitle":"Plain"}', "Plain", [], [], id="clean-untouched"),
    ],
)
def test_unstorable_text_is_removed_and_named(raw: bytes, job_title: str | None, phones: list[str],
                                              changed: list[str]) -> None:
    user = msgspec.json.decode(json_without_lone_surrogates(raw), type=GraphUser)
    assert scrub(user) == changed
    assert (user.job_title, user.business_phones) == (job_title, phones)
    if changed:
        assert may_hold_unstorable(raw)


def test_unstorable_warning_counts_and_names_a_few() -> None:
    assert unstorable_warnings([]) == []
    [warning] = unstorable_warnings([f"u{i} jobTitle" for i in range(12)], shown=2)
    assert warning.startswith("12 value(s)") and "u0 jobTitle, u1 jobTitle and 10 more" in warning


def test_a_broken_loop_restarts_after_a_doubling_capped_jittered_delay() -> None:
    from worker.core.delivery import restart_delay

    assert [restart_delay(n, cap_s=30.0, jitter=1.0) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert restart_delay(7, cap_s=60.0, jitter=1.0) == 60.0 and restart_delay(6, cap_s=60.0, jitter=1.0) == 32.0
    assert restart_delay(3, cap_s=30.0, jitter=0.5) == 2.0
    assert restart_delay(10_000, cap_s=30.0, jitter=1.0) == 30.0  # no overflow after a long outage
