"""The layers of ``flows/``: each group imports only the groups below it (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FLOWS = Path(__file__).resolve().parents[1] / "flows"

# Lowest first. A module may import its own group and those before it, never one after.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "shared",
        (
            "flows",
            "flows.pipeline",
            "flows.generation",
            "flows.contents",
            "flows.deadline",
            "flows.embedding",
            "flows.prefix",
            "flows.registry",
            "flows.settings",
            "flows.errors",
            "flows.identity",
            "flows.crash",
            "flows._ledger",
            "flows._prefect_api",
            "flows._emulator_process",
            "flows.examples",
        ),
    ),
    ("gemini", ("flows.gemini",)),
    ("run", ("flows.run",)),
    ("channels", ("flows.channels",)),
    ("flows", ("flows.tick", "flows.reconcile", "flows.webhooks", "flows.ops")),
    ("entry", ("flows.cli", "flows.demo", "flows.testing")),
]


def layer_of(module: str) -> int:
    """The index of the layer a dotted module name belongs to (the longest prefix wins)."""
    best, depth = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = i, len(prefix)
    return best


def module_name(path: Path) -> str:
    parts = path.relative_to(FLOWS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def flows_imports(path: Path) -> list[tuple[int, str]]:
    """Every ``flows...`` module the file imports (top level or inside a function)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            found += [(node.lineno, n) for n in [node.module, *names] if n.startswith("flows")]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("flows")]
    return found


def test_every_flows_module_has_a_layer() -> None:
    """No module of flows/ is left out of the layers (a new sub-package must be placed)."""
    missing = [module_name(p) for p in FLOWS.rglob("*.py") if layer_of(module_name(p)) < 0]
    assert not missing


@pytest.mark.parametrize("path", sorted(FLOWS.rglob("*.py")), ids=lambda p: module_name(p))
def test_a_module_imports_no_layer_above_its_own(path: Path) -> None:
    """A flows module imports only its own layer and the layers below it."""
    mine = layer_of(module_name(path))
    above = [
        f"line {line}: {target} ({LAYERS[layer_of(target)][0]})"
        for line, target in flows_imports(path)
        if layer_of(target) > mine
    ]
    assert not above, f"{module_name(path)} ({LAYERS[mine][0]}) imports {above}"
