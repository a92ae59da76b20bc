"""The daily summary: day-over-day change, cost, poison inputs, artifacts and the event."""

from __future__ import annotations

import json
import time
from datetime import date, timedelta
from typing import Any

from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter
from typer.testing import CliRunner

from flows.cli import app
from flows.ops.summary import EVENT_NAME, RESOURCE_ID, summary
from flows.tick import tick
from ledger import Failure, NewJob, Verdict
from tests.direct import pipelines
from tests.direct.conftest import SPEC, scripted
from tests.ledgers import run_ledger

D1 = date(2026, 11, 19)
D2 = D1 + timedelta(days=1)
D3 = D1 + timedelta(days=2)


def _run_day(monkeypatch, day: date, items: str) -> None:
    monkeypatch.setenv(pipelines.ITEMS_ENV, items)
    tick(pipeline=SPEC, day=day)


def _classes(report: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    return {
        r["error_class"]: (r["parked"], r["previous"], r["delta"])
        for r in report["parked_by_class"]
    }


def test_day_over_day_delta_across_two_days(direct_env, monkeypatch, tmp_path):
    """Two days of real runs: the second summary reports the right change per class."""
    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps({"models": {"gemini-2.5-flash": {"prompt": 1.0, "candidates": 10.0}}})
    )
    monkeypatch.setenv("LEDGER_PRICES_FILE", str(prices))
    scripted(
        direct_env,
        {"x1": ["400"], "poison1": ["400"], "poison2": ["400"], "unsafe": ["safety"]},
    )
    _run_day(monkeypatch, D1, "x1,ok1")
    first = summary(day=D1, threshold=100)
    assert first["baseline_day"] is None and first["parked"]["delta"] == 1
    assert _classes(first) == {"permanent:400": (1, 0, 1)}

    _run_day(monkeypatch, D2, "poison1,poison2,unsafe,ok2")
    second = summary(day=D2, threshold=100)

    assert second["baseline_day"] == D1.isoformat()
    assert second["parked"] == {"total": 4, "previous": 1, "delta": 3}
    assert _classes(second) == {"permanent:400": (3, 1, 2), "safety": (1, 0, 1)}
    assert second["by_status"] == {"consumed": 2, "parked": 4}
    assert second["attempts"] == 6
    assert [(p["keys"], p["error_class"]) for p in second["poison_inputs"]] == [
        (2, "permanent:400")
    ]
    tokens = second["tokens"]
    thoughts = tokens["total"] - tokens["prompt"] - tokens["candidates"]
    expected = (tokens["prompt"] * 1.0 + (tokens["candidates"] + thoughts) * 10.0) / 1e6
    assert tokens["total"] > 0
    assert abs(second["cost"]["usd"] - round(expected, 6)) < 1e-9
    assert second["event_emitted"] is False

    with get_client(sync_client=True) as client:
        markdown = client.read_latest_artifacts()  # latest version of every key
    latest = {a.key: a for a in markdown if a.key}
    assert D2.isoformat() in str(latest["dead-letter-summary"].data)
    table = latest["dead-letter-summary-table"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert {"error_class": "safety", "parked": 1, "previous": 0, "change": 1} in rows


def test_dead_letter_cli_is_read_only_and_matches_the_flow(direct_env):
    """`gemini-ledger dead-letter --json` reports the flow's numbers and stores no snapshot."""
    ledger = run_ledger()
    _park(ledger, "a", 2)
    summary(day=D1, threshold=100)
    _park(ledger, "b", 3)

    result = CliRunner().invoke(app, ["dead-letter", "--json", "--day", D2.isoformat()])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)

    assert report["parked"] == {"total": 5, "previous": 2, "delta": 3}
    assert ledger.snapshot(D2.isoformat()) is None
    flow_report = summary(day=D2, threshold=100)
    assert flow_report["parked"] == report["parked"]
    assert ledger.snapshot(D2.isoformat()) == {"permanent:400": 5}
    table = CliRunner().invoke(app, ["dead-letter", "--day", D2.isoformat()])
    assert table.exit_code == 0 and "permanent:400" in table.stdout


