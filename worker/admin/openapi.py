"""The admin API's OpenAPI 3.1 document, written by hand (served at `/api/v1/openapi.json`).

`tests/admin/test_openapi.py` checks that every route the app registers is described here and nothing else.
"""

from __future__ import annotations

from typing import Any

from worker.core.model import FILTER_SECTIONS, SYNC_STATES

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(type_: str) -> dict[str, Any]:
    return {"type": [type_, "null"]}


def _list_of(name: str) -> dict[str, Any]:
    return {"type": "object", "properties": {"items": {"type": "array", "items": _ref(name)}}}


_SECTION = {"oneOf": [{"const": "all"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string", "description": "from the status (bad_request, not_found, conflict …), or"
                     " Entra's error (invalid_client, unauthorized_client, invalid_request …) when a credential"
                     " is refused"},
            "message": {"type": "string"}, "field": {"type": "string"},
            "entra_error_codes": {"type": "array", "items": {"type": "integer"},
                                  "description": "AADSTS codes of a refused credential"}}}},
    },
    "MicrosoftTenant": {"type": "object", "properties": {
        "tenant_id": {"type": "string"}, "display_name": {"type": "string"}, "client_id": {"type": "string"},
        "default_domain": _nullable("string"), "capabilities": {"type": "object"},
        "psa_tenant_id": _nullable("string"), "created_at": {"type": "string"}, "updated_at": {"type": "string"}}},
    "TenantSyncStatus": {"type": "object", "properties": {
        "tenant_id": {"type": "string"}, "last_delta_at": _nullable("string"),
        "last_full_resync_at": _nullable("string"), "last_notification_at": _nullable("string"),
        "last_error": _nullable("string"), "updated_at": _nullable("string"),
        "last_resync_drift": {
            "type": ["object", "null"],
            "description": "what the last full resync changed that notifications had missed: End Users created,"
                           " updated and deactivated by its runs (in every Organization syncing from the tenant);"
                           " null before the first hourly resync",
            "properties": {"at": {"type": "string"},
                           "created": {"type": "integer"}, "updated": {"type": "integer"},
                           "deactivated": {"type": "integer"}, "total": {"type": "integer"}}},
        "subscriptions": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "string"}, "resource": {"type": "string"}, "expires_at": {"type": "string"},
            "last_notification_at": _nullable("string"), "renewed_at": _nullable("string"),
            "created_at": {"type": "string"}}}}}},
    "MicrosoftTenantCreate": {
        "type": "object", "required": ["tenant_id", "display_name", "client_id", "client_secret"],
        "additionalProperties": False,
        "properties": {"tenant_id": {"type": "string", "format": "uuid",
                                     "description": "the directory (tenant) id, a GUID; stored lower-case"},
                       "display_name": {"type": "string"},
                       "client_id": {"type": "string"}, "client_secret": {"type": "string", "writeOnly": True},
                       "default_domain": {"type": "string"}}},
    "MicrosoftTenantUpdate": {
        "type": "object", "minProperties": 1, "additionalProperties": False,
        "properties": {"display_name": {"type": "string"}, "client_id": {"type": "string"},
                       "client_secret": {"type": "string", "writeOnly": True}}},
    "MicrosoftTenantRemoved": {"type": "object", "properties": {
        "tenant_id": {"type": "string"}, "removed": {"type": "boolean"},
        "subscriptions_deleted": {"type": "array", "items": {"type": "string"}},
        "subscriptions_left_in_graph": {"type": "array", "items": {"type": "string"},
                                        "description": "when Graph refused the deletion (credentials refused)"},
        "graph_error": {"type": "string"},
        "rows_deleted": {"type": "object", "additionalProperties": {"type": "integer"}}}},
    "PsaTenant": {"type": "object", "properties": {
        "end_users_stopped": {"type": "integer", "description": "after map/unmap: End Users no longer updated"},
        "id": {"type": "string", "format": "uuid"}, "name": {"type": "string"},
        "microsoft_tenant_id": _nullable("string"), "organizations": {"type": "integer"},
        "created_at": {"type": "string"}, "updated_at": {"type": "string"}}},
    "Organization": {"type": "object", "properties": {
        "end_users_stopped": {"type": "integer", "description": "after re-assign: End Users no longer updated"},
        "id": {"type": "string", "format": "uuid"}, "name": {"type": "string"},
        "psa_tenant_id": {"type": "string"}, "psa_tenant_name": {"type": "string"},
        "microsoft_tenant_id": _nullable("string"),
        "user_sync_status": {"enum": ["not_set_up", "enabled", "disabled"]},
        "created_at": {"type": "string"}, "updated_at": {"type": "string"}}},
    "Filters": {
        "type": "object", "additionalProperties": False,
        "required": list(FILTER_SECTIONS),
        "properties": {name: _SECTION for name in FILTER_SECTIONS}},
    "FiltersBody": {"type": "object", "required": ["filters"], "additionalProperties": False,
                    "properties": {"filters": _ref("Filters")}},
    "UserSync": {"type": "object", "properties": {
        "end_users_stopped": {"type": "integer", "description": "after disable: End Users no longer updated"},
        "organization_id": {"type": "string"}, "status": {"enum": ["not_set_up", "enabled", "disabled"]},
        "filters": {"oneOf": [_ref("Filters"), {"type": "null"}]}, "in_progress": {"type": "boolean"},
        "last_run": {"oneOf": [_ref("SyncRun"), {"type": "null"}]},
        "microsoft_tenant_id": _nullable("string"), "enabled_at": _nullable("string"),
        "disabled_at": _nullable("string"),
        "open_review_items": {"type": "integer", "description": "review items waiting for an operator"},
        "held_run_id": {**_nullable("string"), "description": "the run whose deactivations wait for confirm or"
                        " dismiss (at most one per Organization)"},
        "last_error": {**_nullable("string"), "description": "why the last run failed, else the tenant's last"
                       " error"}}},
    "Explanation": {"type": "object", "properties": {
        "organization_id": {"type": "string"}, "microsoft_tenant_id": {"type": "string"},
        "entra_object_id": _nullable("string"), "entra_user": {"type": ["object", "null"]},
        "sync_status": {"enum": ["not_set_up", "enabled", "disabled"]},
        "end_user": {"type": ["object", "null"], "properties": {
            "id": {"type": "string"}, "sync_state": {"type": "string"}, "sync_state_reason": _nullable("string"),
            "email": _nullable("string"), "entra_object_id": _nullable("string")}},
        "filters": {"oneOf": [_ref("Filters"), {"type": "null"}]},
        "sections": {"type": "array", "items": {"type": "object", "properties": {
            "section": {"type": "string"}, "user_values": {"type": "array", "items": {"type": "string"}},
            "filter": _SECTION, "matched": {"type": "boolean"}}}},
        "in_scope": _nullable("boolean"), "leaver": _nullable("string"),
        "notes": {"type": "array", "items": {"type": "string"},
                  "description": "why the End User's sync_state is what it is, one sentence per reason"},
        "next_sync": {"type": ["object", "null"], "description": "what the sync would do now: action (create,"
                      " adopt, update, deactivate, stop_updating, review, nothing) and its reason"}}},
    "RunAccepted": {"type": "object", "required": ["run_id"], "properties": {"run_id": {"type": "string"}}},
    "OptionValue": {"type": "object", "properties": {"value": {"type": "string"}, "count": {"type": "integer"}}},
    "Options": {"type": "object", "properties": {
        "microsoft_tenant_id": {"type": "string"}, "total_users": {"type": "integer"},
        **{name: {"type": "array", "items": _ref("OptionValue")}
           for name in FILTER_SECTIONS if name != "groups"},
        "groups": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "string"}, "name": _nullable("string"), "count": {"type": "integer"}}}}}},
    "Preview": {"type": "object", "properties": {
        "microsoft_tenant_id": {"type": "string"}, "matching": {"type": "integer"},
        "would_create": {"type": "integer"}, "would_update": {"type": "integer"},
        "would_stop_updating": {"type": "integer"}, "would_review": {"type": "integer"},
        "would_deactivate": {"type": "integer", "description": "leavers the sync would deactivate (the "
                             "accidental-deletion guard may hold them)"},
        "samples": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "object"}}},
        "warnings": {"type": "array", "items": {"type": "string"}}}},
    "EndUser": {"type": "object", "properties": {
        **{name: _nullable("string") for name in (
            "first_name", "last_name", "email", "phone", "mobile", "street", "city", "state", "postal_code",
            "job_title", "sync_state_reason", "entra_tenant_id", "entra_object_id", "last_synced_at")},
        "id": {"type": "string"}, "organization_id": {"type": "string"},
        "sync_state": {"enum": list(SYNC_STATES)},
        "microsoft": {"type": ["object", "null"]},
        "locked_fields": {"type": "array", "items": {"type": "string"},
                          "description": "fields an operator edited: the sync never overwrites them"},
        "leaver": {"oneOf": [_ref("Leaver"), {"type": "null"}]},
        "assets": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}}}}}},
    "EndUserList": {"type": "object", "properties": {
        "items": {"type": "array", "items": _ref("EndUser")}, "total": {"type": "integer"},
        "limit": {"type": "integer"}, "offset": {"type": "integer"}}},
    "EndUserCreate": {"type": "object", "additionalProperties": False, "properties": {
        name: {"type": "string"} for name in (
            "first_name", "last_name", "email", "phone", "mobile", "street", "city", "state", "postal_code",
            "job_title")}},
    "EndUserEdit": {"type": "object", "additionalProperties": False, "minProperties": 1, "properties": {
        name: {"type": ["string", "null"], "maxLength": 256} for name in (
            "first_name", "last_name", "email", "phone", "mobile", "street", "city", "state", "postal_code",
            "job_title")}},
    "Leaver": {"type": "object", "description": "what offboarding needs, recorded when the End User was deactivated",
               "properties": {
        "at": {"type": "string"}, "evidence": {"enum": ["deleted", "soft_deleted", "absent_from_complete_listing",
                                                        "disabled"]},
        "reason": {"type": "string"}, "last_sign_in_at": _nullable("string"),
        "user_principal_name": _nullable("string"),
        "licenses": {"type": "array", "items": {"type": "object"}},
        "assets": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}}}}}},
    "LeaverItem": {"type": "object", "properties": {
        "id": {"type": "string"}, "first_name": _nullable("string"), "last_name": _nullable("string"),
        "email": _nullable("string"), "entra_object_id": _nullable("string"),
        "sync_state_reason": _nullable("string"), "leaver": _ref("Leaver")}},
    "Exclusion": {"type": "object", "properties": {
        "entra_tenant_id": {"type": "string"}, "entra_object_id": {"type": "string"},
        "end_user_id": _nullable("string"), "how": {"enum": ["deleted", "excluded"]},
        "excluded_by": {"type": "string"}, "display_name": _nullable("string"), "email": _nullable("string"),
        "created_at": {"type": "string"}}},
    "Change": {"type": "object", "properties": {
        "at": {"type": "string"},
        "actor": {"type": "object", "properties": {"kind": {"enum": ["sync", "operator"]},
                                                   "run_id": {"type": "string"}}},
        "action": {"type": "string", "description": "create, adopt, update, deactivate, out_of_scope, "
                   "stop_updating, edit, unlock, delete, exclude, include, link, disable_sync, unmap, remap, "
                   "reassign, undo"},
        "fields": {"type": "object", "additionalProperties": {"type": "array", "items": _nullable("string"),
                                                              "minItems": 2, "maxItems": 2}},
        "sync_state": {"oneOf": [{"type": "array", "items": _nullable("string")}, {"type": "null"}]},
        "reason": _nullable("string")}},
    "ChangeList": {"type": "object", "properties": {
        "items": {"type": "array", "items": _ref("Change")}, "limit": {"type": "integer"},
        "offset": {"type": "integer"}}},
    "Undo": {"type": "object", "properties": {
        "run_id": {"type": "string"}, "dry_run": {"type": "boolean"},
        "removed": {"type": "array", "items": {"type": "string"}},
        "unlinked": {"type": "array", "items": {"type": "object"}},
        "restored": {"type": "array", "items": {"type": "object"}},
        "skipped": {"type": "array", "items": {"type": "object", "properties": {
            "end_user_id": {"type": "string"}, "reason": {"type": "string"}}}}}},
    "Asset": {"type": "object", "properties": {
        "id": {"type": "string"}, "organization_id": {"type": "string"}, "name": {"type": "string"},
        "mac_addresses": {"type": "array", "items": {"type": "string"}}, "created_at": {"type": "string"}}},
    "AssetCreate": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
        "name": {"type": "string"}, "mac_addresses": {"type": "array", "items": {"type": "string"}}}},
    "SyncRun": {"type": "object", "properties": {
        "id": {"type": "string"}, "kind": {"type": "string"}, "organization_id": _nullable("string"),
        "tenant_id": _nullable("string"),
        "status": {"enum": ["queued", "running", "succeeded", "failed", "held"]},
        "counts": {"type": "object"}, "warnings": {"type": "array"}, "error": _nullable("string"),
        "requested_at": {"type": "string"}, "started_at": _nullable("string"),
        "finished_at": _nullable("string")}},
    "ReviewItem": {"type": "object", "properties": {
        "id": {"type": "string"}, "organization_id": {"type": "string"}, "entra_tenant_id": {"type": "string"},
        "entra_object_id": {"type": "string"}, "reason": {"type": "string"},
        "candidate_ids": {"type": "array", "items": {"type": "string"}},
        "candidates": {"type": "array", "items": {"type": "object"}},
        "entra_user": {"type": ["object", "null"]}, "status": {"enum": ["open", "resolved"]},
        "resolution": {"type": ["object", "null"]}, "created_at": {"type": "string"},
        "resolved_at": _nullable("string")}},
    "PsaTenantCreate": {"type": "object", "required": ["name"], "additionalProperties": False,
                        "properties": {"name": {"type": "string"}}},
    "PsaTenantMap": {"type": "object", "required": ["microsoft_tenant_id"], "additionalProperties": False,
                     "properties": {"microsoft_tenant_id": {"type": "string"}}},
    "OrganizationCreate": {"type": "object", "required": ["name", "psa_tenant_id"], "additionalProperties": False,
                           "properties": {"name": {"type": "string"},
                                          "psa_tenant_id": {"type": "string", "format": "uuid"}}},
    "OrganizationAssign": {"type": "object", "required": ["psa_tenant_id"], "additionalProperties": False,
                           "properties": {"psa_tenant_id": {"type": "string", "format": "uuid"}}},
    "ReviewResolve": {"type": "object", "additionalProperties": False, "properties": {
        "end_user_id": {"type": "string", "format": "uuid"}, "create": {"const": True}}},
    "ReviewResolved": {"type": "object", "properties": {
        "review_item_id": {"type": "string"}, "action": {"enum": ["link", "create"]},
        "end_user_id": {"type": "string"}, "run_id": _nullable("string")}},
}

