"""The spending cap and the plan, against the emulator through the real SDK, real Prefect
runs and real ledgers: a night over its budget stops within one row's estimated cost of its
cap and the held rows go out the next night (with the budget event emitted once); ``plan``
on a fresh pipeline and after a night (planned against actual); replay respects the cap."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flows.ops.plan import plan_night, priced_nights
from flows.ops.summary import build_summary, pipeline_standing, plan_lines
from flows.settings import load_settings
from flows.testing import BUDGET_EVENT, HaltHistory, build_trend, load_prices, resource_id
from ledger import Channel, Status
from tests.budget import pipelines
from tests.budget.pipelines import ITEMS, key, names, spec
from tests.ledgers import run_ledger

# Nights of the last days: the morning summary looks back a week from today.
D0, D1, D2 = (datetime.now(UTC).date() - timedelta(days=n) for n in (3, 2, 1))
DIRECT = spec(Channel.DIRECT)


@pytest.fixture
def night_env(monkeypatch, ledger_url, emulator, prefect_api) -> Any:
    """A ledger (SQLite or PostgreSQL), the emulator and a Prefect API; no price file."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", ledger_url)
    monkeypatch.setenv("GEMINI_LEDGER_DIRECT_BACKOFF_S", "0.01")
    monkeypatch.setenv("GEMINI_LEDGER_DIRECT_JITTER", "0")
    monkeypatch.delenv("LEDGER_PRICES_FILE", raising=False)
    monkeypatch.delenv("GEMINI_LEDGER_DAILY_BUDGET_USD", raising=False)
    ITEMS.clear()
    pipelines.DELIVERED.clear()
    return emulator


