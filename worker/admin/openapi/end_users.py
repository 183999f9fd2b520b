"""The OpenAPI document's End Users and Assets part: listing, reading and creating End Users, an operator's
decisions about one (edit, lock, delete, exclude, include), its journal, leavers, and Assets."""

from __future__ import annotations

from typing import Any

from worker.core.model import SYNC_STATES

from .common import BAD, ID, NF, nullable, op, ref

SCHEMAS: dict[str, Any] = {
    "EndUser": {"type": "object", "properties": {
        **{name: nullable("string") for name in (
            "first_name", "last_name", "email", "phone", "mobile", "street", "city", "state", "postal_code",
            "job_title", "sync_state_reason", "entra_tenant_id", "entra_object_id", "last_synced_at")},
        "id": {"type": "string"}, "organization_id": {"type": "string"},
        "sync_state": {"enum": list(SYNC_STATES)},
        "microsoft": {"type": ["object", "null"]},
        "locked_fields": {"type": "array", "items": {"type": "string"},
                          "description": "fields an operator edited: the sync never overwrites them"},
        "leaver": {"oneOf": [ref("Leaver"), {"type": "null"}]},
        "assets": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}}}}}},
    "EndUserList": {"type": "object", "properties": {
        "items": {"type": "array", "items": ref("EndUser")}, "total": {"type": "integer"},
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
        "reason": {"type": "string"}, "last_sign_in_at": nullable("string"),
        "user_principal_name": nullable("string"),
        "licenses": {"type": "array", "items": {"type": "object"}},
        "assets": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}}}}}},
    "LeaverItem": {"type": "object", "properties": {
        "id": {"type": "string"}, "first_name": nullable("string"), "last_name": nullable("string"),
        "email": nullable("string"), "entra_object_id": nullable("string"),
        "sync_state_reason": nullable("string"), "leaver": ref("Leaver")}},
    "Exclusion": {"type": "object", "properties": {
        "entra_tenant_id": {"type": "string"}, "entra_object_id": {"type": "string"},
        "end_user_id": nullable("string"), "how": {"enum": ["deleted", "excluded"]},
        "excluded_by": {"type": "string"}, "display_name": nullable("string"), "email": nullable("string"),
        "created_at": {"type": "string"}}},
    "Change": {"type": "object", "properties": {
        "at": {"type": "string"},
        "actor": {"type": "object", "properties": {"kind": {"enum": ["sync", "operator"]},
                                                   "run_id": {"type": "string"}}},
        "action": {"type": "string", "description": "create, adopt, update, deactivate, out_of_scope, "
                   "stop_updating, edit, unlock, delete, exclude, include, link, disable_sync, unmap, remap, "
                   "reassign, undo"},
        "fields": {"type": "object", "additionalProperties": {"type": "array", "items": nullable("string"),
                                                              "minItems": 2, "maxItems": 2}},
        "sync_state": {"oneOf": [{"type": "array", "items": nullable("string")}, {"type": "null"}]},
        "reason": nullable("string")}},
    "ChangeList": {"type": "object", "properties": {
        "items": {"type": "array", "items": ref("Change")}, "limit": {"type": "integer"},
        "offset": {"type": "integer"}}},
    "Asset": {"type": "object", "properties": {
        "id": {"type": "string"}, "organization_id": {"type": "string"}, "name": {"type": "string"},
        "mac_addresses": {"type": "array", "items": {"type": "string"}}, "created_at": {"type": "string"}}},
    "AssetCreate": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
        "name": {"type": "string"}, "mac_addresses": {"type": "array", "items": {"type": "string"}}}},
}

PATHS: dict[str, dict[str, Any]] = {
    "/organizations/{id}/end-users": {
        "parameters": ID,
        "get": op("List End Users (email = exact, case-insensitive; q = substring of name or email)",
                   "End Users", "EndUserList", errors=BAD,
                   query=("email", "sync_state", "q", "limit", "offset")),
        "post": op("Create a manual End User", "created", "EndUser", status="201", body="EndUserCreate",
                    errors=("400", "401", "404", "409")),
    },
    "/end-users/{id}": {
        "parameters": ID,
        "get": op("One End User with microsoft, assets, locked_fields and leaver", "End User", "EndUser",
                   errors=NF),
        "patch": op("Edit fields; on a linked End User each edited field becomes locked (the sync never"
                     " overwrites it)", "edited", "EndUser", body="EndUserEdit", errors=("400", "401", "404", "409")),
        "delete": op("Delete an End User; a synced, out-of-scope or otherwise linked one is also excluded (the"
                      " sync never re-creates it)", "deleted", None, status="204", errors=NF),
    },
    "/end-users/{id}/locks/{field}": {
        "parameters": [*ID, {"name": "field", "in": "path", "required": True, "schema": {"type": "string"}}],
        "delete": op("Hand a locked field back to Entra: the next sync fills it", "unlocked", "EndUser",
                      errors=BAD),
    },
    "/end-users/{id}/exclude": {
        "parameters": ID,
        "post": op("Keep the record, stop syncing it (sync_state excluded)", "excluded", "EndUser",
                    errors=("401", "404", "409")),
    },
    "/end-users/{id}/changes": {
        "parameters": ID,
        "get": op("The End User's change journal, newest first", "changes", "ChangeList", errors=BAD,
                   query=("limit", "offset")),
    },
    "/organizations/{id}/exclusions": {
        "parameters": ID,
        "get": op("Entra users excluded from the Organization, with how and when", "exclusions", "[Exclusion]",
                   errors=NF),
    },
    "/organizations/{id}/exclusions/{entra_object_id}": {
        "parameters": [*ID, {"name": "entra_object_id", "in": "path", "required": True,
                              "schema": {"type": "string"}}],
        "delete": op("Include an excluded Entra user again (the next sync of that user decides)", "included",
                      None, status="204", errors=BAD),
    },
    "/organizations/{id}/leavers": {
        "parameters": ID,
        "get": op("Deactivated End Users with their leaver card (since = ISO 8601 time)", "leavers",
                   "[LeaverItem]", errors=BAD, query=("since",)),
    },
    "/organizations/{id}/assets": {
        "parameters": ID,
        "get": op("List Assets", "Assets", "[Asset]", errors=NF),
        "post": op("Create an Asset; MAC addresses are normalised", "created", "Asset", status="201",
                    body="AssetCreate", errors=BAD),
    },
}
