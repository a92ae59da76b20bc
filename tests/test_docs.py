"""The docs stay inside the repository and the crash-point catalogue stays true to the code."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "docs" / "architecture.md"

# Written in pieces so that this file does not match itself.
_OUTSIDE = (
    ".." + "/shared",
    "shared" + "/DESIGN",
    "shared" + " design folder",
    "/work" + "/shared",
)
# Documents that lived beside the repository, never in it: a mention points outside unless
# the repository has a file of that name.
_OUTSIDE_FILES = ("DESIGN" + ".md", "FACTS" + ".md")
_SKIP_DIRS = {".git", ".venv", "var", "build", "__pycache__", ".mypy_cache", ".ruff_cache"}

_CRASH_CALL = re.compile(r"""crash_point\(\s*["']([^"']+)["']""")
# Delivery crash points are named in DeliveryPoints(...) and visited in flows/run/_deliver.py.
_DELIVERY_POINT = re.compile(
    r"""\b(?:before_effect|after_effect|before_consume|after_failure|point)\s*=\s*["']([^"']+)["']"""
)
_CATALOGUE_ROW = re.compile(r"^\| `([a-z_]+(?:\.[a-z_]+)+)` \|", re.MULTILINE)


def _repo_files() -> list[Path]:
    """Tracked and untracked (not ignored) files; a walk when git is not there."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
        return [ROOT / name for name in out.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        return [
            p
            for p in ROOT.rglob("*")
            if p.is_file()
            and not _SKIP_DIRS.intersection(p.relative_to(ROOT).parts)
            and not any(part.endswith(".egg-info") for part in p.relative_to(ROOT).parts)
        ]


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
        return None


def _crash_points_in_code() -> set[str]:
    names: set[str] = set()
    for package in ("flows", "ledger"):
        for path in (ROOT / package).rglob("*.py"):
            source = path.read_text(encoding="utf-8")
            names.update(_CRASH_CALL.findall(source))
            names.update(_DELIVERY_POINT.findall(source))
    return names


def _crash_points_catalogued() -> set[str]:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("\n## Crash points", 1)[1].split("\n## ", 1)[0]
    return set(_CATALOGUE_ROW.findall(section))


def test_nothing_in_the_repository_points_outside_it() -> None:
    """No file mentions the design folder beside the repository or its documents."""
    files = _repo_files()
    names = {p.name for p in files}
    needles = [*_OUTSIDE, *(f for f in _OUTSIDE_FILES if f not in names)]
    offenders = []
    for path in files:
        text = _text(path)
        if text is None:
            continue
        lowered = text.lower()
        for needle in needles:
            if needle.lower() in lowered:
                offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert len(files) > 50, "the file listing found almost nothing"
    assert offenders == []


def test_every_crash_point_in_the_code_is_catalogued() -> None:
    """Each crash point named in flows/ and ledger/ has a row in docs/architecture.md."""
    in_code = _crash_points_in_code()
    assert len(in_code) >= 20, f"found only {sorted(in_code)}: has the naming changed?"
    assert sorted(in_code - _crash_points_catalogued()) == []


def test_the_catalogue_names_only_crash_points_that_exist() -> None:
    """A crash point removed from the code is removed from the catalogue too."""
    assert sorted(_crash_points_catalogued() - _crash_points_in_code()) == []


def test_the_readme_links_to_the_docs() -> None:
    """The README sends readers to docs/, and every docs/ link in it resolves."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert "docs/architecture.md" in links
    assert [link for link in links if not (ROOT / link).is_file()] == []


def _pipeline_snippets() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Writing your own pipeline")
    section = readme[start : readme.index("\n## ", start + 1)]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def test_the_readmes_pipeline_snippets_build_their_pipelines() -> None:
    """Each Python snippet of the README's "Writing your own pipeline" runs as it stands and
    defines a Pipeline whose first item's prompt builds; among them a pipeline with
    generation settings, one whose prompts carry media parts, and an embedding pipeline."""
    from datetime import date

    from flows import GenerationSettings, Pipeline, Prompt, Run

    run = Run(day=date(2026, 12, 6))
    built: list[tuple[Pipeline[Any], Prompt]] = []
    for snippet in _pipeline_snippets():
        names: dict[str, object] = {}
        exec(compile(snippet, "README.md", "exec"), names)  # the reader's own code, as shown
        pipelines = [v for v in names.values() if isinstance(v, Pipeline)]
        assert len(pipelines) == 1, snippet[:200]
        p = pipelines[0]
        item = next(iter(p.items_of(run)))
        built.append((p, p.prompt_for(item, run)))
    assert any(p.generation != GenerationSettings() for p, _ in built)
    assert any(prompt.parts for _, prompt in built)
    assert any(p.is_embedding for p, _ in built)
