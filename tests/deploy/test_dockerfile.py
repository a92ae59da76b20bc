"""The Docker image for a Docker work pool: built from the lock and the repository alone.

The fast tests read the Dockerfile and .dockerignore: the lock installed with its hashes
before the sources, the project with --no-deps, and everything the deployments' entrypoints
and the CLI need copied (and not ignored). Where a Docker daemon answers, the image is built
and its CLI run; on a machine with the docker client but no engine that test says so and
skips.
"""

from __future__ import annotations

import fnmatch
import shlex
import shutil
import subprocess
import uuid

import pytest
import yaml

from tests.deploy.prefect_server import ROOT

DOCKERFILE = ROOT / "Dockerfile"
IGNORE = ROOT / ".dockerignore"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), " ".join(rest.split())))
    return found


def _copied() -> list[str]:
    """The sources the COPY instructions take from the build context."""
    sources: list[str] = []
    for word, args in _instructions():
        if word == "COPY":
            *froms, _ = shlex.split(args)
            sources += [f.rstrip("/") for f in froms if not f.startswith("--")]
    return sources


def _ignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in IGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in patterns)


def test_the_image_installs_the_lock_with_hashes_before_the_sources() -> None:
    """python:3.11-slim; the lock installed at its hashes, then the project with --no-deps."""
    steps = _instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    runs = [(i, args) for i, (word, args) in enumerate(steps) if word == "RUN"]
    lock = [i for i, args in runs if "--require-hashes" in args and "-r requirements.lock" in args]
    project = [i for i, args in runs if "--no-deps" in args and " ." in args + " "]
    assert lock and "--no-deps" in steps[lock[0]][1], "the lock alone, nothing resolved afresh"
    first_source = min(
        i for i, (word, args) in enumerate(steps) if word == "COPY" and "ledger" in args
    )
    assert lock[0] < first_source < project[-1]


def test_the_image_holds_what_the_entrypoints_and_the_cli_need() -> None:
    """Every deployment's entrypoint file, the packages and the project files are copied, and
    .dockerignore leaves them in the context while keeping .venv and var/ out."""
    copied = _copied()
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    entry_files = {d["entrypoint"].split(":")[0] for d in config["deployments"]}
    needed = {"requirements.lock", "pyproject.toml", "README.md", "prefect.yaml"}
    needed |= {"ledger", "flows", "emulator"}  # pyproject's packages
    for path in sorted(needed | entry_files):
        assert any(path == c or path.startswith(c + "/") for c in copied), f"{path} not copied"
        assert (ROOT / path).exists(), path
        assert not _ignored(path), f"{path} is in .dockerignore"
    assert _ignored(".venv") and _ignored("var") and _ignored(".git")


@pytest.mark.system
def test_the_image_builds_from_the_repository_and_runs_its_cli() -> None:
    """`docker build` from the repository alone, then `gemini-ledger --help` in the image."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True).returncode:
        pytest.skip("no Docker daemon on this machine: the image cannot be built here")
    tag = f"gemini-ledger-test:{uuid.uuid4().hex[:8]}"
    built = subprocess.run(
        [docker, "build", "-t", tag, str(ROOT)], capture_output=True, text=True, timeout=1800
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    try:
        ran = subprocess.run(
            [docker, "run", "--rm", tag, "gemini-ledger", "--help"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert ran.returncode == 0, ran.stderr
        assert "secret" in ran.stdout
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True)
