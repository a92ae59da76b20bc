"""What a user meets on day one: --version, an emulator that says where it listens, an
automation installer that refuses the placeholder, a README that lists every command."""

from __future__ import annotations

import re
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer.main
from typer.testing import CliRunner

from flows.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_version_prints_the_installed_version():
    """`gemini-ledger --version` prints the package version and exits 0."""
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"gemini-ledger {version('gemini-ledger')}"


def test_the_emulator_says_where_it_listens_and_plays_the_readme_scenario():
    """Started without --scenario it plays the scenario the README names, and says so."""
    readme = (ROOT / "README.md").read_text()
    named = re.search(r"emulator --port \d+ \[--scenario (\w+)\]", readme)
    assert named is not None
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        # A bound on a hang, not a synchronisation: the line comes once the socket is bound.
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert re.search(r"listening on http://127\.0\.0\.1:\d+", line), line
    assert f"scenario {named.group(1)!r}" in line, line


def _paths(group: Any, prefix: tuple[str, ...] = ()) -> list[str]:
    found: list[str] = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found.extend(_paths(command, (*prefix, name)))
        else:
            found.append(" ".join((*prefix, name)))
    return found


def test_the_readme_command_table_lists_every_command():
    """Each command the CLI has appears in the README's command table."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| command | what it does |") :]
    table = table[: table.index("\n\n")]
    listed = " ".join(re.findall(r"`([^`]*)`", table))
    missing = [
        path
        for path in _paths(typer.main.get_command(app))
        if not re.search(rf"(gemini-ledger |/ |^| ){re.escape(path)}\b", listed)
    ]
    assert missing == []
    assert "--version" in listed
