"""deploy/ cannot run here (no container engine): check that every command and setting it uses exists."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.cli import build_parser
from worker.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def setting_names() -> set[str]:
    names = set()
    for name, info in Settings.model_fields.items():
        group = info.default_factory() if info.default_factory else None  # type: ignore[call-arg]
        if group is not None and hasattr(group, "model_config"):
            prefix = str(group.model_config.get("env_prefix", ""))
            names |= {(prefix + n).upper() for n in type(group).model_fields}
        else:
            names.add(name.upper())
    return names


def commands() -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return set(sub.choices)  # type: ignore[arg-type]


def product_services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return {n: s for n, s in compose["services"].items() if "build" in s}


def k8s_containers() -> list[dict[str, Any]]:
    found = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Deployment":
                found += doc["spec"]["template"]["spec"]["containers"]
    return found


def test_compose_commands_and_environment_exist() -> None:
    known, cmds = setting_names(), commands()
    services = product_services()
    assert {"webhook", "worker", "scheduler", "admin-api", "migrate"} <= set(services)
    for name, service in services.items():
        assert service["command"][0] in cmds, name
        for var in service["environment"]:
            assert var in known, f"{name}: {var} is not a setting"


@pytest.mark.parametrize("container", k8s_containers(), ids=lambda c: c["name"])
def test_k8s_containers_use_real_commands_and_settings(container: dict[str, Any]) -> None:
    assert container["args"][0] in commands()
    for var in container.get("env", []):
        assert var["name"] in setting_names()


def test_k8s_config_keys_are_settings() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "config.yaml").read_text()))
    for doc in docs:
        data = doc.get("data") or doc.get("stringData") or {}
        assert set(data) <= setting_names(), set(data) - setting_names()


def test_dockerfile_copies_existing_paths_and_runs_the_console_script() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    for src in re.findall(r"^COPY (?!--from)(.+?) \S+$", text, flags=re.M):
        for part in src.split():
            assert (ROOT / part).exists(), part
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert 'ENTRYPOINT ["entra-sync"]' in text and "entra-sync" in scripts


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in sorted(setting_names()) if f"`{name}`" not in readme]
    assert missing == []


def test_deploy_ships_no_usable_secret() -> None:
    """Compose refuses to start without each secret; k8s ships no Secret, so the operator must create one."""
    for name, service in product_services().items():
        env = service["environment"]
        for var in ("WEBHOOK_SECRET", "ADMIN_TOKEN"):
            assert re.fullmatch(rf"\$\{{{var}:\?[^}}]+\}}", env[var]), f"{name}: {var} = {env[var]!r}"
        assert ":?" in env["DATABASE_URL"], name
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        assert "Secret" not in {doc["kind"] for doc in docs}, path
    for container in k8s_containers():
        [ref] = [e["secretRef"] for e in container["envFrom"] if "secretRef" in e]
        assert not ref.get("optional"), container["name"]
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            assert not re.search(r"(?i)change-?me|placeholder|\bsecret123\b", path.read_text()), path
