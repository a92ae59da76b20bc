"""A ledger is created on purpose only: `gemini-ledger db upgrade` (and the demo and the
tests' fixtures) make one; a tick, the receiver and every other command refuse a missing one
in one line naming the URL and the fix, so a mistyped URL never sends the day again
(issue 25, item 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from flows.cli import app
from flows.settings import load_settings
from ledger import Ledger, LedgerMissing, ledger_exists

runner = CliRunner()
FIX = "`gemini-ledger db upgrade`"


def _one_line_error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_a_tick_on_a_mistyped_sqlite_url_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sqlite:////nonexistent/dir/ledger.db` on tick: one line naming it and the fix; no
    directory and no file appear, so nothing is enrolled or sent."""
    missing = tmp_path / "nonexistent" / "dir" / "ledger.db"
    monkeypatch.setenv("LEDGER_DATABASE_URL", f"sqlite:///{missing}")
    line = _one_line_error(["tick", "reviews"])
    assert str(missing) in line and FIX in line
    assert not (tmp_path / "nonexistent").exists()


def test_a_missing_file_in_an_existing_directory_is_refused_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tick, db current and the webhook receiver refuse a ledger file that is not there."""
    missing = tmp_path / "ledger.db"
    monkeypatch.setenv("LEDGER_DATABASE_URL", f"sqlite:///{missing}")
    monkeypatch.setenv("LEDGER_WEBHOOK_SECRET", "whsec_" + "A" * 32)
    for args in (["tick", "articles"], ["db", "current"], ["webhook", "serve", "--port", "1"]):
        line = _one_line_error(args)
        assert "no ledger at" in line and FIX in line, args
    assert not missing.exists()


@pytest.mark.postgres
def test_a_postgres_database_without_the_schema_is_refused(
    unmigrated_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PostgreSQL database with no schema is no ledger: tick refuses it (password hidden)
    and leaves it empty; opening it in a flow raises LedgerMissing."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", unmigrated_postgres_url)
    line = _one_line_error(["tick", "reviews"])
    shown = make_url(unmigrated_postgres_url).render_as_string(hide_password=True)
    assert shown.split("@")[-1] in line and FIX in line
    with pytest.raises(LedgerMissing):
        Ledger(unmigrated_postgres_url)
    assert not ledger_exists(unmigrated_postgres_url)


def test_a_flow_run_refuses_a_missing_ledger_before_touching_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployment's run (no CLI in front) stops at start_run with the same error."""
    from flows.tick import start_run

    missing = tmp_path / "typo" / "ledger.db"
    monkeypatch.setenv("LEDGER_DATABASE_URL", f"sqlite:///{missing}")
    with pytest.raises(LedgerMissing, match="db upgrade"):
        start_run("reviews", load_settings())
    assert not missing.parent.exists()


def test_db_upgrade_creates_the_ledger_and_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`db upgrade` is the way a ledger is made (directory included); afterwards it opens."""
    path = tmp_path / "new" / "ledger.db"
    monkeypatch.setenv("LEDGER_DATABASE_URL", f"sqlite:///{path}")
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert path.is_file()
    Ledger(f"sqlite:///{path}").dispose()
    assert runner.invoke(app, ["db", "current"]).exit_code == 0


@pytest.mark.postgres
def test_doctor_fails_a_missing_directory_and_an_empty_database_with_the_fix(
    tmp_path: Path, unmigrated_postgres_url: str
) -> None:
    """doctor's ledger check fails (with `gemini-ledger db upgrade`) and creates nothing."""
    from flows.ops.doctor import Outcome
    from flows.settings import Settings
    from flows.testing import check_ledger

    missing = tmp_path / "typo" / "ledger.db"
    (check,) = check_ledger(Settings.given(database_url=f"sqlite:///{missing}"))
    assert (check.outcome, check.fix) == (Outcome.FAIL, "gemini-ledger db upgrade")
    assert not missing.parent.exists()
    checks = check_ledger(Settings.given(database_url=unmigrated_postgres_url))
    failed = [c for c in checks if c.outcome is Outcome.FAIL]
    assert [c.fix for c in failed] == ["gemini-ledger db upgrade"]
    assert not ledger_exists(unmigrated_postgres_url)
