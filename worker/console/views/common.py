"""What the console's page groups share: the notices a form's redirect names (fixed text, never echoed
input), the sync states' labels, and reading a path id or a `next` path safely."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from worker.admin.errors import ApiError

from ..plumbing import View

NOTICES = {
    "registered": "Microsoft tenant registered.",
    "psa-created": "PSA tenant created.",
    "mapped": "PSA tenant mapped. Organizations with user sync enabled are syncing from the new tenant.",
    "unmapped": "PSA tenant unmapped. Its End Users are kept and no longer updated.",
    "enabled": "Microsoft Entra ID User Sync enabled: the sync is in progress.",
    "saved": "User sync filters saved: the sync is in progress. Nobody is deleted.",
    "disabled": "User sync disabled. Existing End Users remain and are no longer updated.",
    "confirmed": "Held run confirmed: a run applying its deactivations is queued.",
    "resolved": "Review item resolved.",
    "signed-out": "Signed out.",
    "rotated": "Client secret changed: Entra accepted it. Workers use it from their next unit of work.",
    "removed": "Microsoft tenant removed, with its subscriptions in Graph.",
    "edited": "End User saved. Edited fields of a synced End User are locked: the sync no longer overwrites them.",
    "unlocked": "Field unlocked: the next sync of this user fills it from Entra.",
    "excluded": "End User excluded: the record is kept and no longer synced.",
    "dismissed": "Held run dismissed: nobody is deactivated.",
    "undone": "Sync run undone: its End User changes are reversed.",
}
STATE_LABELS = {
    "manual": "Manual", "synced": "Synced", "out_of_scope": "Out of scope", "sync_disabled": "Sync disabled",
    "deactivated": "Deactivated", "excluded": "Excluded",
}


def notice(v: View) -> str | None:
    return NOTICES.get(v.request.query.get("done", ""))


def path_uuid(v: View, name: str = "id") -> str:
    raw = v.request.match_info[name]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise ApiError(404, "This page does not exist.") from None


def safe_next(raw: str | None) -> str:
    """Only a path of this site (never //host or a scheme): an open redirect would help phishing."""
    # Browsers drop tabs and newlines from URLs, so "/\t/evil.example" would become "//evil.example".
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw \
            or any(c.isspace() or ord(c) < 32 for c in raw):
        return "/tenants"
    return raw


def run_duration(run: dict[str, Any]) -> str:
    """How long a run took, as the runs table shows it."""
    if not run.get("started_at") or not run.get("finished_at"):
        return "—"
    start, end = (v if isinstance(v, datetime) else datetime.fromisoformat(v)
                  for v in (run["started_at"], run["finished_at"]))
    seconds = (end - start).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"
