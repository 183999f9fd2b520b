"""The OpenAPI document's configuration and mapping part: Microsoft tenants, PSA tenants, Organizations, and
an Organization's user sync (filters, options, preview, explanation)."""

from __future__ import annotations

from typing import Any

from worker.core.model import FILTER_SECTIONS

from .common import BAD, ID, NF, SECTION, nullable, op, ref

SCHEMAS: dict[str, Any] = {
    "MicrosoftTenant": {"type": "object", "properties": {
        "tenant_id": {"type": "string"}, "display_name": {"type": "string"}, "client_id": {"type": "string"},
        "default_domain": nullable("string"), "capabilities": {"type": "object"},
        "psa_tenant_id": nullable("string"), "created_at": {"type": "string"}, "updated_at": {"type": "string"}}},
    "TenantSyncStatus": {"type": "object", "properties": {
        "tenant_id": {"type": "string"}, "last_delta_at": nullable("string"),
        "last_full_resync_at": nullable("string"), "last_notification_at": nullable("string"),
        "last_error": nullable("string"), "updated_at": nullable("string"),
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
            "last_notification_at": nullable("string"), "renewed_at": nullable("string"),
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
        "microsoft_tenant_id": nullable("string"), "organizations": {"type": "integer"},
        "created_at": {"type": "string"}, "updated_at": {"type": "string"}}},
    "Organization": {"type": "object", "properties": {
        "end_users_stopped": {"type": "integer", "description": "after re-assign: End Users no longer updated"},
        "id": {"type": "string", "format": "uuid"}, "name": {"type": "string"},
        "psa_tenant_id": {"type": "string"}, "psa_tenant_name": {"type": "string"},
        "microsoft_tenant_id": nullable("string"),
        "user_sync_status": {"enum": ["not_set_up", "enabled", "disabled"]},
        "created_at": {"type": "string"}, "updated_at": {"type": "string"}}},
    "Filters": {
        "type": "object", "additionalProperties": False,
        "required": list(FILTER_SECTIONS),
        "properties": {name: SECTION for name in FILTER_SECTIONS}},
    "FiltersBody": {"type": "object", "required": ["filters"], "additionalProperties": False,
                    "properties": {"filters": ref("Filters")}},
    "UserSync": {"type": "object", "properties": {
        "end_users_stopped": {"type": "integer", "description": "after disable: End Users no longer updated"},
        "organization_id": {"type": "string"}, "status": {"enum": ["not_set_up", "enabled", "disabled"]},
        "filters": {"oneOf": [ref("Filters"), {"type": "null"}]}, "in_progress": {"type": "boolean"},
        "last_run": {"oneOf": [ref("SyncRun"), {"type": "null"}]},
        "microsoft_tenant_id": nullable("string"), "enabled_at": nullable("string"),
        "disabled_at": nullable("string"),
        "open_review_items": {"type": "integer", "description": "review items waiting for an operator"},
        "held_run_id": {**nullable("string"), "description": "the run whose deactivations wait for confirm or"
                        " dismiss (at most one per Organization)"},
        "last_error": {**nullable("string"), "description": "why the last run failed, else the tenant's last"
                       " error"}}},
    "Explanation": {"type": "object", "properties": {
        "organization_id": {"type": "string"}, "microsoft_tenant_id": {"type": "string"},
        "entra_object_id": nullable("string"), "entra_user": {"type": ["object", "null"]},
        "sync_status": {"enum": ["not_set_up", "enabled", "disabled"]},
        "end_user": {"type": ["object", "null"], "properties": {
            "id": {"type": "string"}, "sync_state": {"type": "string"}, "sync_state_reason": nullable("string"),
            "email": nullable("string"), "entra_object_id": nullable("string")}},
        "filters": {"oneOf": [ref("Filters"), {"type": "null"}]},
        "sections": {"type": "array", "items": {"type": "object", "properties": {
            "section": {"type": "string"}, "user_values": {"type": "array", "items": {"type": "string"}},
            "filter": SECTION, "matched": {"type": "boolean"}}}},
        "in_scope": nullable("boolean"), "leaver": nullable("string"),
        "notes": {"type": "array", "items": {"type": "string"},
                  "description": "why the End User's sync_state is what it is, one sentence per reason"},
        "next_sync": {"type": ["object", "null"], "description": "what the sync would do now: action (create,"
                      " adopt, update, deactivate, stop_updating, review, nothing) and its reason"}}},
    "OptionValue": {"type": "object", "properties": {"value": {"type": "string"}, "count": {"type": "integer"}}},
    "Options": {"type": "object", "properties": {
        "microsoft_tenant_id": {"type": "string"}, "total_users": {"type": "integer"},
        **{name: {"type": "array", "items": ref("OptionValue")}
           for name in FILTER_SECTIONS if name != "groups"},
        "groups": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "string"}, "name": nullable("string"), "count": {"type": "integer"}}}}}},
    "Preview": {"type": "object", "properties": {
        "microsoft_tenant_id": {"type": "string"}, "matching": {"type": "integer"},
        "would_create": {"type": "integer"}, "would_update": {"type": "integer"},
        "would_stop_updating": {"type": "integer"}, "would_review": {"type": "integer"},
        "would_deactivate": {"type": "integer", "description": "leavers the sync would deactivate (the "
                             "accidental-deletion guard may hold them)"},
        "samples": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "object"}}},
        "warnings": {"type": "array", "items": {"type": "string"}}}},
    "PsaTenantCreate": {"type": "object", "required": ["name"], "additionalProperties": False,
                        "properties": {"name": {"type": "string"}}},
    "PsaTenantMap": {"type": "object", "required": ["microsoft_tenant_id"], "additionalProperties": False,
                     "properties": {"microsoft_tenant_id": {"type": "string"}}},
    "OrganizationCreate": {"type": "object", "required": ["name", "psa_tenant_id"], "additionalProperties": False,
                           "properties": {"name": {"type": "string"},
                                          "psa_tenant_id": {"type": "string", "format": "uuid"}}},
    "OrganizationAssign": {"type": "object", "required": ["psa_tenant_id"], "additionalProperties": False,
                           "properties": {"psa_tenant_id": {"type": "string", "format": "uuid"}}},
}

