"""A chunk of the projection: one keyset page of mirror users, the End Users they meet, what each run decides
for them, and writing that in one transaction (or by halves, when PostgreSQL refuses some user's values)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence, Set
from dataclasses import dataclass, field

import msgspec

from worker.core.model import MirrorUser, Plan, StoredEndUser
from worker.core.reconcile import reconcile
from worker.engine.runs import OrgRun, recheck_mapping
from worker.store import VALUE_REFUSALS, Conn, DeadlockDetected, mirror, sync_writes
from worker.store.end_users import StaleRead

# A chunk's write refused for its values (`worker.store.VALUE_REFUSALS`) or stale reads: the chunk is written
# by halves and only the users PostgreSQL refuses are left out.
USER_REFUSALS: tuple[type[Exception], ...] = (*VALUE_REFUSALS, StaleRead)
# A chunk's write refused so is decided again from fresh reads and written once more (`write_last_try`).
DECIDE_AGAIN: tuple[type[Exception], ...] = (DeadlockDetected, *USER_REFUSALS)

EndUsers = tuple[dict[str, StoredEndUser], dict[str, list[StoredEndUser]]]  # linked by object id, by email
# What else a chunk's write transaction does once its plans are written (the projection clears flags).
Written = Callable[[Conn, "Chunk"], Awaitable[None]]


@dataclass(eq=False)
class Chunk:
    """One keyset page of mirror users with, per run, the End Users they are linked to or share an email with,
    and what each run will do about them."""

    ids: list[str]
    users: list[MirrorUser]
    end_users: list[EndUsers]
    plans: list[Plan] = field(default_factory=list)  # per run, from `decide`
    unseen: list[Chunk] = field(default_factory=list)  # earlier chunks not yet written when this one was read
    committed: bool = False
    refused: frozenset[str] = frozenset()  # users whose write PostgreSQL refused (`write_last_try`)
    _reach: frozenset[str] | None = None

    def emails(self) -> frozenset[str]:
        """The emails, as the email index compares them, that this chunk's creates and updates give End Users."""
        fields = [x.fields for plan in self.plans for x in plan.creates] + [
            x.fields for plan in self.plans for x in plan.updates]
        return frozenset(email.strip().lower() for f in fields if (email := f.get("email")))

    def decide(self, runs: Sequence[OrgRun]) -> None:
        """Decide each run's plan for these users from the End Users read, replacing `plans` (and the cached
        `reach`). Nothing is counted nor written here: the runs count a plan once the chunk is written."""
        self.plans = [reconcile(self.users, org=run.org, linked=linked, by_email=by_email)
                      for run, (linked, by_email) in zip(runs, self.end_users, strict=True)]
        self._reach = None

    def reach(self) -> frozenset[str]:
        """Every address (lower-cased) this chunk's decisions read or its writes touch, however it is decided:
        its users' mail and UPN (what it looks End Users up by, and what it gives them), and the emails of the
        End Users it read (an update may move one away, an adoption link it). Another chunk's writes can change
        these decisions, or these writes another chunk's decisions, only through an address both reach."""
        if self._reach is None:
            held = [e.fields.get("email") for linked, by_email in self.end_users
                    for e in (*linked.values(), *(x for es in by_email.values() for x in es))]
            raw = [u.mail for u in self.users] + [u.user_principal_name for u in self.users] + held
            # map over C-level str methods: a chunk of 2,000 users costs a few milliseconds
            self._reach = frozenset(map(str.lower, map(str.strip, filter(None, raw)))) | self.emails()
        return self._reach

    def depends(self) -> list[Chunk]:
        """The earlier chunks this one was read before they were written and shares an address with: it is
        decided again once they are in (the first call only; it forgets them)."""
        before, self.unseen = self.unseen, []
        return [c for c in before if not c.reach().isdisjoint(self.reach())]


def all_committed(chunks: Sequence[Chunk]) -> bool:
    return all(c.committed for c in chunks)


async def write_chunk(conn: Conn, chunk: Chunk, runs: Sequence[OrgRun], written: Written | None) -> bool:
    """Write one decided chunk for every run in one transaction, counting it once committed; False when
    the email index refused a create decided from stale reads, an adoption found its End User linked since
    it was read (`StaleRead`), PostgreSQL broke a deadlock between two writers creating End Users with
    crossing emails, or refused a user's values (nothing of the chunk is kept, nor counted): the caller
    decides it again and writes it with `write_last_try`."""
    async def then(on: Conn) -> None:
        if written is not None:
            await written(on, chunk)

    try:
        await _write_plans(conn, runs, chunk.plans, then)
    except DECIDE_AGAIN:
        return False
    chunk.committed = True
    for run, plan in zip(runs, chunk.plans, strict=True):
        if not run.stopped:
            run.add(plan)
    return True


