"""Pure parts of the consumers: coalescing a batch per tenant, the commit policy, decoding poison."""

from __future__ import annotations

import msgspec
import pytest
from aiokafka import ConsumerRecord

from schemas import messages
from worker.processes.consumers import CommitPolicy, decode_batch
from worker.processes.work import coalesce


def change(tenant: str) -> messages.ChangeNotification:
    return messages.ChangeNotification(tenant_id=tenant, subscription_id="s", change_type="updated",
                                       resource=f"Users/{tenant}-u", received_at="t")


def command(tenant: str, name: str, org: str | None = None) -> messages.Command:
    return messages.Command(command=name, tenant_id=tenant, organization_id=org, run_id="r" if org else None,
                            requested_at="t")  # type: ignore[arg-type]


def lifecycle(tenant: str, event: str) -> messages.LifecycleNotification:
    return messages.LifecycleNotification(tenant_id=tenant, subscription_id="sub", lifecycle_event=event,
                                          received_at="t")


def test_many_notifications_of_one_tenant_become_one_delta() -> None:
    work = coalesce([("n", change("a")) for _ in range(50)] + [("n", change("b"))])
    assert set(work) == {"a", "b"}
    assert work["a"].delta and not work["a"].resync


@pytest.mark.parametrize(
    "msg,expect",
    [
        pytest.param(command("a", "resync"), {"resync": True}, id="resync-command"),
        pytest.param(command("a", "renew-subscriptions"), {"renew": True}, id="renew-command"),
        pytest.param(command("a", "org-sync", "o1"), {"renew": True, "org_syncs": {"o1": "r"}}, id="org-sync"),
        pytest.param(lifecycle("a", "reauthorizationRequired"), {"reauthorize": {"sub"}}, id="reauthorize"),
        pytest.param(lifecycle("a", "subscriptionRemoved"), {"recreate": True, "resync": True}, id="removed"),
        pytest.param(lifecycle("a", "missed"), {"resync": True}, id="missed"),
    ],
)
def test_coalesce_matrix(msg: msgspec.Struct, expect: dict[str, object]) -> None:
    work = coalesce([("t", msg)])["a"]
    for key, value in expect.items():
        assert getattr(work, key) == value


@pytest.mark.parametrize(
    "now,last,pending,commit",
    [(10.0, 9.5, 3, False), (10.0, 8.9, 3, True), (10.0, 0.0, 0, False)],
    ids=["throttled", "interval-elapsed", "nothing-pending"],
)
def test_commit_policy(now: float, last: float, pending: int, commit: bool) -> None:
    assert CommitPolicy(interval_s=1.0, last=last).should_commit(now, pending) is commit


def _record(topic: str, value: bytes, offset: int = 0) -> ConsumerRecord:
    return ConsumerRecord(topic=topic, partition=0, offset=offset, timestamp=0, timestamp_type=0, key=b"a",
                          value=value, checksum=None, serialized_key_size=1, serialized_value_size=len(value),
                          headers=())


def test_undecodable_messages_are_poison_and_good_ones_pass() -> None:
    good = _record("entra.notifications", messages.encode(change("a")))
    bad = _record("entra.notifications", b"{not json", offset=1)
    wrong_topic = _record("elsewhere", b"{}", offset=2)
    decoded, poison = decode_batch([good, bad, wrong_topic])
    assert decoded == [("entra.notifications", change("a"))]
    assert [r.offset for r, _ in poison] == [1, 2]
