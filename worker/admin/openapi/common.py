"""What the OpenAPI document's parts share: references, nullable types, the operation builder (`op`), the
error answers, and the schemas every resource uses (`Error`, `RunAccepted`)."""

from __future__ import annotations

from typing import Any

JSON = "application/json"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(type_: str) -> dict[str, Any]:
    return {"type": [type_, "null"]}


def list_of(name: str) -> dict[str, Any]:
    return {"type": "object", "properties": {"items": {"type": "array", "items": ref(name)}}}


SECTION = {"oneOf": [{"const": "all"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]}

ERRORS = {
    "400": "bad input; the message names the field", "401": "missing or wrong bearer token",
    "404": "no such resource", "409": "conflicts with the current state",
    "503": "a dependency (database, broker, Entra or Graph) is unreachable; nothing was changed",
}



def op(summary: str, ok: str, schema: str | None, *, status: str = "200", body: str | None = None,
        errors: tuple[str, ...] = ("401",), query: tuple[str, ...] = ()) -> dict[str, Any]:
    responses: dict[str, Any] = {status: {"description": ok}}
    if schema is not None:
        responses[status]["content"] = {JSON: {"schema": ref(schema) if not schema.startswith("[") else
                                               list_of(schema[1:-1])}}
    for code in errors:
        responses[code] = {"description": ERRORS[code], "content": {JSON: {"schema": ref("Error")}}}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": ref(body)}}}
    if query:
        op["parameters"] = [{"name": q, "in": "query", "required": False, "schema": {"type": "string"}}
                            for q in query]
    return op


ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
NF = ("401", "404")
BAD = ("400", "401", "404")

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
    "RunAccepted": {"type": "object", "required": ["run_id"], "properties": {"run_id": {"type": "string"}}},
}