def _events(since: datetime, wanted: str, *, at_least: int = 1) -> list[Any]:
    """The budget events of one resource since ``since``, polled with a deadline (the
    server records events a moment after they are emitted)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    deadline = time.monotonic() + 30
    found: list[Any] = []
    while len(found) < at_least and time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            page = client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(name=[BUDGET_EVENT]),
                    occurred=EventOccurredFilter(since=since),
                ),
                limit=50,
            )
        found = [e for e in page.events if e.resource.id == wanted]
    return found


def test_a_night_over_its_budget_stops_at_its_cap_and_the_rest_go_out_the_next_night(
    night_env: Any,
) -> None:
    """With a cap of 4.5 rows' estimated cost, the night reserves 4 rows (planned cost within
    one row of the cap, actual cost no more than one row past it), leaves 6 pending as held
    by the budget (none parked), emits the budget event once; the next night, with room,
    sends the held rows and every key is delivered once."""
    from flows.tick import tick

    since = datetime.now(UTC)
    ITEMS[D0.isoformat()] = names("a", 3)  # a first night: the pipeline's own history
    tick(pipeline=DIRECT, day=D0)
    ITEMS[D1.isoformat()] = names("b", 10)
    per_row = plan_night(load_settings(), DIRECT, D1)["cost"]["channels"]["direct"]["per_row"]
    cap = per_row * 4.5

    report = tick(pipeline=DIRECT, day=D1, budget_usd=cap)
    ledger = run_ledger()
    assert (report.submitted, report.submit.held_by_budget) == (4, 6)
    assert "6 held by the budget" in report.summary()
    (night,) = [n for n in ledger.plans_for("budget-direct", D1.isoformat()) if n.day == str(D1)]
    assert night.planned is not None
    assert night.planned.rows == 4 and night.planned.held == 6
    assert night.planned.usd <= cap < night.planned.usd + night.planned.usd_per_row
    prices = load_prices(None)
    (priced,) = [n for n in priced_nights(ledger, "budget-direct", D1, prices) if n.day == str(D1)]
    assert priced.actual_rows == 4 and priced.actual_usd <= cap + night.planned.usd_per_row
    d1_keys = [key(Channel.DIRECT, i) for i in names("b", 10)]
    statuses = [ledger.get(k).status for k in d1_keys]
    assert statuses.count(Status.PENDING) == 6 and statuses.count(Status.CONSUMED) == 4
    # The morning summary's trend reads the same plan (its actual ÷ planned row).
    trend = build_trend(ledger, D1 + timedelta(days=2), prices, nights=3)
    (mine,) = [t for t in trend["pipelines"] if t["pipeline"] == "budget-direct"]
    planned = {n["night"]: n["planned_cost_usd"] for n in mine["nights"]}
    assert planned[D1.isoformat()] == night.planned.usd
    morning = pipeline_standing(ledger, "budget-direct", prices)
    assert morning is not None and (morning["held_by_budget"], morning["parked"]) == (6, 0)
    assert morning["held_by_budget_night"] == D1.isoformat()

    # A second tick of the same night: still no room, nothing more sent, no second event.
    again = tick(pipeline=DIRECT, day=D1, budget_usd=cap)
    assert (again.submitted, again.submit.held_by_budget) == (0, 6)
    (event,) = _events(since, resource_id("budget-direct", "direct"))
    assert event.payload["day"] == D1.isoformat() and event.payload["held"] == 6
    assert event.payload["cap"] == "pipeline" and event.payload["cap_usd"] == round(cap, 6)

    nxt = tick(pipeline=DIRECT, day=D2, budget_usd=cap * 10)
    assert (nxt.submitted, nxt.submit.held_by_budget) == (6, 0)
    assert {ledger.get(k).status for k in d1_keys} == {Status.CONSUMED}
    assert sorted(pipelines.DELIVERED) == sorted(
        [key(Channel.DIRECT, i) for i in names("a", 3)] + d1_keys
    )
    assert ledger.counts(pipeline="budget-direct").attempts == 13  # each key sent once


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
def test_plan_on_a_fresh_pipeline_then_planned_against_actual_after_a_night(
    night_env: Any,
) -> None:
    """On a fresh pipeline, plan counts the due prompts with count_tokens (or offline when
    told), takes the output budget for the answer, says what a cap would hold, and writes
    nothing; after a night it shows planned against actual and estimates from history."""
    from flows.tick import tick

    settings = load_settings()
    ITEMS[D0.isoformat()] = names("c", 5)
    fresh = plan_night(settings, DIRECT, D0)
    assert fresh["due"] == {"rows": 5, "new": 5, "pending": 0, "retrying": 0, "replays": 0}
    est = fresh["estimate"]
    assert est["prompt_source"] == "count_tokens on 5 prompts"
    assert (est["answer_tokens_per_row"], est["output_source"]) == (
        256.0,
        "output budget: max_output_tokens",
    )
    assert fresh["history"] == [] and fresh["budget"]["note"] == "no budget set"
    costs = fresh["cost"]["channels"]
    assert costs["batch"]["usd"] == pytest.approx(costs["direct"]["usd"] / 2)
    offline = plan_night(settings, DIRECT, D0, count=False)
    assert offline["estimate"]["prompt_source"].startswith("local estimate")
    per_row = costs["direct"]["per_row"]
    capped = plan_night(settings, DIRECT, D0, budget_usd=per_row * 2.5)["budget"]
    assert (capped["rows_that_fit"], capped["held"], capped["fits"]) == (2, 3, False)
    deadline = datetime.now(UTC) + timedelta(hours=1)
    late = plan_night(settings, DIRECT, D0, deadline=deadline)["deadline"]
    assert late is not None and late["seconds_left"] > 3500
    ledger = run_ledger()
    assert ledger.counts(pipeline="budget-direct").total == 0  # the plan wrote nothing
    assert ledger.plans_for("budget-direct", "2000-01-01") == []

    tick(pipeline=DIRECT, day=D0)
    after = plan_night(settings, DIRECT, D1)
    (night,) = after["history"]
    assert night["day"] == D0.isoformat()
    assert night["planned"]["rows"] == 5 and night["actual"]["rows"] == 5
    assert night["actual"]["usd"] > 0 and night["planned"]["usd"] > night["actual"]["usd"]
    assert night["off_by"] is not None and night["off_by"] < 0  # the output budget is a bound
    assert after["estimate"]["output_source"] == "history: mean of 5 rows over 1 night"
    # The morning view of that night says planned against actual: rows, tokens and cost.
    morning = build_summary(ledger, D0, load_prices(None), halts=HaltHistory([]))
    (line,) = plan_lines(morning)
    assert line.startswith(f"budget-direct: the night of {D0.isoformat()} planned 5 rows, ")
    actual_tokens = ledger.counts(pipeline="budget-direct").total_tokens
    assert f"actual 5 rows answered, {actual_tokens:,} tokens, $" in line
    assert f"{night['planned']['tokens']:,} tokens" in line and "per row against the plan" in line


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
def test_replay_respects_the_daily_budget_unless_told_to_ignore_it(
    night_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parked direct rows replayed with no room left under the daily total stay pending, held
    by the budget, nothing sent; with ignore_budget they are called and delivered."""
    from flows.ops.replay import HELD, replay
    from flows.tick import tick

    night_env.set_scenario(
        {"name": "refuse", "scripts": [{"match": "budget-direct:p*", "steps": ["400"]}]}
    )
    ITEMS[D0.isoformat()] = names("p", 3)
    tick(pipeline=DIRECT, day=D0)
    ledger = run_ledger()
    keys = [key(Channel.DIRECT, i) for i in names("p", 3)]
    assert {ledger.get(k).status for k in keys} == {Status.PARKED}
    night_env.set_scenario("clean")

    monkeypatch.setenv("GEMINI_LEDGER_DAILY_BUDGET_USD", "0")
    held = replay(execute=True, pipeline="budget-direct", rate_per_second=100)
    assert held["held_by_budget"] == 3
    assert {j["outcome"] for j in held["jobs"]} == {HELD}
    assert {ledger.get(k).status for k in keys} == {Status.PENDING}
    assert ledger.counts(pipeline="budget-direct").attempts == 3  # nothing sent again

    # Held rows are pending, not parked: replay finds none; the next tick would send them.
    # Parked again, then replayed past the cap on purpose:
    night_env.set_scenario(
        {"name": "refuse", "scripts": [{"match": "budget-direct:p*", "steps": ["400"]}]}
    )
    monkeypatch.delenv("GEMINI_LEDGER_DAILY_BUDGET_USD")
    tick(pipeline=DIRECT, day=D0)
    assert {ledger.get(k).status for k in keys} == {Status.PARKED}
    night_env.set_scenario("clean")
    monkeypatch.setenv("GEMINI_LEDGER_DAILY_BUDGET_USD", "0")
    forced = replay(execute=True, pipeline="budget-direct", rate_per_second=100, ignore_budget=True)
    assert forced["held_by_budget"] == 0
    assert {ledger.get(k).status for k in keys} == {Status.CONSUMED}


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
def test_a_batch_night_over_its_budget_sends_one_job_of_the_rows_that_fit(
    night_env: Any,
) -> None:
    """The batch channel reserves through the same cap: with room for 4.5 rows at the batch
    price, the night's one batch job carries 4 rows and 6 stay pending, held by the budget;
    the next night with room sends them."""
    from flows.tick import tick

    batch = spec(Channel.BATCH)
    ITEMS[D0.isoformat()] = names("a", 3)
    for _ in range(2):  # sent, then collected and delivered
        tick(pipeline=batch, day=D0)
    ITEMS[D1.isoformat()] = names("b", 10)
    per_row = plan_night(load_settings(), batch, D1)["cost"]["channels"]["batch"]["per_row"]
    report = tick(pipeline=batch, day=D1, budget_usd=per_row * 4.5)
    assert (report.submitted, report.submit.held_by_budget) == (4, 6)
    ledger = run_ledger()
    keys = [key(Channel.BATCH, i) for i in names("b", 10)]
    statuses = [ledger.get(k).status for k in keys]
    assert statuses.count(Status.SUBMITTED) == 4 and statuses.count(Status.PENDING) == 6
    for _ in range(2):
        tick(pipeline=batch, day=D2, budget_usd=per_row * 100)
    assert {ledger.get(k).status for k in keys} == {Status.CONSUMED}
    assert ledger.counts(pipeline="budget-batch").attempts == 13


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
def test_the_plan_command_prints_the_night_and_touches_nothing(night_env: Any) -> None:
    """`gemini-ledger plan P --offline` prints the rows due, the estimate and its sources, the
    cost on each channel and the budget verdict; `--json` the same figures; nothing written."""
    from typer.testing import CliRunner

    from flows.cli import app

    ITEMS[D0.isoformat()] = names("c", 4)
    runner = CliRunner()
    args = ["plan", DIRECT, "--day", D0.isoformat(), "--offline", "--budget-usd", "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "4 rows due (4 new, 0 pending, 0 retrying, 0 replays)" in text
    assert "local estimate (4 characters a token) on 4 prompts" in text
    assert "output budget: max_output_tokens" in text
    assert "direct $" in text and "(its channel)" in text
    assert "0 rows fit: does not fit: 4 rows would be held" in text
    as_json = runner.invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    import json

    data = json.loads(as_json.stdout)
    assert data["due"]["new"] == 4 and data["budget"]["held"] == 4
    assert run_ledger().counts().total == 0
    # The tick's own form of a deadline is taken: the next time the clock shows it.
    morning = runner.invoke(app, [*args, "--json", "--deadline", "07:00 Europe/Paris"])
    assert morning.exit_code == 0, morning.output
    when = datetime.fromisoformat(json.loads(morning.stdout)["deadline"]["deadline"])
    assert (when.hour, when.minute) == (7, 0) and when > datetime.now(UTC)
    assert when - datetime.now(UTC) <= timedelta(days=1)
    bad = runner.invoke(app, ["plan", DIRECT, "--deadline", "tomorrow"])
    assert bad.exit_code == 1 and "is not a deadline" in bad.output
