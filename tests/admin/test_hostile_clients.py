"""The admin API against hostile clients: no JSON body (or non-JSON body, content type, Authorization header)
gets a 5xx; slow bodies get 408 or 503 while complete requests pass; a client gone mid-body is one log line.

Hypothesis drives `entra-sync admin-api` (a real process over HTTP on 127.0.0.1, the session's PostgreSQL and
broker) with bodies for every POST/PUT/PATCH operation its OpenAPI document lists, so an endpoint added later
is fuzzed too. Bodies carry the operation's own field names with hostile values (NUL, unpaired surrogates,
numbers too long to convert, deep nesting, wrong types) as well as arbitrary JSON and raw bytes. Path ids are
those of a PSA tenant, an Organization and an End User made for this module, else a random UUID.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile import (
    content_types,
    encode,
    header_bytes,
    json_values,
    raw_bodies,
    send,
    slow_client,
    slow_head,
    texts,
)
from worker.admin.openapi import openapi_document
from worker.config import KafkaSettings
from worker.dev.embedded import free_port

TOKEN = secrets.token_urlsafe(32)
PREFIX = "/api/v1"
BODY_TIMEOUT_S = 1.5
IN_FLIGHT = 3
FUZZ = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _operations() -> list[tuple[str, str, list[str]]]:
    doc = openapi_document()
    schemas = doc.get("components", {}).get("schemas", {})
    found = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if method not in ("post", "put", "patch"):
                continue
            schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if "$ref" in schema:
                schema = schemas.get(schema["$ref"].rsplit("/", 1)[1], {})
            found.append((method.upper(), path, sorted(schema.get("properties", {}))))
    return found


OPERATIONS = _operations()


@dataclass
class Admin:
    port: int
    ids: dict[str, str]
    proc: subprocess.Popen[bytes]
    log: Path

    def call(self, method: str, path: str, body: Any) -> Any:
        reply = send(self.port, method, PREFIX + path, json.dumps(body).encode(), content_type=b"application/json",
                     headers={"Authorization": f"Bearer {TOKEN}".encode()})
        assert reply.status < 300, reply
        return json.loads(reply.body)

    def path(self, template: str) -> str:
        """The template with real ids where it names a kind we made, else a random UUID (a 404)."""
        parts = template.split("/")
        for i, part in enumerate(parts):
            if part.startswith("{"):
                parts[i] = self.ids.get(parts[i - 1], str(uuid.uuid4())) if part == "{id}" else "x"
        return "/".join(parts)


@pytest.fixture(scope="module")
def admin_process(database_url: str, kafka_settings: KafkaSettings,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Admin]:
    port = free_port()
    log = tmp_path_factory.mktemp("admin-fuzz") / "admin.log"
    env = {**os.environ, "DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
           "KAFKA_ENABLE_IDEMPOTENCE": str(kafka_settings.enable_idempotence).lower(),
           "ADMIN_HOST": "127.0.0.1", "ADMIN_PORT": str(port), "ADMIN_TOKEN": TOKEN, "LOG_FORMAT": "json",
           "ADMIN_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S), "ADMIN_MAX_BODIES_IN_FLIGHT": str(IN_FLIGHT),
           # Nothing listens there: an endpoint that calls Graph fails at once instead of waiting on the network.
           "GRAPH_URL": "https://127.0.0.1:9/v1.0", "GRAPH_AUTHORITY_URL": "https://127.0.0.1:9"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "admin-api"], env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if send(port, "GET", "/healthz", b"").status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        admin = Admin(port, {}, proc, log)
        psa = admin.call("POST", "/psa-tenants", {"name": f"fuzz-{uuid.uuid4().hex[:8]}"})["id"]
        org = admin.call("POST", "/organizations", {"name": "Fuzz Org", "psa_tenant_id": psa})["id"]
        user = admin.call("POST", f"/organizations/{org}/end-users", {"first_name": "Fuzz", "email": "f@fuzz.test"})
        admin.ids.update({"psa-tenants": psa, "organizations": org, "end-users": user["id"]})
        yield admin
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


SECTIONS = ["user_types", "domains", "office_locations", "departments", "groups"]
filters = st.one_of(
    st.dictionaries(st.sampled_from(SECTIONS), st.one_of(st.just("all"), st.lists(texts, max_size=3), json_values)),
    json_values,
)


def _value(name: str, ids: dict[str, str]) -> st.SearchStrategy[Any]:
    special = {
        "filters": filters,
        "psa_tenant_id": st.one_of(st.just(ids.get("psa-tenants", "")), texts),
        "end_user_id": st.one_of(st.just(ids.get("end-users", "")), texts),
        "mac_addresses": st.one_of(st.lists(st.one_of(st.just("AA:BB:CC:DD:EE:FF"), texts), max_size=3), json_values),
        "create": st.one_of(st.booleans(), json_values),
        "email": st.one_of(st.just("x@y.test"), texts),
    }
    return special.get(name, st.one_of(texts, json_values))


@st.composite
def bodies(draw: Any, fields: list[str], ids: dict[str, str]) -> bytes:
    shape = draw(st.sampled_from(["fields", "fields", "fields", "json", "raw"]))
    if shape == "fields":
        chosen = draw(st.sets(st.sampled_from(fields))) if fields else set()
        body = {name: draw(_value(name, ids)) for name in chosen}
        body |= draw(st.dictionaries(texts, json_values, max_size=1))
        return encode(body)
    if shape == "json":
        return encode(draw(json_values))
    return bytes(draw(raw_bodies))


@pytest.mark.parametrize("method,template,fields", OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_no_body_gets_a_5xx(admin_process: Admin, method: str, template: str, fields: list[str]) -> None:
    admin = admin_process
    path = PREFIX + admin.path(template)

    @FUZZ
    @given(body=bodies(fields, admin.ids),
           content_type=st.one_of(st.just(b"application/json"), content_types),
           auth=st.one_of(st.just(f"Bearer {TOKEN}".encode()), st.just(f"Bearer {TOKEN}".encode()), header_bytes,
                          st.just(b"Bearer \xff\xfe" + TOKEN.encode())))
    def check(body: bytes, content_type: bytes, auth: bytes) -> None:
        reply = send(admin.port, method, path, body, content_type=content_type, headers={"Authorization": auth})
        assert reply.status < 500, (reply, body[:300])

    check()
    assert admin.proc.poll() is None


async def test_slow_bodies_get_408_or_503_while_complete_requests_pass(admin_process: Admin) -> None:
    admin = admin_process
    head = slow_head(f"{PREFIX}/psa-tenants")
    sending = [asyncio.Event() for _ in range(3 * IN_FLIGHT)]
    clients = [asyncio.create_task(slow_client(admin.port, head, trickle_for_s=BODY_TIMEOUT_S + 2, ready=e))
               for e in sending]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in sending)), 20)
    await asyncio.sleep(0.3)  # past the grace: every slot is held by a slow body
    created = await asyncio.to_thread(admin.call, "POST", "/psa-tenants", {"name": f"meanwhile-{uuid.uuid4().hex[:6]}"})
    statuses = sorted(a.status or 0 for a in await asyncio.gather(*clients))

    assert created["id"]
    assert statuses == [408] * IN_FLIGHT + [503] * (2 * IN_FLIGHT), statuses


async def test_an_announced_oversize_body_is_refused_before_it_is_read(admin_process: Admin) -> None:
    # Nothing of the 2 MiB follows the headers: a server that started reading it would wait for ever.
    head = slow_head(f"{PREFIX}/psa-tenants", length=2 * 1024 * 1024)
    head = head.replace(b"\r\n\r\n", f"\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
    reply = await asyncio.wait_for(asyncio.to_thread(send_head, admin_process.port, head), 15)
    assert reply.startswith(b"HTTP/1.1 413"), reply


def send_head(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        return sock.recv(65536)


async def test_client_gone_mid_body_is_one_log_line(admin_process: Admin) -> None:
    admin = admin_process
    seen = len(admin.log.read_text().splitlines())
    _, writer = await asyncio.open_connection("127.0.0.1", admin.port)
    writer.write(slow_head(f"{PREFIX}/psa-tenants") + b'{"name": "')
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.transport.abort()

    deadline = time.monotonic() + 10
    while "client_disconnected" not in "".join(admin.log.read_text().splitlines()[seen:]):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    lines = [json.loads(line) for line in admin.log.read_text().splitlines()[seen:]]
    assert [(e["event"], e["level"]) for e in lines] == [("admin.client_disconnected", "warning")], lines
    assert "Traceback" not in admin.log.read_text()
