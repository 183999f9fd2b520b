"""The OpenAPI document's runs and review part: sync runs (confirm, dismiss, undo) and review items."""

from __future__ import annotations

from typing import Any

from .common import ID, NF, nullable, op

SCHEMAS: dict[str, Any] = {
    "Undo": {"type": "object", "properties": {
        "run_id": {"type": "string"}, "dry_run": {"type": "boolean"},
        "removed": {"type": "array", "items": {"type": "string"}},
        "unlinked": {"type": "array", "items": {"type": "object"}},
        "restored": {"type": "array", "items": {"type": "object"}},
        "skipped": {"type": "array", "items": {"type": "object", "properties": {
            "end_user_id": {"type": "string"}, "reason": {"type": "string"}}}}}},
    "SyncRun": {"type": "object", "properties": {
        "id": {"type": "string"}, "kind": {"type": "string"}, "organization_id": nullable("string"),
        "tenant_id": nullable("string"),
        "status": {"enum": ["queued", "running", "succeeded", "failed", "held"]},
        "counts": {"type": "object"}, "warnings": {"type": "array"}, "error": nullable("string"),
        "requested_at": {"type": "string"}, "started_at": nullable("string"),
        "finished_at": nullable("string")}},
    "ReviewItem": {"type": "object", "properties": {
        "id": {"type": "string"}, "organization_id": {"type": "string"}, "entra_tenant_id": {"type": "string"},
        "entra_object_id": {"type": "string"}, "reason": {"type": "string"},
        "candidate_ids": {"type": "array", "items": {"type": "string"}},
        "candidates": {"type": "array", "items": {"type": "object"}},
        "entra_user": {"type": ["object", "null"]}, "status": {"enum": ["open", "resolved"]},
        "resolution": {"type": ["object", "null"]}, "created_at": {"type": "string"},
        "resolved_at": nullable("string")}},
    "ReviewResolve": {"type": "object", "additionalProperties": False, "properties": {
        "end_user_id": {"type": "string", "format": "uuid"}, "create": {"const": True}}},
    "ReviewResolved": {"type": "object", "properties": {
        "review_item_id": {"type": "string"}, "action": {"enum": ["link", "create"]},
        "end_user_id": {"type": "string"}, "run_id": nullable("string")}},
}

PATHS: dict[str, dict[str, Any]] = {
    "/sync-runs": {
        "get": op("List sync runs, newest first", "runs", "[SyncRun]", errors=("400", "401"),
                   query=("organization_id", "tenant_id", "limit", "offset")),
    },
    "/sync-runs/{id}": {
        "parameters": ID,
        "get": op("One sync run", "run", "SyncRun", errors=NF),
    },
    "/sync-runs/{id}/confirm": {
        "parameters": ID,
        "post": op("Confirm a held run: queue an org-sync that applies the deactivations the guard held",
                    "queued", "RunAccepted", status="202", errors=("401", "404", "409")),
    },
    "/sync-runs/{id}/dismiss": {
        "parameters": ID,
        "post": op("Dismiss a held run: nobody is deactivated, the hold ends, its users are not held again"
                    " by later change batches", "the run, no longer held", "SyncRun", errors=("401", "404", "409")),
    },
    "/sync-runs/{id}/undo": {
        "parameters": ID,
        "post": op("Reverse the End User changes of a run (dry_run=true: only say what it would do); 409 while"
                    " its cause is in force", "undone", "Undo", errors=("400", "401", "404", "409"),
                    query=("dry_run",)),
    },
    "/review-items": {
        "get": op("List review items (status open by default; open, resolved or all)", "review items",
                   "[ReviewItem]", errors=("400", "401"), query=("organization_id", "status")),
    },
    "/review-items/{id}/resolve": {
        "parameters": ID,
        "post": op("Resolve: link {end_user_id} or {create: true}; queues an org-sync. 409 naming the holder"
                    " when another End User holds the Entra user's email (the sync could never honour it)",
                    "resolved",
                    "ReviewResolved", body="ReviewResolve", errors=("400", "401", "404", "409")),
    },
}
