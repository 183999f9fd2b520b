"""`entra-sync bench resync` at a small scale: correctness of the figures it reports, not speed."""

from __future__ import annotations

from worker.bench.resync import bench_resync

CONTRACT_KEYS = {"bench", "users", "seconds", "users_per_s", "peak_rss_mb", "fetch_only_users_per_s",
                 "sdk_users_per_s"}


async def test_bench_resync_reports_the_contract_and_a_quiet_second_run() -> None:
    result = await bench_resync(users=500)

    assert result.keys() >= CONTRACT_KEYS
    assert result["bench"] == "resync" and result["users"] == 500
    assert result["users_per_s"] > 0 and result["seconds"] > 0
    assert result["fetch_only_users_per_s"] > 0 and result["sdk_users_per_s"] > 0
    assert result["peak_rss_mb"] > 0
    assert result["second_run_end_user_writes"] == 0 and result["second_run_seconds"] > 0
