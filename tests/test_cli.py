"""The command line: every command has help; errors are one clear line and exit code 1."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from flows.cli import app
from ledger import Ledger, NewJob

runner = CliRunner()


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        found.append(path)
        if hasattr(command, "commands"):
            found.extend(_commands(command, path))
    return found


COMMANDS = _commands(typer.main.get_command(app))


def test_the_cli_has_the_expected_commands():
    """The documented commands exist."""
    names = {" ".join(c) for c in COMMANDS}
    assert {"db", "db upgrade", "status", "emulator", "tick", "pipelines"} <= names


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_every_command_has_help(command):
    """`--help` works for every command and says something."""
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) > 3


def test_db_upgrade_and_status_json(unmigrated_sqlite_url, monkeypatch):
    """`db upgrade` creates the ledger and `status --json` reports its counts."""
    sqlite_url = unmigrated_sqlite_url
    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    Ledger(sqlite_url).enroll(
        [NewJob("a", {"t": 1}), NewJob("b", {"t": 2})], pipeline="p", channel="batch", model="m"
    )
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["by_status"] == {"pending": 2}
    assert data["attempts"] == 0


def test_bad_database_url_is_one_clear_error(monkeypatch):
    """A malformed LEDGER_DATABASE_URL gives an error line and exit code 1, no traceback."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", "not a url")
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 1
    assert "error:" in result.output and "Traceback" not in result.output


def test_unknown_pipeline_is_one_clear_error(sqlite_url, monkeypatch):
    """Ticking a pipeline that does not exist names the known ones."""
    # A ledger of its own: an unknown name is also looked up among the ledger's recorded
    # pipelines, so without one the answer would depend on what an earlier test left behind.
    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    Ledger(sqlite_url, create=True).dispose()
    result = runner.invoke(app, ["tick", "no-such-pipeline"])
    assert result.exit_code == 1
    assert "unknown pipeline" in result.output and "reviews" in result.output


def test_status_shows_rows_in_flight_and_the_oldest_age(sqlite_url, monkeypatch):
    """`status --json` gives, per non-final state, the rows and the oldest one's age."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    hour_ago = Ledger(sqlite_url, clock=lambda: time.time() - 3600)
    hour_ago.enroll(
        [NewJob("old", {"t": 1}), NewJob("older", {"t": 2})],
        pipeline="p",
        channel="batch",
        model="m",
    )
    hour_ago.reserve(pipeline="p", limit=1, reservation="r1", batch_model="m")
    hour_ago.bind_batch("r1", name="batches/b1")
    Ledger(sqlite_url).enroll([NewJob("new", {"t": 3})], pipeline="p", channel="batch", model="m")
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    in_flight = json.loads(result.stdout)["in_flight"]
    assert set(in_flight) == {"pending", "submitted"}
    assert in_flight["pending"]["rows"] == 2 and in_flight["submitted"]["rows"] == 1
    assert in_flight["pending"]["oldest_age_s"] >= 3600
    assert in_flight["submitted"]["oldest_age_s"] >= 3600
    table = runner.invoke(app, ["status"])
    assert table.exit_code == 0 and "oldest in this state" in table.output


def test_pipelines_lists_the_recorded_pipelines_with_their_jobs(sqlite_url, monkeypatch):
    """`pipelines` shows each recorded pipeline's module:attr, channel, model, schema
    revision and jobs, then the shipped examples not run yet."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    ledger = Ledger(sqlite_url)
    for fingerprint in ("s1", "s2"):
        ledger.record_pipeline(
            "translate",
            spec="translate:pipeline",
            channel="direct",
            model="gemini-2.5-pro",
            schema_fingerprint=fingerprint,
        )
    ledger.enroll(
        [NewJob(f"t{i}", {"i": i}) for i in range(3)],
        pipeline="translate",
        channel="direct",
        model="gemini-2.5-pro",
    )
    ledger.reserve(pipeline="translate", limit=1, reservation="r1")
    result = runner.invoke(app, ["pipelines", "--json"])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    assert [
        (r["name"], r["spec"], r["channel"], r["model"], r["revision"], r["jobs"])
        for r in listing["recorded"]
    ] == [("translate", "translate:pipeline", "direct", "gemini-2.5-pro", 2, 3)]
    assert listing["recorded"][0]["by_status"] == {"pending": 2, "reserving": 1}
    assert [e["name"] for e in listing["examples"]] == [
        "articles",
        "receipts",
        "review-embeddings",
        "reviews",
    ]
    table = runner.invoke(app, ["pipelines"], terminal_width=200)
    assert table.exit_code == 0, table.output
    assert "translate: translate:pipeline, direct channel" in table.output
    assert "schema revision 2; 3 jobs" in table.output and "shipped examples" in table.output
    ledger.dispose()


def test_pipelines_without_a_ledger_creates_none(tmp_path, monkeypatch):
    """`pipelines` outside a project lists the examples, says no ledger is there, and
    creates no ledger file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)
    result = runner.invoke(app, ["pipelines"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "no ledger at var/ledger.db" in result.output
    assert "reviews: batch channel" in result.output
    assert not (tmp_path / "var").exists()


def test_status_says_how_often_batch_submission_was_refused(sqlite_url, monkeypatch):
    """`status` names a pipeline whose batch submissions the API refused since its last job,
    how many times, since when and the last reason; `--json` carries the same."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    ledger = Ledger(sqlite_url)
    ledger.enroll([NewJob("k", {"t": 1})], pipeline="p", channel="batch", model="m")
    for token in ("r1", "r2"):
        ledger.reserve(pipeline="p", limit=1, reservation=token, batch_model="m")
        ledger.release(token, refused="exhausted:503: The model is overloaded.")
    table = runner.invoke(app, ["status"])
    assert table.exit_code == 0, table.output
    assert "p: batch submission refused 2 times since" in table.output
    assert "The model is overloaded." in table.output
    data = json.loads(runner.invoke(app, ["status", "--json"]).stdout)
    assert data["batch_submission_refused"]["p"]["times"] == 2


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--scenario", "bogus"], "no built-in scenario or file named 'bogus'"),
        (["--host", "192.0.2.1"], "cannot listen on 192.0.2.1:"),
    ],
    ids=["bad-scenario", "address-not-ours"],
)
def test_emulator_command_mistakes_are_one_line_and_exit_1(args: list[str], said: str) -> None:
    """`gemini-ledger emulator` (which becomes `python -m emulator`) answers a bad scenario or
    an address it cannot listen on with one line and exit code 1, no traceback."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "emulator", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and said in lines[0], lines


@pytest.mark.parametrize("made", [False, True], ids=["no-file", "empty-file"])
def test_unknown_pipeline_without_a_ledger_is_the_unknown_pipeline_error(
    tmp_path, monkeypatch, made
):
    """With no ledger yet (no file, or an empty file no `db upgrade` has made a ledger of),
    an unknown name is reported as unknown (no recorded pipelines), not as a missing ledger."""
    path = tmp_path / "ledger.db"
    if made:
        path.touch()
    monkeypatch.setenv("LEDGER_DATABASE_URL", f"sqlite:///{path}")
    result = runner.invoke(app, ["tick", "no-such-pipeline"])
    assert result.exit_code == 1
    assert "unknown pipeline" in result.output and "reviews" in result.output, result.output
    assert path.exists() is made  # looking a name up creates no ledger
