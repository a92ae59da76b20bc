"""The morning summary's trend (issue 23): per pipeline over the last 14 nights, delivered,
parked, cost and plan against actual, drawn as sparklines in the markdown artifact."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date, datetime, timedelta

import pytest
from prefect.client.orchestration import get_client

from flows.ops.summary import summary
from flows.settings import load_settings
from flows.testing import TREND_NIGHTS as NIGHTS
from flows.testing import build_trend, load_prices, night_bounds, sparkline, trend_lines
from ledger import Failure, FailureRow, Ledger, NewJob, Policy, ResultRow, Verdict

DAY = date(2026, 12, 6)
FIRST = DAY - timedelta(days=NIGHTS - 1)
POLICY = Policy(attempt_cap=4, unknown_cap=2)
# Per row: 100 prompt and 10 answer tokens at $1 and $10 per million: $0.0002.
ROW_USD = (100 * 1.0 + 10 * 10.0) / 1e6


class _Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def _at(night: date, hour: float) -> float:
    return datetime.combine(night, datetime.min.time(), tzinfo=UTC).timestamp() + hour * 3600


def _night(ledger: Ledger, clock: _Clock, pipeline: str, night: date, good: int, bad: int = 0):
    """On ``night``: ``good`` rows answered and delivered, ``bad`` answered rows parked."""
    clock.now = _at(night, 2)
    tag = f"{pipeline}:{night.isoformat()}"
    keys = [f"{tag}:{i}" for i in range(good + bad)]
    if not keys:
        return
    ledger.enroll(
        [NewJob(k, {"k": k}) for k in keys], pipeline=pipeline, channel="direct", model="m"
    )
    assert ledger.reserve(pipeline=pipeline, limit=len(keys), reservation=tag) == len(keys)
    for k in keys:
        ledger.bind_handle(k, reservation=tag, handle=f"direct:{tag}")
    ledger.apply_results(
        [ResultRow(k, '{"label":"x"}', 100, 10, 110) for k in keys[:good]], handle=f"direct:{tag}"
    )
    failure = Failure(Verdict.PERMANENT, "400", "bad request")
    ledger.apply_failures(
        [FailureRow(k, failure, 100, 10, 110) for k in keys[good:]],
        handle=f"direct:{tag}",
        policy=POLICY,
    )
    clock.now = _at(night, 3)
    ledger.consume(keys[:good])


@pytest.fixture
def nights(sqlite_url, monkeypatch, tmp_path) -> Ledger:
    """A ledger with 14 nights of pipeline ``p`` (night i delivers i rows; night 10 also
    parks 3) and one night of ``q``, plus rows before and after the window."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"models": {"m": {"prompt": 1.0, "candidates": 10.0}}}))
    monkeypatch.setenv("LEDGER_PRICES_FILE", str(prices))
    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    clock = _Clock()
    ledger = Ledger(sqlite_url, clock=clock)
    _night(ledger, clock, "p", FIRST - timedelta(days=1), 50)  # before the window
    for i in range(NIGHTS):
        _night(ledger, clock, "p", FIRST + timedelta(days=i), i, 3 if i == 10 else 0)
    _night(ledger, clock, "q", DAY, 1)
    _night(ledger, clock, "q", DAY + timedelta(days=1), 40)  # after the window
    return ledger


def test_the_trend_counts_each_night_from_the_ledger(nights: Ledger) -> None:
    """Delivered, parked and cost per pipeline and night over the 14 nights ending on the
    day; the plan column is None until plans are recorded."""
    trend = build_trend(nights, DAY, load_prices(load_settings().prices_file))

    assert (trend["first"], trend["last"], trend["nights"]) == (
        FIRST.isoformat(),
        DAY.isoformat(),
        14,
    )
    p, q = trend["pipelines"]
    assert (p["pipeline"], q["pipeline"]) == ("p", "q")
    assert [n["night"] for n in p["nights"]] == [
        (FIRST + timedelta(days=i)).isoformat() for i in range(NIGHTS)
    ]
    assert [n["delivered"] for n in p["nights"]] == list(range(NIGHTS))
    assert [n["parked"] for n in p["nights"]] == [0] * 10 + [3, 0, 0, 0]
    assert [n["delivered"] for n in q["nights"]] == [0] * 13 + [1]
    assert {n["planned_cost_usd"] for n in p["nights"]} == {None}


