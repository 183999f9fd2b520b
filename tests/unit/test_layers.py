"""The layer map's contracts (pyproject.toml, checked by `lint-imports` in `make lint`) keep up with the tree."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import worker

ROOT = Path(__file__).resolve().parents[2]


def _contract(name_start: str) -> dict[str, object]:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (found,) = [c for c in contracts if c["name"].startswith(name_start)]
    return found


def test_the_pure_core_is_forbidden_every_other_module_of_the_worker() -> None:
    """A module added to the worker's root is forbidden to the core without anyone remembering to list it."""
    forbidden = set(_contract("worker.core is pure")["forbidden_modules"])  # type: ignore[arg-type]
    ours = {f"worker.{m.name}" for m in pkgutil.iter_modules(worker.__path__)} - {"worker.core"}
    assert ours - forbidden == set()
    assert {"webhook", "schemas", "simulator"} <= forbidden


def test_every_exception_to_a_contract_says_why() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    block = text[text.index("[tool.importlinter]"):]
    for line_no, line in enumerate(block.splitlines()):
        if line.strip().startswith('"') and "->" in line:
            above = block.splitlines()[line_no - 1].strip()
            assert above.startswith("#") or "#" in line, f"an ignored import without its reason: {line.strip()}"