_ERRORS = {
    "400": "bad input; the message names the field", "401": "missing or wrong bearer token",
    "404": "no such resource", "409": "conflicts with the current state",
    "503": "a dependency (database, broker, Entra or Graph) is unreachable; nothing was changed",
}


def _op(summary: str, ok: str, schema: str | None, *, status: str = "200", body: str | None = None,
        errors: tuple[str, ...] = ("401",), query: tuple[str, ...] = ()) -> dict[str, Any]:
    responses: dict[str, Any] = {status: {"description": ok}}
    if schema is not None:
        responses[status]["content"] = {JSON: {"schema": _ref(schema) if not schema.startswith("[") else
                                               _list_of(schema[1:-1])}}
    for code in errors:
        responses[code] = {"description": _ERRORS[code], "content": {JSON: {"schema": _ref("Error")}}}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": _ref(body)}}}
    if query:
        op["parameters"] = [{"name": q, "in": "query", "required": False, "schema": {"type": "string"}}
                            for q in query]
    return op


_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
_NF = ("401", "404")
_BAD = ("400", "401", "404")

PATHS: dict[str, dict[str, Any]] = {
    "/microsoft-tenants": {
        "get": _op("List registered Microsoft tenants (never the client secret)", "tenants", "[MicrosoftTenant]"),
        "post": _op("Register a Microsoft tenant. The credential is tested first (a token from the authority,"
                    " then GET /organization, whose id must be the tenant's); refused → 400 with Entra's error"
                    " code and nothing stored", "registered", "MicrosoftTenant", status="201",
                    body="MicrosoftTenantCreate", errors=("400", "401", "409", "503")),
    },
    "/microsoft-tenants/{id}": {
        "parameters": _ID,
        "patch": _op("Change display_name, client_id or client_secret. A changed credential is tested like a"
                     " registration (refused → 400, the stored one kept) and used by every worker from its next"
                     " unit of work of the tenant, without a restart", "changed", "MicrosoftTenant",
                     body="MicrosoftTenantUpdate", errors=("400", "401", "404", "503")),
        "delete": _op("Remove an unmapped tenant: its Graph subscriptions (deleted in Graph too), mirror and"
                      " status; End Users and runs stay. 409 while a PSA tenant maps it or while the worker is"
                      " doing its work", "removed", "MicrosoftTenantRemoved",
                      errors=("401", "404", "409", "503")),
    },
    "/microsoft-tenants/{id}/sync-status": {
        "parameters": _ID,
        "get": _op("Real-time state of a tenant: Graph subscriptions (expiry, last notification), last delta,"
                   " last full resync, last error", "status", "TenantSyncStatus", errors=_NF),
    },
    "/psa-tenants": {
        "get": _op("List PSA tenants", "PSA tenants", "[PsaTenant]"),
        "post": _op("Create a PSA tenant {name}", "created", "PsaTenant", status="201",
                    body="PsaTenantCreate", errors=("400", "401", "409")),
    },
    "/psa-tenants/{id}/microsoft-tenant": {
        "parameters": _ID,
        "put": _op("Map (or remap) to a Microsoft tenant {microsoft_tenant_id}; End Users linked to a previous"
                   " tenant become sync_disabled", "mapped", "PsaTenant", body="PsaTenantMap",
                   errors=("400", "401", "404", "409")),
        "delete": _op("Unmap; End Users linked to the tenant become sync_disabled (kept)", "unmapped",
                      "PsaTenant", errors=_NF),
    },
    "/organizations": {
        "get": _op("List Organizations", "Organizations", "[Organization]", errors=("400", "401"),
                   query=("psa_tenant_id",)),
        "post": _op("Create an Organization {name, psa_tenant_id}", "created", "Organization", status="201",
                    body="OrganizationCreate", errors=("400", "401")),
    },
    "/organizations/{id}/psa-tenant": {
        "parameters": _ID,
        "put": _op("Re-assign to another PSA tenant {psa_tenant_id}; End Users linked to the old Microsoft"
                   " tenant become sync_disabled", "re-assigned", "Organization", body="OrganizationAssign",
                   errors=_BAD),
    },
    "/organizations/{id}/user-sync": {
        "parameters": _ID,
        "get": _op("User sync status, filters, in_progress and last run", "status", "UserSync", errors=_NF),
        "put": _op("Enable or edit user sync with filters; queues an initial sync", "queued", "RunAccepted",
                   status="202", body="FiltersBody", errors=("400", "401", "404", "409")),
        "delete": _op("Disable user sync: End Users are kept and become sync_disabled", "disabled", "UserSync",
                      errors=("401", "404", "409")),
    },
    "/organizations/{id}/user-sync/options": {
        "parameters": _ID,
        "get": _op("Values seen in the tenant mirror for each filter section, with counts", "options",
                   "Options", errors=("401", "404", "409")),
    },
    "/organizations/{id}/user-sync/preview": {
        "parameters": _ID,
        "post": _op("What proposed filters would do, from the mirror (no Graph call), decided by the sync's own"
                    " code: equal to what applying them then does", "preview", "Preview",
                    body="FiltersBody", errors=("400", "401", "404", "409")),
    },
    "/organizations/{id}/user-sync/explain": {
        "parameters": _ID,
        "get": _op("Why an Entra user (entra_object_id or email, exactly one) is or is not an End User: each"
                   " filter section, in scope, the linked End User and why its state is what it is, and what the"
                   " next sync would do", "explanation", "Explanation", errors=("400", "401", "404", "409"),
                   query=("entra_object_id", "email")),
    },
    "/organizations/{id}/user-sync/runs": {
        "parameters": _ID,
        "post": _op("Run now with the current filters", "queued", "RunAccepted", status="202",
                    errors=("401", "404", "409")),
    },
    "/organizations/{id}/end-users": {
        "parameters": _ID,
        "get": _op("List End Users (email = exact, case-insensitive; q = substring of name or email)",
                   "End Users", "EndUserList", errors=_BAD,
                   query=("email", "sync_state", "q", "limit", "offset")),
        "post": _op("Create a manual End User", "created", "EndUser", status="201", body="EndUserCreate",
                    errors=("400", "401", "404", "409")),
    },
    "/end-users/{id}": {
        "parameters": _ID,
        "get": _op("One End User with microsoft, assets, locked_fields and leaver", "End User", "EndUser",
                   errors=_NF),
        "patch": _op("Edit fields; on a linked End User each edited field becomes locked (the sync never"
                     " overwrites it)", "edited", "EndUser", body="EndUserEdit", errors=("400", "401", "404", "409")),
        "delete": _op("Delete an End User; a synced, out-of-scope or otherwise linked one is also excluded (the"
                      " sync never re-creates it)", "deleted", None, status="204", errors=_NF),
    },
    "/end-users/{id}/locks/{field}": {
        "parameters": [*_ID, {"name": "field", "in": "path", "required": True, "schema": {"type": "string"}}],
        "delete": _op("Hand a locked field back to Entra: the next sync fills it", "unlocked", "EndUser",
                      errors=_BAD),
    },
    "/end-users/{id}/exclude": {
        "parameters": _ID,
        "post": _op("Keep the record, stop syncing it (sync_state excluded)", "excluded", "EndUser",
                    errors=("401", "404", "409")),
    },
    "/end-users/{id}/changes": {
        "parameters": _ID,
        "get": _op("The End User's change journal, newest first", "changes", "ChangeList", errors=_BAD,
                   query=("limit", "offset")),
    },
    "/organizations/{id}/exclusions": {
        "parameters": _ID,
        "get": _op("Entra users excluded from the Organization, with how and when", "exclusions", "[Exclusion]",
                   errors=_NF),
    },
    "/organizations/{id}/exclusions/{entra_object_id}": {
        "parameters": [*_ID, {"name": "entra_object_id", "in": "path", "required": True,
                              "schema": {"type": "string"}}],
        "delete": _op("Include an excluded Entra user again (the next sync of that user decides)", "included",
                      None, status="204", errors=_BAD),
    },
    "/organizations/{id}/leavers": {
        "parameters": _ID,
        "get": _op("Deactivated End Users with their leaver card (since = ISO 8601 time)", "leavers",
                   "[LeaverItem]", errors=_BAD, query=("since",)),
    },
    "/organizations/{id}/assets": {
        "parameters": _ID,
        "get": _op("List Assets", "Assets", "[Asset]", errors=_NF),
        "post": _op("Create an Asset; MAC addresses are normalised", "created", "Asset", status="201",
                    body="AssetCreate", errors=_BAD),
    },
    "/sync-runs": {
        "get": _op("List sync runs, newest first", "runs", "[SyncRun]", errors=("400", "401"),
                   query=("organization_id", "tenant_id", "limit", "offset")),
    },
    "/sync-runs/{id}": {
        "parameters": _ID,
        "get": _op("One sync run", "run", "SyncRun", errors=_NF),
    },
    "/sync-runs/{id}/confirm": {
        "parameters": _ID,
        "post": _op("Confirm a held run: queue an org-sync that applies the deactivations the guard held",
                    "queued", "RunAccepted", status="202", errors=("401", "404", "409")),
    },
    "/sync-runs/{id}/dismiss": {
        "parameters": _ID,
        "post": _op("Dismiss a held run: nobody is deactivated, the hold ends, its users are not held again"
                    " by later change batches", "the run, no longer held", "SyncRun", errors=("401", "404", "409")),
    },
    "/sync-runs/{id}/undo": {
        "parameters": _ID,
        "post": _op("Reverse the End User changes of a run (dry_run=true: only say what it would do); 409 while"
                    " its cause is in force", "undone", "Undo", errors=("400", "401", "404", "409"),
                    query=("dry_run",)),
    },
    "/review-items": {
        "get": _op("List review items (status open by default; open, resolved or all)", "review items",
                   "[ReviewItem]", errors=("400", "401"), query=("organization_id", "status")),
    },
    "/review-items/{id}/resolve": {
        "parameters": _ID,
        "post": _op("Resolve: link {end_user_id} or {create: true}; queues an org-sync. 409 naming the holder"
                    " when another End User holds the Entra user's email (the sync could never honour it)",
                    "resolved",
                    "ReviewResolved", body="ReviewResolve", errors=("400", "401", "404", "409")),
    },
    "/openapi.json": {
        "get": {"summary": "This document", "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {JSON: {"schema": {}}}}}},
    },
}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Entra ID User Sync admin API", "version": "1"},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
