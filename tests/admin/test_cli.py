"""The CLI forms, parsed by a `register`-built parser and run against a live admin API server."""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from worker.admin.cli import register

from .conftest import TOKEN, Api, Client, seed_mirror, sim_tenant, unique


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


Cli = Callable[..., Awaitable[Result]]


def _invoke(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="entra-sync")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def cli(client: Client, capsys: pytest.CaptureFixture[str]) -> Cli:
    url = str(client.make_url("")).rstrip("/")

    async def run(*argv: str, connect: bool = True) -> Result:
        full = [*argv, "--admin-url", url, "--admin-token", TOKEN] if connect else list(argv)
        capsys.readouterr()
        with capture_logs():  # the server's log lines would otherwise share stdout with the CLI
            code = await asyncio.to_thread(_invoke, full)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


async def _ok(cli: Cli, *argv: str) -> Any:
    result = await cli(*argv)
    assert result.code == 0, result.err
    return result.json


async def test_operator_flow_through_the_cli(cli: Cli, api: Api) -> None:
    tenant = await sim_tenant(api.sim)
    tenant_id = tenant["tenant_id"]
    await _ok(cli, "tenants", "add", "--tenant-id", tenant_id, "--display-name", "Contoso", "--client-id",
              tenant["client_id"], "--client-secret", tenant["client_secret"])
    assert tenant_id in (await cli("tenants", "list", "--table")).out
    psa = await _ok(cli, "psa-tenants", "add", unique("PSA"))
    assert (await _ok(cli, "psa-tenants", "map", psa["id"], tenant_id))["microsoft_tenant_id"] == tenant_id
    assert psa["id"] in {p["id"] for p in (await _ok(cli, "psa-tenants", "list"))["items"]}
    org = await _ok(cli, "orgs", "add", unique("Org"), "--psa-tenant", psa["id"])
    assert [o["id"] for o in (await _ok(cli, "orgs", "list", "--psa-tenant", psa["id"]))["items"]] == [org["id"]]
    await seed_mirror(api.pool, tenant_id, [
        {"id": "s1", "display_name": "Sam", "mail": "sam@contoso.com", "department": "Sales"},
        {"id": "e1", "display_name": "Eli", "mail": "eli@fabrikam.com", "department": "Engineering"}])

    options = await _ok(cli, "sync", "options", org["id"])
    assert {d["value"] for d in options["departments"]} == {"Sales", "Engineering"}
    preview = await _ok(cli, "sync", "preview", org["id"], "--departments", "Sales")
    assert (preview["matching"], preview["would_create"]) == (1, 1)
    run_id = (await _ok(cli, "sync", "enable", org["id"], "--departments", "Sales,Support"))["run_id"]
    await _ok(cli, "sync", "edit", org["id"], "--domains", "contoso.com")
    status = await _ok(cli, "sync", "status", org["id"])
    assert status["filters"]["departments"] == ["Sales", "Support"] and status["filters"]["domains"] == ["contoso.com"]
    assert status["status"] == "enabled" and status["in_progress"] is True
    assert (await _ok(cli, "sync", "preview", org["id"]))["matching"] == 1  # current filters
    now = (await _ok(cli, "sync", "run", org["id"]))["run_id"]
    runs = (await _ok(cli, "runs", "list", "--org", org["id"]))["items"]
    assert runs[0]["id"] == now and run_id in {r["id"] for r in runs}
    assert (await _ok(cli, "runs", "show", run_id))["kind"] == "org-sync"
    result = await cli("runs", "confirm", run_id)
    assert result.code == 1 and "only a held" in result.err
    result = await cli("runs", "dismiss", run_id)
    assert result.code == 1 and "only a held" in result.err
    explained = await _ok(cli, "sync", "explain", org["id"], "--entra-object-id", "s1")
    assert (explained["entra_object_id"], explained["in_scope"]) == ("s1", True)
    explained = await _ok(cli, "sync", "explain", org["id"], "--email", "ELI@fabrikam.com")
    assert (explained["entra_object_id"], explained["in_scope"]) == ("e1", False)
    assert [s["section"] for s in explained["sections"] if not s["matched"]] == ["domains", "departments"]

    manual = await _ok(cli, "end-users", "add", org["id"], "--first-name", "Ann", "--email", "ann@contoso.com")
    listed = await _ok(cli, "end-users", "list", org["id"], "--email", "ANN@contoso.com")
    assert [u["id"] for u in listed["items"]] == [manual["id"]]
    assert (await _ok(cli, "end-users", "show", manual["id"]))["sync_state"] == "manual"
    asset = await _ok(cli, "assets", "add", org["id"], "--name", "PC", "--mac", "AA-BB-CC-DD-EE-FF",
                      "--mac", "aabb.ccdd.ee01")
    assert asset["mac_addresses"] == ["aabbccddeeff", "aabbccddee01"]
    assert (await _ok(cli, "assets", "list", org["id"]))["items"] == [asset]
    assert (await _ok(cli, "end-users", "delete", manual["id"])) == {"deleted": manual["id"]}

    await api.pool.execute("INSERT INTO review_items (organization_id, entra_tenant_id, entra_object_id, reason)"
                           " VALUES ($1, $2, 's1', 'ambiguous')", org["id"], tenant_id)
    [review] = (await _ok(cli, "review", "list", "--org", org["id"]))["items"]
    resolved = await _ok(cli, "review", "resolve", review["id"], "--create")
    assert resolved["action"] == "create"
    assert (await _ok(cli, "review", "list", "--org", org["id"], "--status", "resolved"))["items"][0]["id"] == \
        review["id"]

    assert (await _ok(cli, "sync", "disable", org["id"]))["status"] == "disabled"
    other = await _ok(cli, "psa-tenants", "add", unique("PSA"))
    assert (await _ok(cli, "orgs", "assign", org["id"], other["id"]))["psa_tenant_id"] == other["id"]
    assert (await _ok(cli, "psa-tenants", "unmap", psa["id"]))["microsoft_tenant_id"] is None


