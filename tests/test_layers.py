"""The folders are the layers, and imports point inward only (README: How the code is laid out).

Every ``import`` of every module under src/posledger, typing-only ones included, is checked
against the table below; the thin modules that keep old public paths may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAY_IMPORT = {
    "core": {"core"},
    "store": {"core", "store"},
    "ledger": {"core", "store", "ledger"},
    "venues": {"core", "venues"},
    "drivers": {"core", "ledger", "venues", "drivers"},
    "audit": {"core", "store", "ledger", "audit"},
    "ops": {"core", "store", "ledger", "venues", "drivers", "ops"},
    "web": {"core", "store", "ledger", "audit", "web"},
}
"""Each layer and the layers it may import (cli, testing, demo and the package root: any)."""
OLD_PUBLIC_PATHS = {
    "posledger.errors",
    "posledger.events",
    "posledger.sync",
    "posledger.aio",
    "posledger.readmodel",
    "posledger.venues.bybit_stream",
}


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted((SRC / "posledger").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append((name, path))
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name.startswith("posledger.")}


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_imports_point_inward(module: str, path: Path) -> None:
    own = layer(module)
    if own not in MAY_IMPORT or module in OLD_PUBLIC_PATHS:
        return
    outward = sorted(name for name in imported(path) if layer(name) not in MAY_IMPORT[own])
    assert outward == [], f"{module} ({own}) imports {outward}"


def test_the_table_knows_every_layer_folder() -> None:
    folders = {p.name for p in (SRC / "posledger").iterdir() if (p / "__init__.py").exists()}
    assert folders == set(MAY_IMPORT) | {"cli", "testing", "demo"}
