"""Runs: one Organization's share of a unit of work, its counts and its `sync_runs` record, and the end of a run
with the accidental-deletion guard (deactivations applied, or held for the operator's confirmation)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog

from worker.core.model import OrgContext, Plan, StateChange
from worker.core.reconcile import hold_deactivations
from worker.store import Conn, Pool, holds, mirror, sync_writes, tenants

log = structlog.get_logger(__name__)

REFUSALS_SHOWN = 20  # per run, refused users named in its warnings one by one; the rest are counted
STOPPED = ("stopped: the Organization no longer syncs from this Microsoft tenant (re-assigned, unmapped,"
           " remapped or disabled while the run went on); what it wrote before is kept")


@dataclass
class OrgRun:
    """Counts and state of one Organization's run within a unit of work."""

    org: OrgContext
    kind: str
    run_id: str | None = None
    record_always: bool = True
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("created", "updated", "unchanged", "out_of_scope", "stopped", "deactivated", "review", "excluded",
         "errors"), 0))
    pending_deactivations: list[StateChange] = field(default_factory=list)
    held: bool = False
    confirmed: bool = False  # the operator confirmed: deactivations bypass the guard
    warnings: list[str] = field(default_factory=list)
    recorded: bool = False  # the sync_runs row exists and is running
    stopped: bool = False  # the Organization stopped syncing from this tenant while the run went on

    def add(self, plan: Plan) -> None:
        self.counts["created"] += len(plan.creates)
        self.counts["updated"] += len(plan.updates)
        self.counts["unchanged"] += plan.unchanged
        # `stopped`: End Users this run moved out of scope (a preview's would_stop_updating); `out_of_scope`
        # also counts users that were out of scope already.
        stopped = sum(1 for c in plan.state_changes if c.sync_state == "out_of_scope")
        self.counts["stopped"] += stopped
        self.counts["out_of_scope"] += plan.out_of_scope + stopped
        self.counts["review"] += len(plan.reviews)
        self.counts["excluded"] += plan.excluded
        self.pending_deactivations.extend(plan.deactivations)

    @property
    def wrote(self) -> bool:
        """Whether the run did something worth a record. Deactivations are not counted here: `finish_runs`
        records a run that applies or holds them itself, and not one whose only news is a hold another run
        keeps."""
        c = self.counts
        return bool(c["created"] or c["updated"] or c["out_of_scope"] or c["review"] or c["errors"])

    def would_write(self, plan: Plan) -> bool:
        """`wrote`, once `plan` is added."""
        return self.wrote or bool(
            plan.creates or plan.updates or plan.out_of_scope or plan.reviews
            or any(c.sync_state == "out_of_scope" for c in plan.state_changes))

    def refused(self, refusals: Sequence[tuple[str, Exception]]) -> None:
        """Count users whose write PostgreSQL refused (left out of the run, kept flagged for the next sync) and
        name the first `REFUSALS_SHOWN` in the run's warnings (the log names every one)."""
        for object_id, exc in refusals:
            self.counts["errors"] += 1
            log.warning("sync.user_refused", tenant_id=self.org.tenant_id, organization_id=self.org.organization_id,
                        run_id=self.run_id, entra_object_id=object_id, error=_refusal(exc))
            if self.counts["errors"] <= REFUSALS_SHOWN:
                self.warnings.append(f"Entra user {object_id} was not written: PostgreSQL refused it ({_refusal(exc)});"
                                     " it stays flagged and is tried again at the next sync")
            elif self.counts["errors"] == REFUSALS_SHOWN + 1:
                self.warnings.append(f"more than {REFUSALS_SHOWN} Entra users were not written (see `errors`); the"
                                     " worker's log names each (sync.user_refused)")

    async def ensure_row(self, conn: Conn) -> str:
        if self.run_id is None or not self.recorded:
            self.run_id = await sync_writes.start_run(
                conn, kind=self.kind, tenant_id=self.org.tenant_id,
                organization_id=self.org.organization_id, run_id=self.run_id,
            )
            self.recorded = True
        return self.run_id


def totals(runs: Sequence[OrgRun]) -> dict[str, int]:
    summed: dict[str, int] = {}
    for run in runs:
        for key, value in run.counts.items():
            summed[key] = summed.get(key, 0) + value  # `held` among them: deactivations the guard kept back
    return summed


def _refusal(exc: Exception) -> str:
    """PostgreSQL's words for a refused write: SQLSTATE and message."""
    state = getattr(exc, "sqlstate", None)
    return f"{state} {exc}" if state else f"{type(exc).__name__}: {exc}"


