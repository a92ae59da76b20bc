"""The layer rules of docs/architecture.md, held by reading every import with ``ast``.

- ``ledger`` (the domain core) imports nothing of ``flows``, ``emulator``, Prefect, the
  google-genai SDK or an HTTP client;
- in ``flows``, only the Gemini edge modules import the SDK (``google.genai``) (and only the
  adapter, ``flows/gemini/_errors.py``, its error types: ``tests/test_sdk_errors_edge.py``);
- ``flows`` does not import ``emulator`` (the demo and ``doctor --compare-shapes`` run it as
  ``python -m emulator``: ``flows/_emulator_process.py``);
- ``emulator`` imports nothing of ``ledger`` or ``flows``, but for its test helper
  (``emulator/testing.py``), which shares the emulator's process start and readiness poll
  with the demo's (``flows/_emulator_process.py``) and imports nothing else of ``flows``;
- no module of the packages imports a ``testing`` module (those are for tests and benches).

Every import counts, at module level or inside a function, relative ones resolved.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The modules of flows that meet the SDK: clients are built (gateway), requests and configs
# are typed (batch I/O, direct calls, generation settings, doctor's live calls), SDK errors
# are described.
SDK_EDGE = frozenset(
    {
        "flows/gemini/gateway.py",
        "flows/gemini/_errors.py",
        "flows/channels/_batch_io.py",
        "flows/channels/direct.py",
        "flows/ops/doctor/_live.py",
        "flows/generation.py",  # renders a pipeline's settings as the SDK's typed config
        "flows/contents.py",  # renders a prompt's parts as the SDK's typed parts
        "flows/run/_uploads.py",  # uploads media parts with the SDK's typed upload config
        "flows/run/_prefix_cache.py",  # creates a context cache with the SDK's typed config
        "flows/channels/_embed.py",  # the direct channel's typed embed_content config
    }
)
LEDGER_REFUSES = ("flows", "emulator", "prefect", "google.genai", "httpx")


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, dotted name)`` of every module ``path`` imports; ``from a import b`` gives
    ``a.b`` (b may be a module or a name: a prefix test treats both the same)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_of(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _breaches(package: str, refused: tuple[str, ...], *, except_for=frozenset()) -> list[str]:
    return [
        f"{_rel(path)}:{line}: {name}"
        for path in _files(package)
        if _rel(path) not in except_for
        for line, name in imports_of(path)
        if any(_under(name, r) for r in refused)
    ]


def test_the_domain_core_imports_no_flow_emulator_prefect_sdk_or_http() -> None:
    """No module of ledger/ imports flows, emulator, prefect, google.genai or httpx."""
    assert len(_files("ledger")) > 20  # the walk found the package
    assert _breaches("ledger", LEDGER_REFUSES) == []


def test_only_the_gemini_edge_of_flows_imports_the_sdk() -> None:
    """In flows/, google.genai is imported only by the edge modules (SDK_EDGE)."""
    assert _breaches("flows", ("google.genai",), except_for=SDK_EDGE) == []


def test_the_lists_name_modules_that_still_need_them() -> None:
    """Every module SDK_EDGE names exists and imports the SDK (a stale entry would excuse
    the next module that should not)."""
    stale = [
        name
        for name in sorted(SDK_EDGE)
        if not any(_under(m, "google.genai") for _, m in imports_of(ROOT / name))
    ]
    assert stale == []


def test_flows_does_not_import_the_emulator() -> None:
    """No module of flows/ imports emulator: the demo and doctor run it as a subprocess."""
    assert _breaches("flows", ("emulator",)) == []


def test_the_emulator_imports_nothing_of_ledger_or_flows() -> None:
    """The emulator stands apart: it imports neither ledger nor flows (its test helper
    excepted, below)."""
    assert _breaches("emulator", ("ledger", "flows"), except_for=_EMULATOR_HELPER) == []


_EMULATOR_HELPER = frozenset({"emulator/testing.py"})


def test_the_emulators_test_helper_imports_only_the_emulator_process_of_flows() -> None:
    """emulator/testing.py reaches into flows for the process start it shares with the demo,
    and for nothing else (never ledger)."""
    helper = ROOT / "emulator" / "testing.py"
    reached = {name for _, name in imports_of(helper) if _under(name, "flows")}
    assert reached and all(_under(n, "flows._emulator_process") for n in reached), reached
    assert not [n for _, n in imports_of(helper) if _under(n, "ledger")]


def test_no_package_code_imports_a_testing_module() -> None:
    """ledger.testing, flows.testing and emulator.testing are for tests and benches: no other
    module of the three packages imports them."""
    testing = tuple(f"{p}.testing" for p in ("ledger", "flows", "emulator"))
    found = [
        breach
        for package in ("ledger", "flows", "emulator")
        for breach in _breaches(package, testing, except_for=frozenset({f"{package}/testing.py"}))
    ]
    assert found == []


def test_the_reader_resolves_relative_and_nested_imports() -> None:
    """imports_of sees an import inside a function and resolves ``from .x import y``."""
    package = ROOT / "flows" / "ops" / "doctor" / "__init__.py"
    names = [name for _, name in imports_of(package)]
    assert "flows._emulator_process.EmulatorProcess" in names  # inside emulator_shapes()
    relative = [name for _, name in imports_of(ROOT / "emulator" / "__main__.py")]
    assert "emulator.serve" in relative
