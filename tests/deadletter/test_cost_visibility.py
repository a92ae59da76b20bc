"""Real usage in the morning view: thinking tokens and model versions of real runs, the row
of one key in `status KEY` / `dead-letter KEY`, and unpriced models named, never $0."""

from __future__ import annotations

import json
from datetime import date

from typer.testing import CliRunner

from flows.cli import app
from flows.ops.summary import render_markdown
from flows.tick import tick
from ledger import NewJob, ResultRow
from tests.direct import pipelines
from tests.direct.conftest import SPEC, key_of, scripted
from tests.ledgers import run_ledger

DAY = date(2026, 11, 21)
runner = CliRunner()


def test_a_direct_night_records_thoughts_and_the_model_version_per_row(direct_env, monkeypatch):
    """Each answered row keeps its thinking tokens and the model version that answered;
    `status KEY` and `dead-letter KEY` show them; the summary counts the thinking."""
    scripted(direct_env, {"bad": ["400"]}, model_versions={"gemini-2.5-flash": "gemini-2.5-x"})
    monkeypatch.setenv(pipelines.ITEMS_ENV, "one,two,bad")
    tick(pipeline=SPEC, day=DAY)
    ledger = run_ledger()
    one = ledger.get(key_of("one"))
    assert one.status == "consumed"
    assert (one.model_version, one.thoughts_tokens) == ("gemini-2.5-x", 8)
    assert one.response_id and one.response_id.startswith("emu-")

    shown = runner.invoke(app, ["status", key_of("one")])
    assert shown.exit_code == 0, shown.output
    assert "model version gemini-2.5-x" in shown.stdout
    assert "thinking 8" in shown.stdout
    parked = runner.invoke(app, ["dead-letter", key_of("bad"), "--json"])
    assert parked.exit_code == 0, parked.output
    row = json.loads(parked.stdout)
    assert (row["status"], row["error_class"], row["model"]) == (
        "parked",
        "permanent:400",
        "gemini-2.5-flash",
    )
    assert row["model_version"] is None  # no answer came back
    missing = runner.invoke(app, ["status", "no-such-key"])
    assert missing.exit_code == 1 and "no job with key" in missing.output

    report = json.loads(runner.invoke(app, ["dead-letter", "--json"]).stdout)
    assert report["tokens"]["thoughts"] == 16
    assert report["cost"]["unpriced"] is None and report["cost"]["usd"] > 0


def test_an_unpriced_model_is_named_with_its_rows_in_the_morning_view(direct_env):
    """Rows of a model the price table lacks are named in the morning view and the CLI, with
    how many rows: never a silent $0."""
    ledger = run_ledger()
    keys = ["u:1", "u:2"]
    ledger.enroll([NewJob(k, {}) for k in keys], pipeline="mine", channel="direct", model="my-m")
    assert ledger.reserve(pipeline="mine", limit=2, reservation="r") == 2
    for k in keys:
        ledger.bind_handle(k, reservation="r", handle=f"direct:{k}")
        ledger.record_result(ResultRow(k, "{}", 100, 10, 110), handle=f"direct:{k}")

    result = runner.invoke(app, ["dead-letter"])
    assert result.exit_code == 0, result.output
    assert "unpriced: model my-m, 2 rows" in result.stdout
    report = json.loads(runner.invoke(app, ["dead-letter", "--json"]).stdout)
    [mine] = [p for p in report["pipelines"] if p["pipeline"] == "mine"]
    assert mine["unpriced"].startswith("unpriced: model my-m, 2 rows")
    markdown = render_markdown(report)
    assert "**mine**: unpriced: model my-m, 2 rows" in markdown
    assert report["cost"]["unpriced_rows"] == {"my-m": 2}