async def recheck_mapping(conn: Conn, runs: Sequence[OrgRun]) -> None:
    """Inside a write transaction: mark the runs whose Organization no longer syncs from their tenant.

    Operator actions and running syncs exclude each other this way rather than by the tenant lock: the worker
    holds that lock for a whole resync (a minute for a large tenant), and an operator's re-assign must not
    wait for it. Each write transaction takes the tenant's mapping lock shared and re-reads the mapping
    (`still_syncing`); the operator takes it exclusive, so it waits at most for the chunk being written, and
    nothing of the old mapping is written after the API answered."""
    live = [run for run in runs if not run.stopped]
    if not live:
        return
    syncing = await tenants.still_syncing(conn, live[0].org.tenant_id, [run.org.organization_id for run in live])
    for run in live:
        if run.org.organization_id not in syncing:
            run.stopped = True
            log.warning("sync.organization_stopped", tenant_id=run.org.tenant_id,
                        organization_id=run.org.organization_id, run_id=run.run_id, kind=run.kind)


@asynccontextmanager
async def closing_on_failure(pool: Pool, runs: Sequence[OrgRun]) -> AsyncIterator[None]:
    """A projection that fails ends the runs it recorded itself `failed` with the error (a retry records
    new ones); an org-sync's run, queued by the admin API, stays for the retry (the consumer fails it when
    it gives up)."""
    try:
        yield
    except Exception as exc:
        ids = [r.run_id for r in runs if r.recorded and r.run_id and r.kind != "org-sync"]
        if ids:
            error = f"interrupted: {type(exc).__name__}: {exc}"[:500]
            with contextlib.suppress(Exception):  # best effort: PostgreSQL may be what failed
                async with asyncio.timeout(5), pool.acquire() as conn:
                    await sync_writes.fail_runs(conn, ids, error)
        raise


async def finish_runs(conn: Conn, tenant_id: str, runs: Sequence[OrgRun], *, ratio: float) -> None:
    """Apply or hold each run's deactivations (accidental-deletion guard: more than `ratio` of the
    Organization's synced End Users at once waits for confirmation), then close its record; one transaction
    a run.

    One held run per Organization: deactivations held while the Organization has a held run are added to
    that run (the held users stay flagged, so every later batch decides them again); a run that holds none
    ends the hold (applied, or nobody is leaving any more)."""
    for run in runs:
        async with conn.transaction():
            await recheck_mapping(conn, [run])
            if run.stopped:
                if run.run_id and (run.recorded or run.kind == "org-sync"):
                    await sync_writes.finish_run(conn, run.run_id, status="failed", counts=run.counts,
                                               warnings=run.warnings, error=STOPPED)
                continue
            await _settle_deactivations(conn, tenant_id, run, ratio=ratio)
            await _close(conn, run)


async def _settle_deactivations(conn: Conn, tenant_id: str, run: OrgRun, *, ratio: float) -> None:
    """Hold the run's pending deactivations if the guard says so, else apply them and end the Organization's
    hold."""
    pending = run.pending_deactivations
    held_run = await holds.lock_held_run(conn, run.org.organization_id)
    if pending and not run.confirmed and hold_deactivations(
            len(pending), await sync_writes.synced_count(conn, run.org.organization_id), ratio=ratio):
        await _hold(conn, run, held_run, ratio=ratio)
        return
    if pending:
        await run.ensure_row(conn)
        await sync_writes.apply_state_changes(conn, run_id=run.run_id, changes=pending)
        await mirror.clear_dirty(conn, tenant_id, [c.entra_object_id for c in pending])
        run.counts["deactivated"] = len(pending)
    if held_run is not None:
        by = f" by run {run.run_id}" if run.run_id else ""
        await holds.release(conn, held_run, note=(
            f"hold ended{by}: {len(pending)} deactivations applied" if pending else
            f"hold ended{by}: none of the held users is leaving any more"))


async def _close(conn: Conn, run: OrgRun) -> None:
    """End the run's record (a held run keeps the users it holds), if it has one worth keeping."""
    if run.run_id and (run.wrote or run.record_always or run.recorded):
        await sync_writes.finish_run(conn, run.run_id, status="held" if run.held else "succeeded",
                                   counts=run.counts, warnings=run.warnings)
        if run.held:
            await holds.hold(conn, run.run_id, [c.entra_object_id for c in run.pending_deactivations])


async def _hold(conn: Conn, run: OrgRun, held_run: str | None, *, ratio: float) -> None:
    pending = run.pending_deactivations
    if held_run is None:  # this run becomes the Organization's held run
        run.held = True
        run.counts["held"] = len(pending)
        run.warnings.append(f"{len(pending)} deactivations held: more than {ratio:.0%} of the Organization's "
                            "synced End Users; confirm the run to apply them, or dismiss it")
        await run.ensure_row(conn)
        return
    await holds.hold(conn, held_run, [c.entra_object_id for c in pending])
    if run.run_id is not None:
        run.warnings.append(f"{len(pending)} deactivations held in run {held_run}, awaiting confirmation")
