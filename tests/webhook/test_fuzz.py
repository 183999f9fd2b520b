"""Property: no body, content type or header a client can send makes the webhook answer 5xx.

Hypothesis drives `python -m webhook` over HTTP on 127.0.0.1, with the session's broker up (so a 503 could
only be a bug). Bodies are Graph-shaped with hostile fields (clientState non-hex, non-ASCII, NUL; tenant ids
with surrogates; huge numbers), arbitrary JSON, deep nesting and raw bytes. Items that do verify are
published, so the happy path is fuzzed too. Small budget: the module runs in a few seconds.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.client_state import client_state_for
from tests.hostile import (
    SURROGATES,
    clean_json_values,
    clean_texts,
    content_types,
    deep_bodies,
    encode,
    header_bytes,
    json_values,
    raw_bodies,
    send,
    texts,
)

from .conftest import SECRET, HookProcess

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TENANT = str(uuid.uuid4())


def _item(draw: Any) -> dict[str, Any]:
    """A Graph item whose fields are mostly strings (so it decodes and reaches verification), now and then
    one of another JSON type, plus unknown fields."""
    tenant = draw(st.one_of(st.just(TENANT), clean_texts))
    signed = client_state_for(TENANT, SECRET)
    fields = {
        "subscriptionId": st.one_of(st.just(str(uuid.uuid4())), clean_texts),
        "changeType": st.one_of(st.sampled_from(["updated", "deleted", "created"]), clean_texts),
        "lifecycleEvent": st.one_of(st.sampled_from(["reauthorizationRequired", "subscriptionRemoved", "missed"]),
                                    clean_texts),
        "resource": st.one_of(st.sampled_from(["Users/abc", "users", "Groups/x/y", "/"]), clean_texts),
        "tenantId": st.just(tenant),
        "organizationId": st.one_of(st.just(tenant), clean_texts),
        "clientState": st.one_of(st.just(signed), st.just(signed.upper()), st.just(signed + "\x00"),
                                 st.just("é" * 64), clean_texts),
        "resourceData": st.fixed_dictionaries({"id": clean_texts}),
        "subscriptionExpirationDateTime": clean_texts,
    }
    keys = draw(st.sets(st.sampled_from(sorted(fields))))
    item = {k: draw(fields[k]) for k in keys}
    if keys and draw(st.integers(0, 3)) == 0:
        item[draw(st.sampled_from(sorted(keys)))] = draw(clean_json_values)
    return item | draw(st.dictionaries(clean_texts, clean_json_values, max_size=2))


@st.composite
def bodies(draw: Any) -> bytes:
    shape = draw(st.sampled_from(["collection", "collection", "json", "raw", "deep"]))
    if shape == "collection":
        body: dict[str, Any] = {"value": [_item(draw) for _ in range(draw(st.integers(0, 4)))]}
        if draw(st.integers(0, 9)) == 0:  # now and then an unpaired surrogate in a field
            body["value"].append({"tenantId": TENANT, "clientState": draw(st.sampled_from(SURROGATES))})
        if draw(st.booleans()):
            body["validationTokens"] = draw(st.one_of(st.lists(texts, max_size=2), json_values))
        return encode(body)
    if shape == "json":
        return encode(draw(json_values))
    return bytes(draw(deep_bodies if shape == "deep" else raw_bodies))


@pytest.mark.parametrize("path", ["/notifications", "/lifecycle"])
@FUZZ
@given(body=bodies(), content_type=st.one_of(st.just(b"application/json"), content_types),
       junk=st.one_of(st.none(), header_bytes), query=st.sampled_from(["", "?validationToken=", "?x=%ff%00"]))
def test_no_input_gets_a_5xx(hook_process: HookProcess, path: str, body: bytes, content_type: bytes,
                             junk: bytes | None, query: str) -> None:
    headers = {"X-Junk": junk, "Accept-Language": junk} if junk else {}
    reply = send(hook_process.port, "POST", path + query, body, content_type=content_type, headers=headers)
    assert reply.status < 500, (reply, body[:300])
    assert hook_process.proc.poll() is None
