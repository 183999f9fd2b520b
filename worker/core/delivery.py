"""Pure decisions of the consumers: what becomes of one tenant's work after an attempt, and which offsets may
be committed.

No I/O, no clock (callers pass `now`, a monotonic time), no logging: the consumer loop performs what these
decide. Tenant isolation (ARCHITECTURE.md) lives here: each tenant's outcome is decided on its own, so one
tenant's failure or throttling never decides anything for another.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


class Kind(Enum):
    DONE = "done"  # the work is durable (or there was nothing to do)
    REFUSED = "refused"  # credentials or permissions refused: recorded on the tenant and its runs, not retried
    THROTTLED = "throttled"  # Graph asked the tenant to wait `retry_after` seconds
    TRANSIENT = "transient"  # Graph 5xx, network, PostgreSQL away: retried with backoff, without limit
    FAILED = "failed"  # anything else: retried up to the attempt budget, then dead-lettered


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    error: str = ""
    retry_after: float = 0.0


DONE = Outcome(Kind.DONE)


class Action(Enum):
    FINISH = "finish"  # nothing more to do: the tenant's records may be committed
    PARK = "park"  # hold the tenant's records (and any newer ones of the tenant) until `due`
    DEAD_LETTER = "dead_letter"  # give up: dead-letter the records, fail the runs, commit


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int  # attempts at work that fails non-transiently, the first included
    max_retry_after_s: float = 300.0
    base_backoff_s: float = 0.5
    max_backoff_s: float = 30.0

    def backoff(self, retries: int) -> float:
        """Delay before the next try after `retries` consecutive failed tries (1, 2, …)."""
        return min(self.max_backoff_s, self.base_backoff_s * 2 ** max(0, retries - 1))


def restart_delay(failures: int, *, cap_s: float, jitter: float) -> float:
    """How long a broken loop (a consumer, the scheduler's leadership) waits before it starts again after
    `failures` consecutive failures: doubling from 0.5 s, capped at `cap_s`, times `jitter` (the caller's
    random factor, 0.5 to 1.0, so that replicas broken together do not come back together)."""
    return min(cap_s, 0.5 * 2 ** min(failures, 32)) * jitter


@dataclass(frozen=True)
class Decision:
    action: Action
    due: float = 0.0  # PARK: when the tenant's work may run again
    attempts: int = 0  # non-transient failures so far (the dead-letter budget)
    retries: int = 0  # consecutive failed tries of any kind (the backoff)


def decide(outcome: Outcome, *, attempts: int, retries: int, now: float, policy: RetryPolicy) -> Decision:
    """What to do with a tenant's work after one attempt, given its failures so far."""
    if outcome.kind in (Kind.DONE, Kind.REFUSED):
        return Decision(Action.FINISH)
    if outcome.kind is Kind.THROTTLED:
        # Graph's word, capped; throttling is not a failure of the work and spends no attempt.
        wait = min(max(0.0, outcome.retry_after), policy.max_retry_after_s)
        return Decision(Action.PARK, due=now + wait, attempts=attempts, retries=retries)
    if outcome.kind is Kind.TRANSIENT:
        return Decision(Action.PARK, due=now + policy.backoff(retries + 1), attempts=attempts, retries=retries + 1)
    if attempts + 1 >= policy.max_attempts:
        return Decision(Action.DEAD_LETTER, attempts=attempts + 1, retries=retries + 1)
    return Decision(Action.PARK, due=now + policy.backoff(retries + 1), attempts=attempts + 1, retries=retries + 1)


def committable(taken: Mapping[K, int], held: Mapping[K, int]) -> dict[K, int]:
    """The offset to commit per partition: the next one after the last record taken, but never past a record
    still held (parked or in flight), whose lowest offset is `held[partition]`."""
    return {tp: min(offset, held[tp]) if tp in held else offset for tp, offset in taken.items()}


def to_commit(taken: Mapping[K, int], held: Mapping[K, int], committed: Mapping[K, int]) -> dict[K, int]:
    """`committable` offsets that move a partition forward from what was committed last."""
    return {tp: offset for tp, offset in committable(taken, held).items() if offset > committed.get(tp, -1)}


def poll_timeout_ms(now: float, dues: list[float], *, idle_ms: int) -> int:
    """How long a poll may block: until the earliest parked tenant is due, at most `idle_ms`."""
    if not dues:
        return idle_ms
    return max(0, min(idle_ms, math.ceil((min(dues) - now) * 1000 - 1e-6)))  # not before it is due
