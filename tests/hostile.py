"""Hostile HTTP clients for the webhook and admin API tests: hypothesis strategies for hostile input, a
raw HTTP sender that can put any bytes in a header, and a slow-loris client.

Strings mix ordinary characters with the ones that broke servers before: NUL, unpaired surrogates, non-ASCII
and very long values; numbers include ones too long for Python's int parser; bodies include nesting deeper
than any parser's stack and bytes that are not UTF-8.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import time
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


DEPTHS = st.sampled_from([900, 1_100, 5_000, 100_000])  # around and far beyond Python's recursion limit
deep_bodies = st.one_of(
    DEPTHS.map(deep),
    DEPTHS.map(lambda d: deep(d, prefix=b'{"value": ')),
    DEPTHS.map(lambda d: deep(d, prefix=b'{"value": [], "x": ')),
)
raw_bodies = st.one_of(
    st.binary(max_size=300),
    deep_bodies,
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


def slow_head(path: str, *, length: int = 60_000) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


@dataclass
class Answer:
    status: int | None  # None: the connection was reset before a status line could be read
    after_s: float  # from the moment headers and the first piece of body were sent
    closed: bool  # the server closed the connection after answering


async def slow_client(
    port: int, head: bytes, *, trickle_for_s: float, ready: asyncio.Event | None = None
) -> Answer:
    """Sends headers and a first piece of a 60 kB body, then one byte every 200 ms for at most trickle_for_s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()

    async def trickle() -> None:
        writer.write(head + b'{"value": [' + b" " * 4096)
        await writer.drain()
        if ready is not None:
            ready.set()
        deadline = time.monotonic() + trickle_for_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            writer.write(b" ")
            await writer.drain()

    sending = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(trickle_for_s + 10):
            status_line = await reader.readline()
            status = int(status_line.split()[1]) if status_line else None
            with contextlib.suppress(ConnectionError):
                while await reader.read(65536):
                    pass
        return Answer(status, time.monotonic() - started, closed=True)
    except ConnectionError:
        return Answer(None, time.monotonic() - started, closed=True)
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
