"""`core.preview`: what earlier chunks' plans leave behind for later chunks (`Written`), and the counting of plans
as a run counts them (`Tally`), as named matrices."""

from __future__ import annotations

from typing import Any

import pytest

from worker.core.filters import compile_filters
from worker.core.model import END_USER_FIELDS, Filters, MirrorUser, OrgContext, StoredEndUser
from worker.core.preview import SAMPLE_SIZE, Tally, Written
from worker.core.reconcile import reconcile

ORG = OrgContext(organization_id="org1", tenant_id="t1", filters=Filters())


def table(rows: list[tuple[Any, ...]]) -> list[Any]:
    return [pytest.param(*row[1:], id=row[0]) for row in rows]


def entra(oid: str, mail: str | None, **kw: Any) -> MirrorUser:
    return MirrorUser(tenant_id="t1", id=oid, display_name=oid, mail=mail, user_principal_name=f"{oid}@upn.example",
                      account_enabled=True, **kw)


def end_user(eu_id: str, email: str | None, *, oid: str | None = None, state: str = "manual") -> StoredEndUser:
    return StoredEndUser(id=eu_id, organization_id="org1", sync_state=state,  # type: ignore[arg-type]
                         fields=dict.fromkeys(END_USER_FIELDS, None) | {"email": email},
                         entra_tenant_id="t1" if oid else None, entra_object_id=oid)


def index(*ends: StoredEndUser) -> dict[str, list[StoredEndUser]]:
    out: dict[str, list[StoredEndUser]] = {}
    for e in ends:
        if e.fields["email"]:
            out.setdefault(str(e.fields["email"]).lower(), []).append(e)
    return out


def decide(written: Written, users: list[MirrorUser], linked: dict[str, StoredEndUser],
           stored: dict[str, list[StoredEndUser]]) -> list[str]:
    """One chunk as the preview decides it; its plan as short strings."""
    keys = {(u.mail or "").lower() for u in users} | {f"{u.id}@upn.example" for u in users}
    by_email = written.over(stored, keys)
    plan = reconcile(users, org=ORG, linked=linked, by_email=by_email)
    written.record(plan, linked=linked, by_email=by_email)
    return ([f"create {c.entra_object_id}" for c in plan.creates]
            + [f"{'adopt' if x.link else 'update'} {x.end_user_id}" for x in plan.updates]
            + [f"review {r.entra_object_id}" for r in plan.reviews])


# Each row: chunk 1 is decided and recorded, then chunk 2 sees the database rows (`stored2`) with chunk 1's
# writes laid over them, as the sync's second chunk reads them after the first was written.
CHUNK_CASES = [
    ("email-created-earlier-is-taken", [entra("a", "x@c.com")], {}, [entra("b", "x@c.com")], {},
     ["review b"]),
    ("adopted-earlier-is-no-candidate", [entra("a", "m@c.com")], index(end_user("m", "m@c.com")),
     [entra("b", "m@c.com")], index(end_user("m", "m@c.com")), ["review b"]),
    ("email-freed-by-an-update-is-free", [entra("a", "new@c.com")], index(end_user("e", "old@c.com", oid="a",
                                                                              state="synced")),
     [entra("b", "old@c.com")], index(end_user("e", "old@c.com", oid="a", state="synced")), ["create b"]),
    ("nothing-shared", [entra("a", "a@c.com")], {}, [entra("b", "b@c.com")], {}, ["create b"]),
]


@pytest.mark.parametrize(("chunk1", "stored1", "chunk2", "stored2", "expected"), table(CHUNK_CASES))
def test_later_chunks_see_what_earlier_ones_would_write(
    chunk1: list[MirrorUser], stored1: dict[str, list[StoredEndUser]], chunk2: list[MirrorUser],
    stored2: dict[str, list[StoredEndUser]], expected: list[str],
) -> None:
    written = Written(ORG)
    linked1 = {e.entra_object_id: e for es in stored1.values() for e in es if e.entra_object_id}
    decide(written, chunk1, linked1, stored1)
    assert decide(written, chunk2, {}, stored2) == expected


def test_tally_counts_as_a_run_and_samples_the_first_ids() -> None:
    users = [entra(f"u{i:02d}", f"u{i}@c.com") for i in range(8, 0, -1)]
    gone = end_user("g", "g@c.com", oid="gone", state="synced")
    linked = {"gone": gone}
    left = MirrorUser(tenant_id="t1", id="gone", mail="g@c.com", department="Other")
    f = Filters(departments=("Sales",))
    plan_in = reconcile(users, org=ORG, linked={}, by_email={})
    plan_out = reconcile([left], org=OrgContext(organization_id="org1", tenant_id="t1", filters=f), linked=linked,
                         by_email={})
    tally = Tally()
    tally.add(plan_in, users, in_scope=compile_filters(Filters()))
    tally.add(plan_out, [left], in_scope=compile_filters(f))
    assert (tally.counts["would_create"], tally.counts["would_stop_updating"], tally.matching) == (8, 1, 8)
    assert [s["entra_object_id"] for s in tally.samples["would_create"]] == [f"u{i:02d}" for i in range(1, 6)]
    assert len(tally.samples["would_create"]) == SAMPLE_SIZE
    assert tally.samples["would_stop_updating"][0]["end_user_id"] == "g"
