"""The console's pure parts: signed session cookies and CSRF tokens, form checks, chart geometry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from multidict import MultiDict

from worker.console import forms, plot
from worker.console.session import SESSION_TTL_S, VISITOR_TTL_S, SessionKeys

NOW = 1_800_000_000.0
KEYS = SessionKeys("the-admin-token")


@pytest.mark.parametrize("cookie, now, signed_in", [
    pytest.param(KEYS.new(signed_in=True, now=NOW)[1], NOW + 10, True, id="fresh-session"),
    pytest.param(KEYS.new(signed_in=False, now=NOW)[1], NOW + 10, False, id="visitor"),
    pytest.param(KEYS.new(signed_in=True, now=NOW)[1], NOW + SESSION_TTL_S + 1, None, id="expired-session"),
    pytest.param(KEYS.new(signed_in=False, now=NOW)[1], NOW + VISITOR_TTL_S + 1, None, id="expired-visitor"),
    pytest.param(KEYS.new(signed_in=True, now=NOW + 3600)[1], NOW, None, id="issued-in-the-future"),
    pytest.param(SessionKeys("another-token").new(signed_in=True, now=NOW)[1], NOW, None, id="other-key"),
    pytest.param(KEYS.new(signed_in=False, now=NOW)[1].replace("a.", "s.", 1), NOW, None, id="visitor-promoted"),
    pytest.param("s.1800000000.nonce.0000", NOW, None, id="forged-mac"),
    pytest.param("garbage", NOW, None, id="garbage"),
    pytest.param(None, NOW, None, id="missing"),
])
def test_session_cookies(cookie: str | None, now: float, signed_in: bool | None) -> None:
    session = KEYS.read(cookie, now=now)
    assert (session.signed_in if session else None) == signed_in


def test_csrf_token_is_bound_to_its_session() -> None:
    one, _ = KEYS.new(signed_in=True, now=NOW)
    two, _ = KEYS.new(signed_in=True, now=NOW)
    assert KEYS.csrf_matches(one, KEYS.csrf(one))
    assert not KEYS.csrf_matches(one, KEYS.csrf(two))
    assert not KEYS.csrf_matches(one, None) and not KEYS.csrf_matches(one, "")
    assert not SessionKeys("other").csrf_matches(one, KEYS.csrf(one))


def test_admin_token_check() -> None:
    assert KEYS.token_matches("the-admin-token")
    assert not KEYS.token_matches("the-admin-token ") and not KEYS.token_matches("")
    assert not SessionKeys("").token_matches("")


def _form(**values: Any) -> MultiDict[str]:
    out: MultiDict[str] = MultiDict()
    for key, value in values.items():
        for item in value if isinstance(value, list) else [value]:
            out.add(key, item)
    return out


@pytest.mark.parametrize("form, errors", [
    pytest.param(_form(), {"tenant_id", "display_name", "client_id", "client_secret"}, id="empty"),
    pytest.param(_form(tenant_id="not-a-guid", display_name="C", client_id="c", client_secret="s"),
                 {"tenant_id"}, id="bad-guid"),
    pytest.param(_form(tenant_id=str(__import__("uuid").uuid4()), display_name="x" * 257, client_id="c",
                       client_secret="s"), {"display_name"}, id="too-long"),
    pytest.param(_form(tenant_id="72F988BF-86F1-41AF-91AB-2D7CD011DB47", display_name=" C ", client_id="c",
                       client_secret="s"), set(), id="ok"),
])
def test_register_form(form: MultiDict[str], errors: set[str]) -> None:
    try:
        values = forms.register_tenant(form)
    except forms.FormErrors as exc:
        assert set(exc.errors) == errors
    else:
        assert errors == set()
        assert values["tenant_id"] == "72f988bf-86f1-41af-91ab-2d7cd011db47" and values["display_name"] == "C"


ALL_TICKED = {f"{s}_all": "1" for s in ("user_types", "domains", "office_locations", "departments", "groups")}


@pytest.mark.parametrize("form, result", [
    pytest.param(_form(**ALL_TICKED), {"departments": "all"}, id="all"),
    pytest.param(_form(**(ALL_TICKED | {"departments_all": [], "departments": ["Sales", " Support "]})),
                 {"departments": ("Sales", "Support")}, id="values"),
    pytest.param(_form(**(ALL_TICKED | {"departments": ["Sales"]})), {"departments": "all"}, id="all-wins"),
    pytest.param(_form(**(ALL_TICKED | {"departments_all": []})), {"error": "departments"}, id="nothing-ticked"),
    pytest.param(_form(**(ALL_TICKED | {"domains_all": [], "domains": ["a b.com"]})), {"error": "domains"},
                 id="bad-domain"),
])
def test_filters_form(form: MultiDict[str], result: dict[str, Any]) -> None:
    clean = MultiDict([(k, v) for k, v in form.items() if v != []])
    if "error" in result:
        with pytest.raises(forms.FormErrors) as caught:
            forms.filters(clean)
        assert list(caught.value.errors) == [result["error"]]
    else:
        assert forms.filters(clean).departments == result["departments"]


def test_changes_per_hour_buckets_by_finish_hour() -> None:
    now = datetime(2026, 12, 3, 10, 30, tzinfo=UTC)
    runs = [{"finished_at": now - timedelta(minutes=10), "changes": 5},
            {"finished_at": now - timedelta(minutes=20), "changes": 7},
            {"finished_at": now - timedelta(hours=2), "changes": 3},
            {"finished_at": now - timedelta(hours=30), "changes": 100}]  # older than the window
    chart = plot.changes_per_hour(runs, now=now, last_notification=now - timedelta(hours=1))
    values = [b.value for b in chart.bars]
    assert len(values) == 24 and values[-1] == 12 and values[-3] == 3 and sum(values) == 15
    assert chart.y_max == 20 and chart.marker_x is not None
    assert max(b.height for b in chart.bars) == pytest.approx(chart.plot_height * 12 / 20)


def test_notifications_per_hour_put_each_hour_in_its_slot() -> None:
    now = datetime(2026, 12, 3, 10, 30, tzinfo=UTC)
    hour = now.replace(minute=0)
    counts = [(hour, 4), (hour - timedelta(hours=5), 9), (hour - timedelta(hours=23), 1),
              (hour - timedelta(hours=24), 50)]  # the 24th hour back is outside the window
    chart = plot.notifications_per_hour(counts, now=now)
    values = [b.value for b in chart.bars]
    assert len(values) == 24 and values[-1] == 4 and values[-6] == 9 and values[0] == 1 and sum(values) == 14
    assert chart.y_max == 10 and "10:00-10:59 UTC: 4 notifications" in chart.bars[-1].label


def test_run_durations_keep_the_newest_runs() -> None:
    start = datetime(2026, 12, 3, tzinfo=UTC)
    runs = [{"started_at": start + timedelta(minutes=i), "finished_at": start + timedelta(minutes=i, seconds=i),
             "kind": "delta", "status": "succeeded"} for i in range(60)]
    chart = plot.run_durations(runs, limit=48)
    assert [b.value for b in chart.bars] == [float(i) for i in range(12, 60)]
    assert chart.y_max == 100


@pytest.mark.parametrize("raw, expected", [
    ("/organizations/1?q=a", "/organizations/1?q=a"),
    (None, "/tenants"), ("", "/tenants"), ("https://evil.example/", "/tenants"), ("//evil.example", "/tenants"),
    ("/\\evil.example", "/tenants"), ("/\t/evil.example", "/tenants"), ("/\n/evil.example", "/tenants"),
])
def test_sign_in_returns_only_to_this_site(raw: str | None, expected: str) -> None:
    from worker.console.views.common import safe_next

    assert safe_next(raw) == expected