async def test_api_errors_exit_non_zero_with_the_message(cli: Cli) -> None:
    name = unique("PSA")
    await _ok(cli, "psa-tenants", "add", name)
    result = await cli("psa-tenants", "add", name)
    assert result.code == 1 and result.out == ""
    assert f"a PSA tenant named '{name}' already exists (HTTP 409 conflict)" in result.err
    result = await cli("sync", "enable", str(uuid.uuid4()), "--departments", "Sales")
    assert result.code == 1 and "HTTP 404" in result.err
    result = await cli("assets", "add", str(uuid.uuid4()), "--name", "x", "--mac", "zz")
    assert result.code == 1 and "mac_addresses[0]" in result.err
    result = await cli("sync", "enable", str(uuid.uuid4()), "--filters", "{nope")
    assert result.code == 2 and "--filters" in result.err


async def test_table_output(cli: Cli) -> None:
    psa = await _ok(cli, "psa-tenants", "add", unique("PSA"))
    table = (await cli("psa-tenants", "list", "--table")).out.splitlines()
    assert table[0].split()[:3] == ["id", "name", "microsoft_tenant_id"]
    assert any(line.startswith(psa["id"]) for line in table[1:])
    one = (await cli("orgs", "add", "Acme", "--psa-tenant", psa["id"], "--table")).out
    assert "psa_tenant_id" in one and psa["id"] in one


