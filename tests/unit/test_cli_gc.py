"""Every `entra-sync` command runs with the cycle collector's thresholds raised (see worker/cli.py)."""

from __future__ import annotations

import argparse
import gc

import pytest

from worker import cli


def test_commands_run_with_the_raised_collector_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int, int]] = []
    parser = argparse.ArgumentParser()
    parser.set_defaults(func=lambda _: seen.append(gc.get_threshold()))
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    before = gc.get_threshold()
    try:
        assert cli.main([]) == 0
    finally:
        gc.set_threshold(*before)
    assert seen == [cli.GC_THRESHOLDS] and cli.GC_THRESHOLDS[0] > before[0]
