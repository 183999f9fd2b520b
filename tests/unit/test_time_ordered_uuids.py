"""End User ids are UUIDv7: valid, unique, ascending within a batch and from one batch to a later one."""

import time
import uuid

from worker.store.end_users import time_ordered_uuids


def test_batch_is_valid_version_7_unique_and_ascending() -> None:
    ids = time_ordered_uuids(5000)
    assert {i.version for i in ids} == {7} and {i.variant for i in ids} == {uuid.RFC_4122}
    assert len(set(ids)) == 5000
    assert ids == sorted(ids)


def test_timestamp_is_now_in_milliseconds_and_later_batches_sort_after() -> None:
    before = int(time.time() * 1000)
    first = time_ordered_uuids(3)
    time.sleep(0.003)
    later = time_ordered_uuids(3)
    assert before <= first[0].int >> 80 <= int(time.time() * 1000)
    assert max(first) < min(later)


def test_empty_batch() -> None:
    assert time_ordered_uuids(0) == []
