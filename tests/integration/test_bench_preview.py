"""`entra-sync bench preview` at a small scale: what it reports, not its speed."""

from __future__ import annotations

from worker.bench.preview import bench_preview


async def test_bench_preview_reports_the_contract_cpu_and_a_reference() -> None:
    result = await bench_preview(users=300, runs=1)

    assert result.keys() >= {"bench", "users", "p50_ms", "p99_ms"}
    assert (result["bench"], result["users"]) == ("preview", 300)
    assert 0 < result["p50_ms"] <= result["p99_ms"]
    assert set(result["p50_ms_by_filters"]) == {"all", "department+domain", "group"}
    assert result["p50_python_cpu_ms"] > 0 and result["reference_ms"] > 0
    assert result["p50_postgres_cpu_ms"] is None or result["p50_postgres_cpu_ms"] >= 0
    everyone = result["answers"]["all"]
    # The Organization was synced with everyone's filters: previewing them again changes nothing.
    assert (everyone["would_create"], everyone["would_update"], everyone["would_stop_updating"]) == (0, 0, 0)
    assert everyone["would_review"] == result["initial_sync_counts"]["review"]  # still what it left to review
