"""The admin API's OpenAPI 3.1 document, written by hand (served at `/api/v1/openapi.json`), one module per
resource (`configuration`, `end_users`, `runs`) beside what they share (`common`).

`tests/admin/test_openapi.py` checks that every route the app registers is described here and nothing else.
"""

from __future__ import annotations

from typing import Any

from . import common, configuration, end_users, runs
from .common import JSON

SCHEMAS: dict[str, Any] = {**common.SCHEMAS, **configuration.SCHEMAS, **end_users.SCHEMAS, **runs.SCHEMAS}
PATHS: dict[str, dict[str, Any]] = {
    **configuration.PATHS, **end_users.PATHS, **runs.PATHS,
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
