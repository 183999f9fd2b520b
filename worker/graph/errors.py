"""Graph's failures, mapped once into a small class tree: what the engines tell apart (transient, throttled, gone,
refused, a delta to restart, our own mistake)."""

from __future__ import annotations

import contextlib
import json

import httpx
import msgspec
from azure.core.exceptions import ClientAuthenticationError


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"Graph {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class GraphTransient(GraphError):
    """Throttled, 5xx or network trouble that outlived our retries: retry later, don't commit."""


class GraphThrottled(GraphTransient):
    """Graph asked this tenant to wait longer than a unit of work may wait in place: park the tenant until
    `retry_after` seconds have passed (already capped), then try again."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: float) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after


class GraphNotFound(GraphError):
    """The object is gone: treat as removal."""


class DeltaTokenExpired(GraphError):
    """410 Gone or syncStateNotFound: restart with a full listing."""


class GraphForbidden(GraphError):
    """Missing permission, licence or capability (P1/P2, Intune), or a quota."""


class GraphAuthFailed(GraphForbidden):
    """The tenant's credentials were refused (unknown tenant, wrong or expired secret, consent revoked).

    `code` is Entra's `error` (`invalid_client`, `unauthorized_client`, `invalid_request` …) and `message`
    starts with its AADSTS code, e.g. `AADSTS7000215: Invalid client secret provided.`
    """

    def __init__(self, status: int, code: str, message: str, *, entra_codes: tuple[int, ...] = ()) -> None:
        super().__init__(status, code, message)
        self.entra_codes = entra_codes


class GraphBadRequest(GraphError):
    """Our request was wrong: a bug or bad configuration, never retried."""


class _ErrorBody(msgspec.Struct):
    code: str = ""
    message: str = ""


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorBody = msgspec.field(default_factory=_ErrorBody)


def entra_refusal(exc: ClientAuthenticationError) -> GraphAuthFailed:
    """Entra's answer to a refused token request: its `error` (`invalid_client` …) and AADSTS code and text,
    read from the response body; never the secret (Entra does not echo it)."""
    status, error, description = 401, "authentication", str(exc).splitlines()[0]
    codes: tuple[int, ...] = ()
    response = getattr(exc, "response", None)
    if response is not None:
        status = getattr(response, "status_code", None) or status
        with contextlib.suppress(Exception):  # a body that is not Entra's JSON keeps the exception's text
            body = json.loads(response.text())
            error = str(body.get("error") or error)
            codes = tuple(int(c) for c in body.get("error_codes") or ())
            description = str(body.get("error_description") or description)
    # Entra appends trace and correlation ids and a timestamp: not what an operator needs to read.
    description = description.split(" Trace ID:")[0].strip()
    return GraphAuthFailed(status, error, description[:300], entra_codes=codes)


def map_error(response: httpx.Response) -> GraphError:
    try:
        body = msgspec.json.decode(response.content, type=_ErrorEnvelope).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        body = _ErrorBody(message=response.text[:200])
    status = response.status_code
    if status == 410 or body.code == "syncStateNotFound" or "resyncRequired" in body.code:
        return DeltaTokenExpired(status, body.code, body.message)
    if status == 404:
        return GraphNotFound(status, body.code, body.message)
    if status in (401, 403):
        return GraphForbidden(status, body.code, body.message)
    if status == 429 or status >= 500:
        return GraphTransient(status, body.code, body.message)
    return GraphBadRequest(status, body.code, body.message)

