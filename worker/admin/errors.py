"""The admin API's error type and its JSON form `{"error": {"code", "message"}}` (CONTRACTS.md).

Store errors (`NotFound`, `Conflict`, `InvalidReference`) and bad input are mapped here, once, to a status
and a stable code; a 400 always names the offending field.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from worker.store.records import Conflict, InvalidReference, NotFound, StoreError

_CODES = {
    400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "payload_too_large", 500: "internal", 503: "unavailable",
}


class ApiError(Exception):
    """An error answered to the client as JSON."""

    def __init__(
        self, status: int, message: str, *, field: str | None = None, code: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self._code = code
        self.details = details or {}

    @property
    def code(self) -> str:
        """The status's code, or a more precise one (e.g. Entra's `invalid_client` for a refused credential)."""
        return self._code or _CODES.get(self.status, "error")


class BadRequest(ApiError):
    """Bad input; the message starts with the field it is about."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(400, f"{field}: {message}", field=field)


class Unavailable(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(503, message)


def from_store(error: StoreError) -> ApiError:
    if isinstance(error, InvalidReference):
        return ApiError(400, str(error), field=error.field)
    if isinstance(error, NotFound):
        return ApiError(404, str(error))
    if isinstance(error, Conflict):
        return ApiError(409, str(error))
    return ApiError(500, "internal error")


def error_response(error: ApiError, *, headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.field:
        body["field"] = error.field
    body.update(error.details)
    return web.json_response({"error": body}, status=error.status, headers=headers)
