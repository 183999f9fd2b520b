"""The preview pauses the cycle collector while it runs: overlapping previews resume it only when the last one
ends, and never turn on a collector that was off before."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from worker.engine.preview import _cycle_collector_paused


@pytest.fixture
def collector() -> Iterator[None]:
    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()


def test_overlapping_previews_resume_the_collector_when_the_last_ends(collector: None) -> None:
    gc.enable()
    first, second = _cycle_collector_paused(), _cycle_collector_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first preview ends while the second still runs
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off(collector: None) -> None:
    gc.disable()
    with _cycle_collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_the_collector_resumes_when_a_preview_fails(collector: None) -> None:
    gc.enable()
    with pytest.raises(RuntimeError), _cycle_collector_paused():
        raise RuntimeError("a read failed")
    assert gc.isenabled()
