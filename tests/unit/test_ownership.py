"""Field ownership, leaver evidence and undo decisions (`worker.core.ownership`) as named matrices."""

from __future__ import annotations

from typing import Any

import pytest

from worker.core.model import END_USER_FIELDS, MirrorUser, StoredEndUser, SyncState
from worker.core.ownership import (
    SKIP_GONE,
    SKIP_NOTHING,
    SKIP_OPERATOR,
    JournalEvent,
    UndoSubject,
    cause_in_force,
    leaver_evidence,
    merge_fields,
    plan_undo,
)


def table(rows: list[tuple[Any, ...]]) -> list[Any]:
    return [pytest.param(*row[1:], id=row[0]) for row in rows]


def fields(**values: str | None) -> dict[str, str | None]:
    return dict.fromkeys(END_USER_FIELDS, None) | values


MERGE_CASES = [
    # id, stored, projected, Entra supplied before, locked, expected
    ("entra-value-wins", fields(city="Oslo"), fields(city="Rome"), {"city"}, set(), fields(city="Rome")),
    ("never-supplied-kept", fields(phone="+1"), fields(), set(), set(), fields(phone="+1")),
    ("supplied-then-cleared-cleared", fields(city="Oslo"), fields(), {"city"}, set(), fields()),
    ("locked-kept-against-value", fields(city="Oslo"), fields(city="Rome"), {"city"}, {"city"}, fields(city="Oslo")),
    ("locked-kept-against-clear", fields(city="Oslo"), fields(), {"city"}, {"city"}, fields(city="Oslo")),
    ("locked-empty-stays-empty", fields(), fields(city="Rome"), set(), {"city"}, fields()),
    ("adoption-mixes", fields(first_name="J.", phone="+1"), fields(first_name="Jane"), set(), set(),
     fields(first_name="Jane", phone="+1")),
]


@pytest.mark.parametrize(("stored", "projected", "entra", "locked", "expected"), table(MERGE_CASES))
def test_merge_fields(stored: dict[str, str | None], projected: dict[str, str | None], entra: set[str],
                      locked: set[str], expected: dict[str, str | None]) -> None:
    assert merge_fields(stored, projected, entra_fields=entra, locked=locked) == expected


def test_merge_returns_the_projection_itself_when_nothing_of_the_record_survives() -> None:
    projected = fields(city="Rome")
    assert merge_fields(fields(city="Oslo"), projected, entra_fields={"city"}, locked=set()) is projected


EVIDENCE_CASES = [
    ("active", {}, None),
    ("deleted", {"removed": "deleted"}, "deleted"),
    ("soft-deleted", {"removed": "changed"}, "soft_deleted"),
    ("absent", {"removed": "absent"}, "absent_from_complete_listing"),
    ("disabled", {"account_enabled": False}, "disabled"),
    ("deleted-and-disabled-is-deleted", {"removed": "deleted", "account_enabled": False}, "deleted"),
]


@pytest.mark.parametrize(("change", "expected"), table(EVIDENCE_CASES))
def test_leaver_evidence(change: dict[str, Any], expected: str | None) -> None:
    assert leaver_evidence(MirrorUser(**({"tenant_id": "t", "id": "u", "account_enabled": True} | change))) == expected


def now(state: SyncState = "synced", **values: str | None) -> StoredEndUser:
    return StoredEndUser(id="e1", organization_id="o", fields=fields(**values), sync_state=state,
                         entra_tenant_id="t", entra_object_id="u")


CREATE = JournalEvent(action="create", sync_state=(None, "synced"))
ADOPT = JournalEvent(action="adopt", fields={"first_name": ("J.", "Jane"), "phone": ("+1", "+2")},
                     sync_state=("manual", "synced"))
UPDATE = JournalEvent(action="update", fields={"city": ("Oslo", "Rome")})
DEACTIVATE = JournalEvent(action="deactivate", sync_state=("synced", "deactivated"))

UNDO_CASES = [
    # id, events of the run, the End User now (None: gone), operator changed it since, expected (kind, fields, state)
    ("created-removed", [CREATE], now(), False, ("remove", {}, None)),
    ("created-then-edited-skipped", [CREATE], now(), True, ("skip", {}, None)),
    ("created-then-deleted-skipped", [CREATE], None, False, ("skip", {}, None)),
    ("adopted-unlinked-and-restored", [ADOPT], now(first_name="Jane", phone="+2"), False,
     ("unlink", {"first_name": "J.", "phone": "+1"}, "manual")),
    ("adopted-field-changed-since-kept", [ADOPT], now(first_name="Janet", phone="+2"), True,
     ("unlink", {"phone": "+1"}, "manual")),
    ("update-restored", [UPDATE], now(city="Rome"), False, ("restore", {"city": "Oslo"}, None)),
    ("update-overtaken-skipped", [UPDATE], now(city="Lima"), False, ("skip", {}, None)),
    ("deactivation-restored", [DEACTIVATE], now("deactivated"), False, ("restore", {}, "synced")),
    ("deactivation-overtaken-skipped", [DEACTIVATE], now("synced"), False, ("skip", {}, None)),
    ("two-updates-net-change", [UPDATE, JournalEvent(action="update", fields={"city": ("Rome", "Oslo")})],
     now(city="Oslo"), False, ("skip", {}, None)),
]


@pytest.mark.parametrize(("events", "current", "operator", "expected"), table(UNDO_CASES))
def test_plan_undo(events: list[JournalEvent], current: StoredEndUser | None, operator: bool,
                   expected: tuple[str, dict[str, str | None], str | None]) -> None:
    (step,) = plan_undo([UndoSubject(end_user_id="e1", events=tuple(events), current=current,
                                     operator_changed=operator)])
    assert (step.kind, step.fields, step.sync_state) == expected
    if step.kind == "skip":
        assert step.reason in (SKIP_GONE, SKIP_OPERATOR, SKIP_NOTHING)


ALL = {"user_types": "all", "domains": "all", "office_locations": "all", "departments": "all", "groups": "all"}
SALES = ALL | {"departments": ["Sales"]}

CAUSE_CASES = [
    # id, run tenant, run filters, status, mapped tenant, filters now, in force?
    ("same-everything", "t1", ALL, "enabled", "t1", ALL, True),
    ("run-without-filters-counts-as-same", "t1", None, "enabled", "t1", SALES, True),
    ("sync-disabled", "t1", ALL, "disabled", "t1", ALL, False),
    ("remapped", "t1", ALL, "enabled", "t2", ALL, False),
    ("unmapped", "t1", ALL, "enabled", None, ALL, False),
    ("filters-changed", "t1", ALL, "enabled", "t1", SALES, False),
]


@pytest.mark.parametrize(("run_tenant", "run_filters", "status", "mapped", "filters", "in_force"),
                         table(CAUSE_CASES))
def test_cause_in_force(run_tenant: str, run_filters: dict[str, Any] | None, status: str, mapped: str | None,
                        filters: dict[str, Any], in_force: bool) -> None:
    refusal = cause_in_force(run_tenant=run_tenant, run_filters=run_filters, sync_status=status,
                             mapped_tenant=mapped, filters=filters)
    assert (refusal is not None) is in_force
