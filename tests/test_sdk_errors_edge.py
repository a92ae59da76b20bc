"""The SDK's error types are read in one place: the edge adapter, ``flows/gemini/_errors.py``.

Every other module asks the adapter (``describe``, ``classify``, ``setup_fault``, ``http_code``,
``is_not_found``, ``certainly_refused``), so an SDK that renames or moves an error class is
met in one file. Requests' types (``google.genai.types``) are not error types: any module may
build requests with them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ADAPTER = "flows/gemini/_errors.py"
# The project's code; tests build the SDK's errors on purpose, to feed the adapter.
PACKAGES = ("flows", "ledger", "emulator", "bench", "scripts")


def _is_error_module(dotted: str) -> bool:
    """A google-genai module of error types: ``google.genai.errors``, the interactions
    client's ``google.genai._gaos.lib.compat_errors``, ``google.genai._gaos.errors...``."""
    parts = dotted.split(".")
    return parts[:2] == ["google", "genai"] and any("error" in part for part in parts[2:])


def sdk_error_uses(source: str) -> list[str]:
    """Where ``source`` reaches an SDK error module: imports, ``importlib.import_module``
    of one by name, or an attribute path such as ``genai.errors``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if _is_error_module(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [
                f"{node.module}.{a.name}"
                for a in node.names
                if _is_error_module(node.module) or _is_error_module(f"{node.module}.{a.name}")
            ]
        elif isinstance(node, ast.Call) and node.args:
            first = node.args[0]
            if (
                isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and _is_error_module(first.value)
            ):
                found.append(first.value)
        elif isinstance(node, ast.Attribute) and "error" in node.attr:
            base = node.value
            if (isinstance(base, ast.Name) and base.id == "genai") or (
                isinstance(base, ast.Attribute) and base.attr in ("genai", "_gaos", "lib")
            ):
                found.append(f"{ast.unparse(base)}.{node.attr}")
    return found


def _modules() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            uses = sdk_error_uses(path.read_text(encoding="utf-8"))
            if uses:
                out[path.relative_to(ROOT).as_posix()] = uses
    return out


def test_only_the_edge_adapter_reads_the_sdk_error_types() -> None:
    """No module of the project but flows/gemini/_errors.py imports google-genai's errors."""
    modules = _modules()
    assert ADAPTER in modules, "the scan no longer sees the adapter's own imports"
    others = {path: uses for path, uses in modules.items() if path != ADAPTER}
    assert others == {}, f"ask flows/gemini/_errors.py instead: {others}"


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from google.genai import errors", ["google.genai.errors"]),
        ("from google.genai import errors as e", ["google.genai.errors"]),
        ("import google.genai.errors", ["google.genai.errors"]),
        ("from google.genai.errors import APIError", ["google.genai.errors.APIError"]),
        (
            "from google.genai._gaos.lib import compat_errors",
            ["google.genai._gaos.lib.compat_errors"],
        ),
        (
            "from google.genai._gaos.errors.genaierror import GenAiError",
            ["google.genai._gaos.errors.genaierror.GenAiError"],
        ),
        ("importlib.import_module('google.genai.errors')", ["google.genai.errors"]),
        ("from google import genai\nx = genai.errors.APIError", ["genai.errors"]),
        ("def f():\n    from google.genai import errors\n", ["google.genai.errors"]),
        ("from google.genai import types", []),
        ("from google import genai", []),
        ("from flows.gemini._errors import is_not_found", []),
    ],
)
def test_the_scan_tells_error_imports_from_the_rest(source: str, found: list[str]) -> None:
    """The scan finds every way a module reaches an SDK error type, and only those."""
    assert sdk_error_uses(source) == found