async def write_last_try(conn: Conn, chunk: Chunk, runs: Sequence[OrgRun], written: Written | None) -> None:
    """Write a chunk decided from fresh reads, with nothing written beside it. What PostgreSQL still refuses
    is refused for the values of some user (`USER_REFUSALS`): the chunk is then written by halves (bisected
    down to single users), every user it accepts is written, and each user it refuses in a run is left out
    of that run — counted in `errors`, named in its warnings, and kept flagged, so the next unit of work
    tries it again. When it refuses every user of the chunk (more than one), the fault is not any user's:
    the error is raised and the unit of work fails (and is retried) as before."""
    if await write_chunk(conn, chunk, runs, written):
        return
    items = sorted({(r, oid) for r, plan in enumerate(chunk.plans) for oid in _written_ids(plan)})
    refused: dict[tuple[int, str], Exception] = {}
    await _write_by_halves(conn, chunk, runs, items, refused)
    if len(refused) == len(items) > 1:
        raise next(iter(refused.values()))  # every user refused: not any one user's values
    chunk.refused = frozenset(oid for _, oid in refused)
    per_run = [[(oid, exc) for (r2, oid), exc in refused.items() if r2 == r] for r in range(len(runs))]
    for run, mine in zip(runs, per_run, strict=True):
        if mine and not run.stopped:
            await run.ensure_row(conn)
    async with conn.transaction():
        if written is not None:
            await written(conn, chunk)  # clears the chunk's flags
        if chunk.refused:  # flagged again (an org-sync's, which had none, too): the next unit tries them
            await mirror.flag_users(conn, runs[0].org.tenant_id, chunk.refused)
    chunk.committed = True
    for run, plan, mine in zip(runs, chunk.plans, per_run, strict=True):
        if not run.stopped:
            run.add(_without(plan, {oid for oid, _ in mine}))
            run.refused(mine)


async def _write_by_halves(
    conn: Conn, chunk: Chunk, runs: Sequence[OrgRun], part: Sequence[tuple[int, str]],
    refused: dict[tuple[int, str], Exception],
) -> None:
    """Write what the chunk's plans write for the (run index, user) pairs `part`, bisecting what PostgreSQL
    refuses down to single users, each of which is put in `refused`."""
    plans = [_only(plan, {oid for r2, oid in part if r2 == r}) for r, plan in enumerate(chunk.plans)]
    try:
        await _write_plans(conn, runs, plans)
    except USER_REFUSALS as exc:
        if len(part) == 1:
            refused[part[0]] = exc
            return
        await _write_by_halves(conn, chunk, runs, part[:len(part) // 2], refused)
        await _write_by_halves(conn, chunk, runs, part[len(part) // 2:], refused)


async def _write_plans(
    conn: Conn, runs: Sequence[OrgRun], plans: Sequence[Plan],
    then: Callable[[Conn], Awaitable[None]] | None = None,
) -> None:
    """Write each live run's plan, then `then`, in one transaction; on failure nothing of it is kept (a run
    row created in it is forgotten) and the error is raised."""
    recorded = [run.recorded for run in runs]
    try:
        async with conn.transaction():
            await recheck_mapping(conn, runs)
            for run, plan in zip(runs, plans, strict=True):
                if run.stopped:
                    continue
                if run.record_always or run.would_write(plan):
                    await run.ensure_row(conn)
                await sync_writes.apply_plan(conn, org=run.org, run_id=run.run_id, plan=plan,
                                           include_deactivations=False)
            if then is not None:
                await then(conn)
    except BaseException:
        for run, was in zip(runs, recorded, strict=True):
            run.recorded = was  # a run row created in the rolled-back transaction is gone with it
        raise


def _written_ids(plan: Plan) -> set[str]:
    """The users a chunk's write of `plan` writes something for (deactivations wait for `finish_runs`)."""
    return {x.entra_object_id for items in (plan.creates, plan.updates, plan.state_changes, plan.reviews)
            for x in items}


def _only(plan: Plan, ids: Set[str]) -> Plan:
    """What the chunk's write of `plan` writes for the users `ids`, nothing else (no counts)."""
    return Plan(creates=tuple(x for x in plan.creates if x.entra_object_id in ids),
                updates=tuple(x for x in plan.updates if x.entra_object_id in ids),
                state_changes=tuple(x for x in plan.state_changes if x.entra_object_id in ids),
                reviews=tuple(x for x in plan.reviews if x.entra_object_id in ids))


def _without(plan: Plan, ids: Set[str]) -> Plan:
    """`plan` without what it writes for the users `ids`."""
    return msgspec.structs.replace(
        plan, creates=tuple(x for x in plan.creates if x.entra_object_id not in ids),
        updates=tuple(x for x in plan.updates if x.entra_object_id not in ids),
        state_changes=tuple(x for x in plan.state_changes if x.entra_object_id not in ids),
        reviews=tuple(x for x in plan.reviews if x.entra_object_id not in ids))