def test_the_summary_artifact_draws_the_trend_as_sparklines(nights: Ledger, prefect_api) -> None:
    """The summary flow's markdown artifact has one sparkline per measure and pipeline (the
    shape of 0..13 delivered rows, the one night that parked), its cost per night is the
    price table's, and the numbers are a table artifact of their own."""
    report = summary(day=DAY, threshold=100)

    costs = [n["cost_usd"] for n in report["trend"]["pipelines"][0]["nights"]]
    expected = [round((i + (3 if i == 10 else 0)) * ROW_USD, 6) for i in range(NIGHTS)]
    assert costs == pytest.approx(expected, abs=1e-9)
    with get_client(sync_client=True) as client:
        latest = {a.key: a for a in client.read_latest_artifacts() if a.key}
    markdown = str(latest["dead-letter-summary"].data)
    assert "## Trend, last 14 nights (2026-11-23 to 2026-12-06, UTC, oldest first)" in markdown
    assert "| p | delivered | `▁▂▃▃▄▄▅▅▆▆▇▇██` | 13 | 91 |" in markdown
    assert "|  | parked | `▁▁▁▁▁▁▁▁▁▁█▁▁▁` | 0 | 3 |" in markdown
    assert "|  | cost | `▁▂▃▃▄▄▅▅▆▆█▇██` | $0.0026 | $0.0188 |" in markdown
    assert "| q | delivered | `▁▁▁▁▁▁▁▁▁▁▁▁▁█` | 1 | 1 |" in markdown
    assert "|  | actual ÷ planned cost | no plan recorded | | |" in markdown
    table = latest["dead-letter-summary-trend"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert {
        "pipeline": "p",
        "night": "2026-12-03",
        "delivered": 10,
        "parked": 3,
        "cost_usd": pytest.approx(13 * ROW_USD),
        "planned_cost_usd": None,
    } in rows


def test_plan_against_actual_is_drawn_once_plans_exist(nights: Ledger) -> None:
    """With a planned cost per night, the plan row draws actual ÷ planned, says the last
    night's ratio and the whole window's (25 rows' cost over 37 planned); nights without a
    plan are dots."""

    def planned(ledger: Ledger, pipeline: str, night: date) -> float | None:
        # Night 12 cost twice less than planned, night 13 what was planned.
        return {DAY - timedelta(days=1): 24 * ROW_USD, DAY: 13 * ROW_USD}.get(night)

    trend = build_trend(nights, DAY, load_prices(load_settings().prices_file), planned=planned)
    lines = trend_lines(trend)
    plan = lines[lines.index(next(x for x in lines if x.startswith("| p |"))) + 3]
    assert plan == "|  | actual ÷ planned cost | `············▅█` | 1.00× | 0.68× |"


def test_a_sparkline_tells_nothing_from_a_little() -> None:
    """Zero is the lowest bar, any positive value at least the second, the largest the top,
    a missing value a dot."""
    assert sparkline([0, 1, 1000, None]) == "▁▂█·"
    assert sparkline([0, 0]) == "▁▁"
    assert sparkline([]) == ""


def test_nights_are_midnight_to_midnight_in_the_zone() -> None:
    """The bounds follow the zone's calendar: a night of a change of UTC offset is 25 h."""
    from zoneinfo import ZoneInfo

    bounds = night_bounds(date(2026, 10, 26), 2, ZoneInfo("Europe/Berlin"))
    assert [b - a for a, b in itertools.pairwise(bounds)] == [25 * 3600, 24 * 3600]
