"""Hypothesis strategies for hostile HTTP input, shared by the webhook's and the admin API's fuzz tests, and a
raw HTTP sender that can put any bytes in a header.

Strings mix ordinary characters with the ones that broke servers before: NUL, unpaired surrogates, non-ASCII
and very long values; numbers include ones too long for Python's int parser; bodies include nesting deeper
than any parser's stack and bytes that are not UTF-8.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

SPECIAL = ["\x00", "\ufeff", "é", "\U0001d54f", "\u202e", "'", '"', "\\", "%00", "1e999999"]
SURROGATES = ["\ud800", "\udfff", "a\udc00b"]
# Without unpaired surrogates: a body holding one anywhere is refused whole by a strict JSON decoder, which
# would hide every other path; `texts` adds them back now and then.
clean_texts = st.one_of(
    st.text(max_size=24),
    st.lists(st.one_of(st.characters(), st.sampled_from(SPECIAL)), max_size=24).map("".join),
    st.sampled_from(["", "x" * 5000, "a\x00b", "00000000-0000-0000-0000-000000000000"]),
)
texts = st.one_of(clean_texts, st.sampled_from(SURROGATES))
numbers = st.one_of(
    st.integers(), st.integers(min_value=10**300, max_value=10**400), st.floats(allow_nan=True, allow_infinity=True)
)


def _json(strings: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.none(), st.booleans(), numbers, strings)
    return st.recursive(
        leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(strings, inner, max_size=4), max_leaves=12
    )


json_values = _json(texts)
clean_json_values = _json(clean_texts)


def encode(value: Any) -> bytes:
    """JSON as a careless client writes it: NaN/Infinity literals kept, lone surrogates as \\u escapes."""
    return json.dumps(value, ensure_ascii=True, allow_nan=True).encode()


def deep(depth: int, *, prefix: bytes = b"") -> bytes:
    return prefix + b"[" * depth + b"]" * depth + (b"}" if prefix else b"")


DEPTHS = st.sampled_from([10, 900, 1_100, 5_000, 100_000])  # around and far beyond Python's recursion limit
raw_bodies = st.one_of(
    st.binary(max_size=300),
    DEPTHS.map(deep),
    DEPTHS.map(lambda d: deep(d, prefix=b'{"value": ')),
    DEPTHS.map(lambda d: deep(d, prefix=b'{"value": [], "x": ')),
    st.just(b'{"value": [' + b"9" * 6000 + b"]}"),
    st.just(b'{"value": [{"clientState": "\xff\xfe\xfd"}]}'),
    st.just('{"value": [{"tenantId": "caf\u00e9"}]}'.encode("latin-1")),
)
header_bytes = st.binary(min_size=1, max_size=30).filter(lambda b: not set(b) & {0, 10, 13})
content_types = st.one_of(
    st.sampled_from([b"application/json", b"application/json; charset=utf-8", b"application/json; charset=bogus",
                     b"application/json; charset=utf-16", b"text/plain", b"application/x-www-form-urlencoded",
                     b"multipart/form-data; boundary=x", b"application/json;;;", b""]),
    header_bytes,
)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes


def send(port: int, method: str, path: str, body: bytes, *, content_type: bytes | None = None,
         headers: dict[str, bytes] | None = None) -> Reply:
    """One request on a fresh connection (the server may close it), headers as raw bytes."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        if content_type is not None:
            conn.putheader("Content-Type", content_type)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return Reply(response.status, response.read())
    finally:
        conn.close()
