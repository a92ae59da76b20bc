"""Tests and benches use the packages' public names, or the ``testing`` modules made for them.

A private module (``ledger._db``, ``flows.channels._batch_io``, ``emulator._state``) or a
``_name`` is free to change with the code around it; a test that imports one pins the
layout instead of the behaviour. What a test needs beyond ``__all__`` is named in
``ledger.testing``, ``flows.testing`` and ``emulator.testing`` (each a small documented
surface). This reads every file of ``tests/`` and ``bench/`` with ``ast`` (nothing is
imported) and refuses:

- an import of a module with a ``_part`` in its path (``from flows._ledger import ...``,
  ``import ledger._db``, ``from flows import _webhook_app``);
- an import of a ``_name`` (``from flows.channels.batch import _send``);
- a name imported from a module that declares ``__all__`` without listing it there;
- ``module._name`` on a module imported from the packages (``webhooks._in_process``);
- a ``monkeypatch.setattr`` / ``patch`` target string naming a private module or name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ledger", "flows", "emulator")
SCANNED = ("tests", "bench")

# file (relative to the repository) -> why it may reach a private part. Keep it short: a
# name a test needs belongs in a ``testing`` module instead.
ALLOWED: dict[str, str] = {}


def _private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _declared_all(path: Path) -> frozenset[str] | None:
    """The names a module's literal ``__all__`` lists (None: it declares none)."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            value = node.value
            if isinstance(value, (ast.List, ast.Tuple)):
                return frozenset(
                    e.value
                    for e in value.elts
                    if isinstance(e, ast.Constant) and isinstance(e.value, str)
                )
    return None


def _ours(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


def _patch_target(node: ast.Call) -> str | None:
    """The target string of ``monkeypatch.setattr("a.b.c", ...)`` or ``patch("a.b.c")``."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in ("setattr", "patch", "delattr") or not node.args:
        return None
    first = node.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    return None


def problems_in(source: str, root: Path = ROOT) -> Iterator[str]:
    """Each private reach in one file's ``source``, as ``line: what``."""
    tree = ast.parse(source)
    modules: set[str] = set()  # local names bound to a module of the packages
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not _ours(alias.name):
                    continue
                if any(_private(p) for p in alias.name.split(".")):
                    yield f"{node.lineno}: import {alias.name}"
                modules.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not _ours(node.module):
                continue
            if any(_private(p) for p in node.module.split(".")):
                yield f"{node.lineno}: from {node.module} import ..."
                continue
            source_file = _module_file(root, node.module)
            declared = _declared_all(source_file) if source_file is not None else None
            for alias in node.names:
                if _private(alias.name):
                    yield f"{node.lineno}: from {node.module} import {alias.name}"
                elif _module_file(root, f"{node.module}.{alias.name}") is not None:
                    modules.add(alias.asname or alias.name)
                elif declared is not None and alias.name not in declared:
                    yield f"{node.lineno}: {node.module}.{alias.name} is not in its __all__"
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
        ):
            yield f"{node.lineno}: {node.value.id}.{node.attr}"
        elif isinstance(node, ast.Call):
            target = _patch_target(node)
            if target and _ours(target) and any(_private(p) for p in target.split(".")):
                yield f"{node.lineno}: patches {target!r}"


def _scanned_files() -> list[Path]:
    return sorted(p for d in SCANNED for p in (ROOT / d).rglob("*.py"))


def test_tests_and_benches_reach_no_private_module_or_name() -> None:
    """No file of tests/ or bench/ imports a private module or name of ledger, flows or
    emulator (their testing modules aside), nor patches one by its dotted path."""
    files = _scanned_files()
    assert len(files) > 100  # the walk found the suite, not an empty directory
    found = {
        str(path.relative_to(ROOT)): problems
        for path in files
        if (problems := list(problems_in(path.read_text(encoding="utf-8"))))
        and str(path.relative_to(ROOT)) not in ALLOWED
    }
    assert found == {}, "use the public names or ledger/flows/emulator.testing instead"


def test_the_allowlist_names_files_that_exist() -> None:
    """Each file the allowlist excuses exists (a stale entry would excuse a future file)."""
    assert [name for name in ALLOWED if not (ROOT / name).is_file()] == []


def test_the_check_sees_each_kind_of_private_reach() -> None:
    """The check flags a private module, a private name, a name outside __all__, a private
    attribute of an imported module and a dotted patch target, and passes public names."""
    source = "\n".join(
        [
            "import ledger._db",
            "from flows._ledger import open_ledger",
            "from flows import _webhook_app",
            "from flows.channels.batch import _send",
            "from flows.cli import handles_errors",
            "from flows import webhooks",
            "webhooks._in_process.acquire()",
            "monkeypatch.setattr('flows.run._halt.told_once', None)",
            "from ledger import Ledger, classify",
            "from flows.testing import open_ledger",
            "from emulator.testing import RunningEmulator",
        ]
    )
    lines = sorted(int(p.split(":", 1)[0]) for p in problems_in(source))
    assert lines == [1, 2, 3, 4, 5, 7, 8]
