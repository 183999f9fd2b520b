"""`entra-sync up`: the whole product on one machine with nothing installed but Python.

Embedded PostgreSQL unless DATABASE_URL is set, the embedded Tansu broker unless KAFKA_BOOTSTRAP_SERVERS is
set, and simulated tenants (`--tenants N` of `--users M` users each) unless AZURE_TENANT_ID/AZURE_CLIENT_ID/
AZURE_CLIENT_SECRET are set. Then the migrations, and webhook, worker (one or more replicas in one consumer
group), scheduler and admin API as child processes (the same commands production runs), and the demo
(`worker/dev/demo.py`). Writes DIR/stack.json when ready (atomically, mode 0600, every path absolute); on
SIGINT/SIGTERM stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from worker.dev.embedded import (
    EmbeddedKafka,
    EmbeddedPostgres,
    create_database,
    die_with_parent,
    free_port,
)
from worker.store.migrations import migrate

log = structlog.get_logger(__name__)

PROCESSES = ("webhook", "worker", "scheduler", "admin-api")


def write_json_atomic(path: Path, data: dict[str, Any], *, mode: int = 0o600) -> None:
    """Write `path` so that a reader sees the old file or the whole new one, never a part, and never with
    wider permissions than `mode` (it holds secrets): a temporary file created with `mode`, then a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as out:
            os.fchmod(out.fileno(), mode)  # O_CREAT's mode is cut by the umask, and an old tmp keeps its own
            out.write(json.dumps(data, indent=2))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _secrets(state_dir: Path) -> dict[str, str]:
    """Admin token and webhook secret, generated once per state dir and kept (mode 600)."""
    path = state_dir / "secrets.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    values = {"admin_token": secrets.token_urlsafe(32), "webhook_secret": secrets.token_urlsafe(32)}
    path.write_text(json.dumps(values))
    path.chmod(0o600)
    return values


async def _wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before writing {path}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} not written within {timeout_s}s")
        await asyncio.sleep(0.1)
    return dict(json.loads(path.read_text()))


async def wait_healthy(url: str, proc: subprocess.Popen[bytes] | None = None, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not healthy within {timeout_s}s")
            await asyncio.sleep(0.2)


@dataclass
class Children:
    """Child processes of the stack, each logging to DIR/logs/<name>.log, stopped together."""

    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", *args], env=env, stdout=out, stderr=out,
            stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
        )
        self.procs[name] = proc
        return proc

    def stop(self, timeout_s: float = 10) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout_s
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def exited(self) -> list[str]:
        return [name for name, p in self.procs.items() if p.poll() is not None]


def worker_names(workers: int) -> list[str]:
    """Child names of the worker replicas: `worker`, then `worker-2`, `worker-3`, …"""
    return ["worker"] + [f"worker-{i}" for i in range(2, workers + 1)]