PATHS: dict[str, dict[str, Any]] = {
    "/microsoft-tenants": {
        "get": op("List registered Microsoft tenants (never the client secret)", "tenants", "[MicrosoftTenant]"),
        "post": op("Register a Microsoft tenant. The credential is tested first (a token from the authority,"
                    " then GET /organization, whose id must be the tenant's); refused → 400 with Entra's error"
                    " code and nothing stored", "registered", "MicrosoftTenant", status="201",
                    body="MicrosoftTenantCreate", errors=("400", "401", "409", "503")),
    },
    "/microsoft-tenants/{id}": {
        "parameters": ID,
        "patch": op("Change display_name, client_id or client_secret. A changed credential is tested like a"
                     " registration (refused → 400, the stored one kept) and used by every worker from its next"
                     " unit of work of the tenant, without a restart", "changed", "MicrosoftTenant",
                     body="MicrosoftTenantUpdate", errors=("400", "401", "404", "503")),
        "delete": op("Remove an unmapped tenant: its Graph subscriptions (deleted in Graph too), mirror and"
                      " status; End Users and runs stay. 409 while a PSA tenant maps it or while the worker is"
                      " doing its work", "removed", "MicrosoftTenantRemoved",
                      errors=("401", "404", "409", "503")),
    },
    "/microsoft-tenants/{id}/sync-status": {
        "parameters": ID,
        "get": op("Real-time state of a tenant: Graph subscriptions (expiry, last notification), last delta,"
                   " last full resync, last error", "status", "TenantSyncStatus", errors=NF),
    },
    "/psa-tenants": {
        "get": op("List PSA tenants", "PSA tenants", "[PsaTenant]"),
        "post": op("Create a PSA tenant {name}", "created", "PsaTenant", status="201",
                    body="PsaTenantCreate", errors=("400", "401", "409")),
    },
    "/psa-tenants/{id}/microsoft-tenant": {
        "parameters": ID,
        "put": op("Map (or remap) to a Microsoft tenant {microsoft_tenant_id}; End Users linked to a previous"
                   " tenant become sync_disabled", "mapped", "PsaTenant", body="PsaTenantMap",
                   errors=("400", "401", "404", "409")),
        "delete": op("Unmap; End Users linked to the tenant become sync_disabled (kept)", "unmapped",
                      "PsaTenant", errors=NF),
    },
    "/organizations": {
        "get": op("List Organizations", "Organizations", "[Organization]", errors=("400", "401"),
                   query=("psa_tenant_id",)),
        "post": op("Create an Organization {name, psa_tenant_id}", "created", "Organization", status="201",
                    body="OrganizationCreate", errors=("400", "401")),
    },
    "/organizations/{id}/psa-tenant": {
        "parameters": ID,
        "put": op("Re-assign to another PSA tenant {psa_tenant_id}; End Users linked to the old Microsoft"
                   " tenant become sync_disabled", "re-assigned", "Organization", body="OrganizationAssign",
                   errors=BAD),
    },
    "/organizations/{id}/user-sync": {
        "parameters": ID,
        "get": op("User sync status, filters, in_progress and last run", "status", "UserSync", errors=NF),
        "put": op("Enable or edit user sync with filters; queues an initial sync", "queued", "RunAccepted",
                   status="202", body="FiltersBody", errors=("400", "401", "404", "409")),
        "delete": op("Disable user sync: End Users are kept and become sync_disabled", "disabled", "UserSync",
                      errors=("401", "404", "409")),
    },
    "/organizations/{id}/user-sync/options": {
        "parameters": ID,
        "get": op("Values seen in the tenant mirror for each filter section, with counts", "options",
                   "Options", errors=("401", "404", "409")),
    },
    "/organizations/{id}/user-sync/preview": {
        "parameters": ID,
        "post": op("What proposed filters would do, from the mirror (no Graph call), decided by the sync's own"
                    " code: equal to what applying them then does", "preview", "Preview",
                    body="FiltersBody", errors=("400", "401", "404", "409")),
    },
    "/organizations/{id}/user-sync/explain": {
        "parameters": ID,
        "get": op("Why an Entra user (entra_object_id or email, exactly one) is or is not an End User: each"
                   " filter section, in scope, the linked End User and why its state is what it is, and what the"
                   " next sync would do", "explanation", "Explanation", errors=("400", "401", "404", "409"),
                   query=("entra_object_id", "email")),
    },
    "/organizations/{id}/user-sync/runs": {
        "parameters": ID,
        "post": op("Run now with the current filters", "queued", "RunAccepted", status="202",
                    errors=("401", "404", "409")),
    },
}
