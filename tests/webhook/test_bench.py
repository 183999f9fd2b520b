"""The webhook benchmark at small scale: correctness only (nothing lost, no errors), no timing assertions."""

from __future__ import annotations

from pathlib import Path

from worker.bench.webhook import bench_webhook


async def test_bench_webhook_small(tmp_path: Path) -> None:
    result = await bench_webhook(seconds=2, rate=200, state_dir=tmp_path)
    assert set(result) == {"bench", "notifications_per_s", "p50_ms", "p99_ms", "errors", "lost", "hello_rps"}
    assert result["bench"] == "webhook"
    assert (result["errors"], result["lost"]) == (0, 0)
    assert result["notifications_per_s"] > 0 and result["hello_rps"] > 0
    assert '"webhook.batch"' in (tmp_path / "webhook.log").read_text()