async def test_connection_from_env_then_stack_json(
    cli: Cli, client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = str(client.make_url("")).rstrip("/")
    monkeypatch.delenv("ADMIN_URL", raising=False)
    monkeypatch.delenv("ADMIN_TOKEN", raising=False)
    result = await cli("orgs", "list", "--state-dir", str(tmp_path), connect=False)
    assert result.code == 2 and "cannot locate the admin API" in result.err
    (tmp_path / "stack.json").write_text(json.dumps({"admin_url": url, "admin_token": TOKEN}))
    assert (await cli("orgs", "list", "--state-dir", str(tmp_path), connect=False)).code == 0
    monkeypatch.setenv("ADMIN_URL", url)
    monkeypatch.setenv("ADMIN_TOKEN", "wrong")
    result = await cli("orgs", "list", "--state-dir", str(tmp_path), connect=False)
    assert result.code == 1 and "HTTP 401" in result.err  # the environment wins over stack.json
    assert (await cli("orgs", "list", "--admin-token", TOKEN, connect=False)).code == 0  # a flag wins
    monkeypatch.setenv("ADMIN_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("ADMIN_TOKEN", TOKEN)
    result = await cli("orgs", "list", connect=False)
    assert result.code == 1 and "cannot reach the admin API" in result.err


async def test_tenants_update_and_remove(cli: Cli, api: Api) -> None:
    tenant_id = await api.microsoft_tenant()
    refused = await cli("tenants", "update", tenant_id, "--client-secret", "not-it")
    assert refused.code == 1 and "invalid_client" in refused.err and "not-it" not in refused.err
    assert (await cli("tenants", "update", tenant_id)).code == 2  # nothing to change
    renamed = await _ok(cli, "tenants", "update", tenant_id.upper(), "--display-name", "Renamed")
    assert (renamed["tenant_id"], renamed["display_name"]) == (tenant_id, "Renamed")
    psa = await api.psa_tenant(tenant_id)
    mapped = await cli("tenants", "remove", tenant_id)
    assert mapped.code == 1 and "unmap it first" in mapped.err
    await _ok(cli, "psa-tenants", "unmap", psa["id"])
    removed = await _ok(cli, "tenants", "remove", tenant_id)
    assert removed["removed"] is True and removed["subscriptions_deleted"] == []
    assert tenant_id not in (await cli("tenants", "list")).out


async def test_ownership_commands_through_the_cli(cli: Cli, api: Api) -> None:
    """Edit and lock, unlock, exclude and include, the journal, leavers and undo (refused while in force)."""
    from .conftest import insert_end_user

    world = await api.world()
    run_id = await api.enable(world.org_id)
    await api.pool.execute("UPDATE sync_runs SET status = 'succeeded' WHERE id = $1", run_id)
    end_user = await insert_end_user(api.pool, world.org_id, tenant_id=world.tenant_id, object_id="o-1",
                                     email="o1@contoso.com")
    edited = await _ok(cli, "end-users", "edit", end_user, "--job-title", "Boss", "--city", "")
    assert (edited["job_title"], edited["city"], edited["locked_fields"]) == ("Boss", None, ["city", "job_title"])
    assert (await _ok(cli, "end-users", "unlock", end_user, "city"))["locked_fields"] == ["job_title"]
    assert (await _ok(cli, "end-users", "exclude", end_user))["sync_state"] == "excluded"
    [excluded] = (await _ok(cli, "end-users", "exclusions", world.org_id))["items"]
    assert (excluded["entra_object_id"], excluded["how"]) == ("o-1", "excluded")
    assert await _ok(cli, "end-users", "include", world.org_id, "o-1") == {"included": "o-1"}
    journal = (await _ok(cli, "end-users", "changes", end_user, "--limit", "2"))["items"]
    assert [c["action"] for c in journal] == ["include", "exclude"]
    assert (await _ok(cli, "end-users", "leavers", world.org_id, "--since", "2026-01-01T00:00:00Z"))["items"] == []
    result = await cli("runs", "undo", run_id, "--dry-run")
    assert result.code == 1 and "in force" in result.err
    await _ok(cli, "sync", "disable", world.org_id)
    assert (await _ok(cli, "runs", "undo", run_id, "--dry-run"))["dry_run"] is True
    result = await cli("end-users", "edit", end_user, "--email", "nope")
    assert result.code == 1 and "email" in result.err
