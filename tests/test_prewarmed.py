"""The pre-warmed CLI processes the crash tests run their ticks in (tests/prewarmed.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ledger import Ledger
from tests.prewarmed import run_cli

pytestmark = pytest.mark.system  # it starts and forks interpreters of its own


def test_each_forked_run_has_its_own_environment_directory_and_exit_code(tmp_path: Path) -> None:
    """Two runs from one pre-warmed process see their own LEDGER_DATABASE_URL and working
    directory, and report their own exit codes and output, as fresh interpreters would."""
    made = tmp_path / "made.db"
    Ledger(f"sqlite:///{made}", create=True).dispose()
    base = {k: v for k, v in os.environ.items() if k != "LEDGER_DATABASE_URL"}
    missing = run_cli(
        ["status"],
        env={**base, "LEDGER_DATABASE_URL": "sqlite:///missing.db"},
        cwd=tmp_path,
        timeout=120,
    )
    found = run_cli(
        ["status"],
        env={**base, "LEDGER_DATABASE_URL": "sqlite:///made.db"},  # in the run's own cwd
        cwd=tmp_path,
        timeout=120,
    )
    assert missing.returncode != 0 and "missing.db" in missing.stderr + missing.stdout
    assert not (tmp_path / "missing.db").exists(), "a ledger is never created by status"
    assert found.returncode == 0, found.stderr
    wrong = run_cli(["no-such-command"], env=base, cwd=tmp_path, timeout=120)
    assert wrong.returncode == 2 and "no-such-command" in wrong.stderr
