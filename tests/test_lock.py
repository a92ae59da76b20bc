"""requirements.lock agrees with pyproject.toml, and the environment is the locked set."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def _locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if not line or line[0] in " #":
            continue
        match = PIN.match(line)
        assert match, f"requirements.lock has an unpinned line: {line!r}"
        pins[canonicalize_name(match[1])] = match[2]
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = project["dependencies"] + project["optional-dependencies"]["test"]
    return [Requirement(r) for r in names]


def test_every_declared_dependency_is_locked_at_a_version_it_allows() -> None:
    """Each requirement in pyproject.toml is pinned in the lock, at a version it accepts."""
    pins = _locked()
    wrong = {}
    for req in _declared():
        version = pins.get(canonicalize_name(req.name))
        if version is None or not req.specifier.contains(version, prereleases=True):
            wrong[str(req)] = version
    assert not wrong, f"pyproject.toml and the lock disagree (run scripts/lock.sh): {wrong}"


def test_every_locked_package_has_hashes() -> None:
    """Every pin carries at least one hash, so pip installs exactly the locked files."""
    text = (ROOT / "requirements.lock").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.strip())
    unhashed = [b.split()[0] for b in blocks if "--hash=sha256:" not in b]
    assert not unhashed


def test_sqlalchemy_is_one_the_prefect_scheduler_works_with() -> None:
    """SQLAlchemy is locked below 2.1, where Prefect 3.8.8's scheduler creates no runs."""
    major, minor, *_ = (int(p) for p in _locked()["sqlalchemy"].split(".")[:2])
    assert (major, minor) == (2, 0)


def test_the_environment_is_the_locked_set() -> None:
    """Every locked package is installed at exactly its locked version."""
    drift = {}
    for name, version in _locked().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            drift[name] = (version, installed)
    assert not drift, f"installed packages differ from requirements.lock: {drift}"
