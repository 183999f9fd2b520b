"""Graph's error bodies and the exception handlers raise to produce them.

`{"error": {"code", "message", "innerError": {"date", "request-id", "client-request-id"}}}`, as Graph sends.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec
from aiohttp import web

from simulator.context import REQUEST_ID

JSON_TYPE = "application/json"
GRAPH_JSON_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"


class GraphError(Exception):
    """An error answer in Graph's shape; raised by handlers, rendered by the error middleware."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def bad_request(message: str, code: str = "BadRequest") -> GraphError:
    return GraphError(400, code, message)


def not_found(obj_id: str) -> GraphError:
    return GraphError(404, "Request_ResourceNotFound", f"Resource '{obj_id}' does not exist or one of its queried "
                      "reference-property objects are not present.")  # fmt: skip


def error_response(request: web.Request, error: GraphError) -> web.Response:
    client_request_id = request.headers.get("client-request-id", str(uuid.uuid4()))
    body = {
        "error": {
            "code": error.code,
            "message": error.message,
            "innerError": {
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": request.get(REQUEST_ID, client_request_id),
                "client-request-id": client_request_id,
            },
        }
    }
    return web.Response(
        status=error.status, body=msgspec.json.encode(body), headers=error.headers, content_type=JSON_TYPE
    )


def json_response(payload: object, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A Graph JSON answer, encoded with msgspec."""
    response = web.Response(status=status, body=msgspec.json.encode(payload), headers=headers)
    response.headers["Content-Type"] = GRAPH_JSON_TYPE
    return response


def raw_json_response(body: bytes, *, headers: dict[str, str] | None = None) -> web.Response:
    response = web.Response(status=200, body=body, headers=headers)
    response.headers["Content-Type"] = GRAPH_JSON_TYPE
    return response