def _park(ledger: Any, prefix: str, n: int) -> None:
    keys = [f"{prefix}:{i}:{time.time_ns()}" for i in range(n)]
    ledger.enroll([NewJob(k, {"text": k}) for k in keys], pipeline="p", channel="batch", model="m")
    for k in keys:
        ledger.park(k, Failure(Verdict.PERMANENT, "400", "bad"), from_status=["pending"])


def _events(since: Any, ledger_url: str) -> list[Any]:
    with get_client(sync_client=True) as client:
        page = client.read_events(
            filter=EventFilter(
                event=EventNameFilter(name=[EVENT_NAME]),
                occurred=EventOccurredFilter(since=since),
            ),
            limit=50,
        )
    return [
        e
        for e in page.events
        if e.payload.get("ledger") == ledger_url and e.resource.id == RESOURCE_ID
    ]


def test_event_fires_at_the_threshold_and_not_below(direct_env):
    """A rise of threshold-1 raises no event; a rise of exactly threshold raises one."""
    from prefect.types._datetime import now

    started = now("UTC") - timedelta(seconds=5)
    ledger = run_ledger()
    _park(ledger, "d1", 1)
    assert summary(day=D1, threshold=3)["threshold_crossed"] is False
    _park(ledger, "d2", 2)
    below = summary(day=D2, threshold=3)
    _park(ledger, "d3", 3)
    at = summary(day=D3, threshold=3)

    assert (below["parked"]["delta"], below["event_emitted"]) == (2, False)
    assert (at["parked"]["delta"], at["event_emitted"]) == (3, True)
    # Events reach the API asynchronously: poll for the one that must arrive. The one below
    # the threshold would have been sent before it on the same connection, so once this one
    # is stored the other cannot still be on its way.
    deadline = time.monotonic() + 30
    events = _events(started, ledger.url)
    while not events and time.monotonic() < deadline:
        time.sleep(0.25)
        events = _events(started, ledger.url)
    assert [(e.payload["day"], e.payload["delta"]) for e in events] == [(D3.isoformat(), 3)]
    assert str(events[0].id) == at["event_id"]
    assert events[0].payload["previous"] == 3 and events[0].payload["parked"] == 6


def test_a_first_night_with_many_parked_jobs_alerts(direct_env):
    """With no earlier snapshot the baseline is zero: a bad first night raises the event."""
    ledger = run_ledger()
    _park(ledger, "first", 4)
    report = summary(day=D1, threshold=3)
    assert report["baseline_day"] is None
    assert report["parked"] == {"total": 4, "previous": 0, "delta": 4}
    assert report["threshold_crossed"] is True and report["event_emitted"] is True


def test_the_morning_view_per_pipeline_in_plain_words(direct_env):
    """Per pipeline: delivered, parked by class with an example reason, in flight with its age."""
    from flows.ops.summary import render_markdown

    clock = {"now": 1_000_000.0}
    ledger = run_ledger()
    ledger.clock = lambda: clock["now"]
    jobs = [NewJob(f"mv:{i}", {"text": str(i)}) for i in range(5)]
    ledger.enroll(jobs, pipeline="pages", channel="batch", model="m")
    ledger.park(
        "mv:0", Failure(Verdict.PERMANENT, "400", "bad request: no text"), from_status=["pending"]
    )
    ledger.park(
        "mv:1", Failure(Verdict.PERMANENT, "400", "bad request: empty"), from_status=["pending"]
    )
    ledger.park(
        "mv:2", Failure(Verdict.PERMANENT, "safety", "blocked: SAFETY"), from_status=["pending"]
    )
    clock["now"] += 2 * 3600 + 5 * 60
    report = summary(day=D1, threshold=100)

    (pages,) = [p for p in report["pipelines"] if p["pipeline"] == "pages"]
    assert (pages["delivered"], pages["parked"], pages["in_flight"]) == (0, 3, 2)
    assert pages["oldest_in_flight"] == "2 h 05 min"
    assert [(c["error_class"], c["jobs"]) for c in pages["parked_by_class"]] == [
        ("permanent:400", 2),
        ("safety", 1),
    ]
    assert pages["parked_by_class"][0]["example"].startswith("bad request")
    markdown = render_markdown(report, 100)
    assert "# Morning report for" in markdown
    assert "| pages | 0 | 3 | 0 | 2 | 2 h 05 min |" in markdown
    assert "blocked: SAFETY" in markdown and "consumed" not in markdown
