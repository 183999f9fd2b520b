"""Opaque, tamper-evident tokens: msgpack payloads, HMAC-signed, base64url-encoded.

Used for delta/skip tokens (which carry the cursor, `$select` and issue time) and for access tokens (JWT
shaped, HS256). A token that fails verification decodes to None; callers turn that into Graph's error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import msgspec

_MAC_BYTES = 12


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal(payload: Any, key: bytes) -> str:
    """An opaque URL-safe token carrying `payload`."""
    body = msgspec.msgpack.encode(payload)
    mac = hmac.new(key, body, hashlib.sha256).digest()[:_MAC_BYTES]
    return _b64(mac + body)


def unseal(token: str, key: bytes, type_: Any) -> Any | None:
    """The payload of a token made by `seal`, or None when it is malformed or was not made with `key`."""
    try:
        raw = _unb64(token)
    except (ValueError, TypeError):
        return None
    mac, body = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
    if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()[:_MAC_BYTES]):
        return None
    try:
        return msgspec.msgpack.decode(body, type=type_)
    except msgspec.DecodeError:
        return None


def make_jwt(claims: dict[str, Any], key: bytes) -> str:
    """A JWT (HS256) with `claims`: shaped like Entra's access tokens, verifiable only by this simulator."""
    header = _b64(msgspec.json.encode({"typ": "JWT", "alg": "HS256", "kid": "simulator"}))
    payload = _b64(msgspec.json.encode(claims))
    signature = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def read_jwt(token: str, key: bytes) -> dict[str, Any] | None:
    """The claims of a JWT made by `make_jwt` with `key`, or None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    header, payload, signature = parts
    expected = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(_unb64(signature), expected):
            return None
        claims = msgspec.json.decode(_unb64(payload))
    except (ValueError, msgspec.DecodeError):
        return None
    return claims if isinstance(claims, dict) else None