@dataclass
class Stack:
    """The embedded stack. `tenants`/`users` size the simulator; `workers` replicas share one consumer
    group; `demo=False` leaves onboarding to the caller (`bench fleet` times its own)."""

    state_dir: Path
    tenants: int = 1
    users: int = 200
    workers: int = 1
    demo: bool = True
    database_url: str | None = None  # a migrated-or-empty database to use instead of DATABASE_URL / embedded
    children: Children = field(init=False)
    kafka: EmbeddedKafka | None = None
    postgres: EmbeddedPostgres | None = None
    info: dict[str, Any] = field(default_factory=dict)
    onboarded: list[Any] = field(default_factory=list)  # worker.dev.demo.Onboarded, one per demo tenant
    env: dict[str, str] = field(default_factory=dict)  # the children's environment, to start more alike

    def __post_init__(self) -> None:
        if self.tenants < 1 or self.users < 0 or self.workers < 1:
            raise ValueError("a stack needs at least one tenant and one worker, and no negative user count")
        self.state_dir = Path(self.state_dir).resolve()  # stack.json's paths are absolute
        self.children = Children(self.state_dir / "logs")

    async def start(self) -> dict[str, Any]:
        """Start the stack's parts and processes, then the demo; returns what stack.json holds."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "stack.json").unlink(missing_ok=True)
        keys = _secrets(self.state_dir)
        database_url = await self._database()
        bootstrap, idempotence = await self._kafka()
        graph = await self._graph()
        await migrate(database_url)
        webhook_port = int(os.environ.get("WEBHOOK_PORT") or free_port())
        admin_port = int(os.environ.get("ADMIN_PORT") or free_port())
        webhook_url = os.environ.get("WEBHOOK_PUBLIC_URL") or f"http://127.0.0.1:{webhook_port}"
        self.env = {
            **os.environ, "LOG_FORMAT": "json", "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_ENABLE_IDEMPOTENCE": str(idempotence).lower(),
            "GRAPH_URL": graph["graph_url"], "GRAPH_AUTHORITY_URL": graph["authority_url"],
            "GRAPH_CA_FILE": graph.get("ca_file") or "", "WEBHOOK_HOST": "127.0.0.1",
            "WEBHOOK_PORT": str(webhook_port), "WEBHOOK_PUBLIC_URL": webhook_url,
            "WEBHOOK_SECRET": keys["webhook_secret"], "ADMIN_HOST": "127.0.0.1",
            "ADMIN_PORT": str(admin_port), "ADMIN_TOKEN": keys["admin_token"],
        }
        if not self.env["GRAPH_CA_FILE"]:
            del self.env["GRAPH_CA_FILE"]
        self._start_processes()
        admin_url = f"http://127.0.0.1:{admin_port}"
        await wait_healthy(f"http://127.0.0.1:{webhook_port}/healthz", self.children.procs["webhook"])
        await wait_healthy(f"{admin_url}/healthz", self.children.procs["admin-api"])
        self.info = {
            "webhook_url": f"http://127.0.0.1:{webhook_port}", "admin_url": admin_url,
            "admin_token": keys["admin_token"], "console_url": admin_url + "/", "graph_url": graph["graph_url"],
            "authority_url": graph["authority_url"], "ca_file": _absolute(graph.get("ca_file") or ""),
            "database_url": database_url, "kafka_bootstrap_servers": bootstrap, "tenants": graph["tenants"],
        }
        if graph.get("simulated") and self.demo:
            from worker.dev.demo import create_demo

            self.onboarded = await create_demo(admin_url, keys["admin_token"], graph["tenants"])
        write_json_atomic(self.state_dir / "stack.json", self.info)
        log.info("stack.ready", stack_json=str(self.state_dir / "stack.json"), admin_url=admin_url,
                 webhook_url=self.info["webhook_url"])
        return self.info

    def _start_processes(self) -> None:
        """The product's processes as children, with the stack's environment; the worker as its replicas."""
        for name in PROCESSES:
            if name == "worker":
                for replica in worker_names(self.workers):
                    self.children.start(replica, ["worker"], self.env)
            else:
                self.children.start(name, [name], self.env)

    async def _database(self) -> str:
        url = self.database_url or os.environ.get("DATABASE_URL")
        if url:
            return url
        self.postgres = EmbeddedPostgres(self.state_dir / "pgdata")
        server_url = await asyncio.to_thread(self.postgres.start)
        return await create_database(server_url, "entra_sync", name="entra_sync")

    async def _kafka(self) -> tuple[str, bool]:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if bootstrap:
            return bootstrap, os.environ.get("KAFKA_ENABLE_IDEMPOTENCE", "true").lower() in ("1", "true")
        self.kafka = EmbeddedKafka(log_file=self.state_dir / "tansu.log")
        return await self.kafka.start(), False  # Tansu rejects InitProducerId

    async def _graph(self) -> dict[str, Any]:
        tenant, client, secret = (os.environ.get(k) for k in
                                  ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"))
        if tenant and client and secret:
            return {
                "graph_url": os.environ.get("GRAPH_URL", "https://graph.microsoft.com/v1.0"),
                "authority_url": os.environ.get("GRAPH_AUTHORITY_URL", "https://login.microsoftonline.com"),
                "ca_file": os.environ.get("GRAPH_CA_FILE", ""),
                "tenants": [{"tenant_id": tenant, "client_id": client, "client_secret": secret}],
            }
        sim_dir = self.state_dir / "simulator"
        sim_dir.mkdir(parents=True, exist_ok=True)
        (sim_dir / "simulator.json").unlink(missing_ok=True)
        proc = self.children.start("simulator", [
            "simulator", "--state-dir", str(sim_dir), "--tenants", str(self.tenants), "--users", str(self.users),
        ], dict(os.environ))
        # Seeding takes about 12 s for 500 tenants of 200 users on this machine.
        info = await _wait_for_file(sim_dir / "simulator.json", proc, timeout_s=60 + self.tenants * self.users / 1000)
        return {**info, "simulated": True}

    async def run_until_stopped(self) -> None:
        while not (dead := self.children.exited()):
            await asyncio.sleep(1)
        log.error("stack.process_exited", processes=dead, logs=str(self.children.log_dir))
        raise SystemExit(f"stack process(es) exited: {', '.join(dead)}; see {self.children.log_dir}")

    def stop(self) -> None:
        self.children.stop()
        if self.kafka:
            self.kafka.stop()
        if self.postgres:
            self.postgres.stop()
        (self.state_dir / "stack.json").unlink(missing_ok=True)
        log.info("stack.stopped")


def _absolute(path: str) -> str:
    return str(Path(path).resolve()) if path else ""


async def run_stack(state_dir: Path, *, tenants: int = 1, users: int = 200, workers: int = 1) -> None:
    stack = Stack(state_dir, tenants=tenants, users=users, workers=workers)
    try:
        await stack.start()
        await stack.run_until_stopped()
    finally:
        stack.stop()  # blocking on purpose: nothing else runs while the stack shuts down
