"""The morning summary shows a setup halt that has lasted across ticks, read from the Prefect
API's events; without a Prefect API it says the halts could not be read and still reports."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime
from typing import Any

from prefect.settings import PREFECT_API_URL, temporary_settings
from typer.testing import CliRunner

from flows.cli import app
from flows.ops.summary import build_summary, render_markdown
from flows.testing import load_prices, read_halts
from ledger import Ledger
from tests.halt.conftest import CHANNELS, DAY


def _halts_of(report: dict[str, Any], pipeline: str, channel: str) -> dict[str, Any] | None:
    found = [
        h
        for h in report["halts"]["channels"]
        if h["pipeline"] == pipeline and h["channel"] == channel
    ]
    return found[0] if found else None


def _summary_once_events_arrive(ledger: Ledger, ticks: int, since: datetime) -> dict[str, Any]:
    """The report once the Prefect API has ingested ``ticks`` halted events since ``since``
    (the server is shared with other tests; ingestion is asynchronous: polled, bounded)."""
    deadline = time.monotonic() + 60
    while True:
        report = build_summary(ledger, DAY, load_prices(None), halts=read_halts(since))
        halt = _halts_of(report, "direct-test", "direct")
        if (halt and halt["ticks"] >= ticks) or time.monotonic() > deadline:
            return report
        time.sleep(0.5)


def test_two_halted_ticks_show_in_the_summary_with_the_fix(world, monkeypatch):
    """Two direct ticks halted by a missing key: the summary says "halted 2 ticks since ...",
    the cause and the fix, and no later success; after a good tick it says one succeeded."""
    ch = CHANNELS["direct"]
    ledger = Ledger(world["url"])
    since = datetime.now(UTC)
    with monkeypatch.context() as broken:
        broken.delenv("GEMINI_API_KEY")
        for _ in range(2):
            assert ch.tick(return_state=True).is_failed()
    report = _summary_once_events_arrive(ledger, 2, since)
    halt = _halts_of(report, "direct-test", "direct")
    assert halt is not None, report["halts"]
    assert halt["ticks"] == 2 and halt["kind"] == "no_key"
    assert halt["recovered"] is False
    markdown = render_markdown(report)
    assert f"direct-test direct: halted 2 ticks since {halt['since']}" in markdown
    assert "no tick has succeeded since" in markdown
    assert "Fix: gemini-ledger secret set api-key, or set GEMINI_API_KEY" in markdown
    assert report["parked"]["total"] == 0

    cli = CliRunner().invoke(app, ["dead-letter", "--day", DAY.isoformat()])
    assert cli.exit_code == 0, cli.output
    # The command reads the last 24 h of a server other tests share: at least these two.
    assert "direct-test direct: halted" in " ".join(cli.output.split())

    ch.tick()
    after = _halts_of(
        build_summary(ledger, DAY, load_prices(None), halts=read_halts(since)),
        "direct-test",
        "direct",
    )
    assert after is not None and after["recovered"] is True


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_prefect_api_the_summary_says_halts_could_not_be_read(tmp_path):
    """With the Prefect API unreachable, or none configured, the summary still reports and
    says the setup halts could not be read."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", create=True)
    for url in (f"http://127.0.0.1:{_closed_port()}/api", ""):
        with temporary_settings(updates={PREFECT_API_URL: url}):
            report = build_summary(ledger, DAY, load_prices(None))
        assert report["halts"]["readable"] is False
        assert report["halts"]["channels"] == []
        assert "could not be read" in render_markdown(report)
        assert report["parked"]["total"] == 0
