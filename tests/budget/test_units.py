"""The budget's pieces without a night: a pipeline's cap is checked when it is defined and
is no part of its recorded definition; a tick's cap is checked before any work."""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from flows.identity import schema_fingerprint
from flows.pipeline import Prompt
from flows.testing import REFRESH_EVERY_S, Budget, load_prices, night_cost
from ledger import Channel, Ledger, NewJob, SetupFault, SetupKind
from tests.budget.pipelines import direct

MODEL = "gemini-2.5-flash"
NIGHT = "2026-12-02"
DAY = date(2026, 12, 2)


@pytest.mark.parametrize("bad", [-0.01, float("inf"), float("nan")])
def test_a_bad_pipeline_budget_is_refused_when_the_pipeline_is_defined(bad: float) -> None:
    """budget_usd must be a finite number of dollars, zero or more."""
    with pytest.raises(ValueError, match="budget_usd"):
        dataclasses.replace(direct, budget_usd=bad)


def test_a_new_budget_is_no_new_revision_of_the_pipeline() -> None:
    """The cap changes how many rows go out, never what an answer is: the recorded
    definition's fingerprint stays the same."""
    capped = dataclasses.replace(direct, budget_usd=3.0)
    assert schema_fingerprint(capped) == schema_fingerprint(direct)


def test_a_bad_tick_budget_is_one_line_before_any_work(monkeypatch, tmp_path) -> None:
    """`tick --budget-usd -1` and a flow parameter below zero are refused before anything
    is touched."""
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.testing import Budget

    monkeypatch.setenv("LEDGER_DATABASE_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    result = CliRunner().invoke(
        app, ["tick", "tests.budget.pipelines:direct", "--budget-usd", "-1"]
    )
    assert result.exit_code == 1 and "--budget-usd must be" in result.stderr
    assert not (tmp_path / "ledger.db").exists()
    with pytest.raises(ValueError, match="budget_usd"):
        Budget(-1.0)


def test_the_nights_spend_prices_a_deadlines_direct_rows_at_the_direct_rate(
    sqlite_url: str,
) -> None:
    """A batch row a deadline sent directly counts against the cap at the direct price (as
    the morning summary prices it), not at the batch multiplier."""
    from flows.testing import UsageLine, estimate_cost, load_prices, night_cost
    from ledger import DIRECT_HANDLE_PREFIX, Ledger, NewJob, ResultRow

    ledger = Ledger(sqlite_url)
    ledger.enroll([NewJob("b0", {"text": "t"})], pipeline="b", channel="batch", model=MODEL)
    assert ledger.reserve(pipeline="b", limit=1, reservation="r", plan_day=NIGHT) == 1
    handle = f"{DIRECT_HANDLE_PREFIX}r"
    ledger.bind_handle("b0", reservation="r", handle=handle)
    ledger.record_result(ResultRow("b0", "{}", 1000, 500, 1500, 0), handle=handle)
    prices = load_prices(None)
    direct = estimate_cost([UsageLine(MODEL, "direct", 1000, 500, 1500, rows=1)], prices).usd
    assert direct > 0
    assert abs(night_cost(ledger.night_spend(NIGHT), prices) - direct) < 1e-12


@dataclass
class _Ctx:
    """The parts of a run the budget reads (flows.channels.RunContext's)."""

    ledger: Ledger
    pipeline: Any
    settings: Any
    day: date
    budget: Budget = field(default_factory=Budget)
    log: Any = field(default_factory=lambda: logging.getLogger("test.budget"))


def _enrolled(ledger: Ledger, pipeline: Any, n: int) -> None:
    prompt = Prompt(text="Label the review x: " + "a fine product, works well. " * 8)
    ledger.enroll(
        [NewJob(f"{pipeline.name}:{i}", prompt.model_dump_json()) for i in range(n)],
        pipeline=pipeline.name,
        channel=Channel(pipeline.channel).value,
        model=pipeline.model,
    )


def test_two_pipelines_at_once_share_the_daily_cap(sqlite_url: str) -> None:
    """Two pipelines reserving one row at a time under one daily cap: the second reads the
    night again once its read is a refresh interval old and sees the first's rows, so the
    night stays within the cap (before, it spent the whole cap again)."""
    now = [1000.0]
    ledger = Ledger(sqlite_url, clock=lambda: now[0])
    a, b = direct, dataclasses.replace(direct, name="budget-other")
    for p in (a, b):
        _enrolled(ledger, p, 10)
    day = date(2026, 12, 2)
    per_row = _Ctx(ledger, a, SimpleNamespace(prices_file=None, daily_budget_usd=None), day)
    assert per_row.budget.room(per_row) is None
    assert per_row.budget.usd_per_row
    settings = SimpleNamespace(prices_file=None, daily_budget_usd=3.5 * per_row.budget.usd_per_row)
    first, second = _Ctx(ledger, a, settings, day), _Ctx(ledger, b, settings, day)
    assert first.budget.room(first) == 3 and second.budget.room(second) == 3  # both read 0
    got = sum(first.budget.reserve(first, limit=1, reservation=f"a{i}") for i in range(5))
    assert got == 3
    now[0] += REFRESH_EVERY_S
    got = sum(second.budget.reserve(second, limit=1, reservation=f"b{i}") for i in range(5))
    assert got == 0
    spent = night_cost(ledger.night_spend(day.isoformat()), load_prices(None))
    assert spent <= settings.daily_budget_usd


class _HeldLedger(Ledger):
    """A real ledger whose reservation named ``held`` waits, inside ``reserve``, until the
    test lets it go."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.entered, self.release = threading.Event(), threading.Event()

    def reserve(self, **kwargs: Any) -> int:
        if kwargs["reservation"] == "held":
            self.entered.set()
            assert self.release.wait(30)
        return super().reserve(**kwargs)


def test_without_a_cap_the_runs_threads_reserve_side_by_side(sqlite_url: str) -> None:
    """With no cap to share out, one thread's reservation in progress never holds another
    thread of the run back (the direct channel's calls); both are counted and planned."""
    ledger = _HeldLedger(sqlite_url)
    _enrolled(ledger, direct, 2)
    ctx = _Ctx(ledger, direct, SimpleNamespace(prices_file=None, daily_budget_usd=None), DAY)
    got: dict[str, int] = {}

    def reserve(name: str) -> None:
        got[name] = ctx.budget.reserve(ctx, limit=1, reservation=name)

    held = threading.Thread(target=reserve, args=("held",))
    held.start()
    try:
        assert ledger.entered.wait(30)
        other = threading.Thread(target=reserve, args=("other",))
        other.start()
        other.join(10)
        assert not other.is_alive() and got == {"other": 1}
    finally:
        ledger.release.set()
        held.join(30)
    assert got == {"other": 1, "held": 1} and ctx.budget.reserved == 2
    (plan,) = ledger.plans_for(direct.name, DAY.isoformat())
    assert plan.planned is not None and plan.planned.rows == 2


def test_the_offline_count_adds_the_cached_prefix_to_every_row() -> None:
    """A pipeline's cached shared prefix (system and parts) is counted in each row's prompt
    estimate, at about four characters a token (before, only the prompt was)."""
    from flows.testing import local_prompt_tokens
    from tests.budget.pipelines import PREFIX_CHARS, prefixed

    payload = Prompt(text="Label the review x: a fine product.").model_dump_json()
    plain = local_prompt_tokens([payload], direct)
    with_prefix = local_prompt_tokens([payload], prefixed)
    assert plain is not None and with_prefix is not None
    assert with_prefix - plain == PREFIX_CHARS // 4


def test_plan_asks_count_tokens_for_the_cached_prefix_too(
    emulator: Any, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`plan` counts the cached prefix with count_tokens (once, as contents) and adds it to
    each row's prompt tokens."""
    from flows.ops.plan import plan_night
    from flows.settings import load_settings
    from tests.budget.pipelines import ITEMS, PREFIX_CHARS, names, spec

    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    day = date(2026, 12, 2)
    ITEMS.clear()
    ITEMS[day.isoformat()] = names("p", 3)
    settings = load_settings()
    plain = plan_night(settings, spec(Channel.DIRECT), day)["estimate"]
    mine = plan_night(settings, "tests.budget.pipelines:prefixed", day)["estimate"]
    assert mine["prompt_source"] == "count_tokens on 3 prompts with the cached prefix"
    added = mine["prompt_tokens_per_row"] - plain["prompt_tokens_per_row"]
    assert PREFIX_CHARS // 8 < added < PREFIX_CHARS  # the emulator counts about 4 a token


def test_a_cap_on_an_unpriced_model_is_a_setup_fault_before_anything_is_reserved(
    sqlite_url: str,
) -> None:
    """With a cap and no price for the model, the first reservation is refused with a setup
    fault naming the model and LEDGER_PRICES_FILE, nothing reserved (before: a warning and
    no cap at all); told to ignore the budget, the rows go out."""
    ledger = Ledger(sqlite_url)
    unpriced = dataclasses.replace(direct, model="gemini-unpriced-9", budget_usd=1.0)
    _enrolled(ledger, unpriced, 2)
    day = date(2026, 12, 2)
    ctx = _Ctx(ledger, unpriced, SimpleNamespace(prices_file=None, daily_budget_usd=None), day)
    with pytest.raises(SetupFault) as refused:
        ctx.budget.reserve(ctx, limit=2, reservation="r1")
    assert refused.value.kind is SetupKind.UNPRICED
    assert "gemini-unpriced-9" in str(refused.value) and "LEDGER_PRICES_FILE" in str(refused.value)
    assert ledger.due_rows(unpriced.name).pending == 2
    free = _Ctx(ledger, unpriced, ctx.settings, day, Budget(ignore=True))
    assert free.budget.reserve(free, limit=2, reservation="r2") == 2


def test_plan_history_tells_rows_from_sends(sqlite_url: str) -> None:
    """A row reserved twice in one night (its first reservation given back) is one planned
    row and two planned sends in plan's history; before, it was two planned rows."""
    from flows.ops.plan import priced_nights

    ledger = Ledger(sqlite_url)
    _enrolled(ledger, direct, 1)
    for reservation in ("r1", "r2"):
        assert ledger.reserve(
            pipeline=direct.name, limit=1, reservation=reservation, plan_day=NIGHT
        )
        ledger.note_plan(
            pipeline=direct.name,
            day=NIGHT,
            channel="direct",
            rows=1,
            prompt_tokens=10,
            output_tokens=10,
            usd=0.01,
            source="test",
            cap_usd=None,
        )
        if reservation == "r1":
            assert ledger.release("r1") == 1
    (night,) = priced_nights(ledger, direct.name, date(2026, 12, 1), load_prices(None))
    assert (night.planned_rows, night.planned_sends) == (1, 2)
    assert night.as_dict()["planned"]["sends"] == 2


def test_the_morning_summary_reads_each_pipelines_plans_once(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One plans_for per pipeline serves both the rows held by the budget and the night's
    planned-against-actual line of the morning summary."""
    from flows.ops.summary import build_summary
    from flows.testing import HaltHistory

    ledger = Ledger(sqlite_url)
    night = datetime.now(UTC).date() - timedelta(days=1)
    _enrolled(ledger, direct, 3)
    assert ledger.reserve(pipeline=direct.name, limit=1, reservation="r1", plan_day=str(night))
    common = {"pipeline": direct.name, "day": night.isoformat(), "channel": "direct"}
    ledger.note_plan(
        **common, rows=1, prompt_tokens=10, output_tokens=10, usd=0.01, source="t", cap_usd=0.01
    )
    ledger.note_held(**common, held=2, cap_usd=0.01)
    reads: list[tuple[str, str]] = []
    plans_for = ledger.plans_for

    def counted(pipeline: str, since: str) -> Any:
        reads.append((pipeline, since))
        return plans_for(pipeline, since)

    monkeypatch.setattr(ledger, "plans_for", counted)
    report = build_summary(ledger, night, load_prices(None), halts=HaltHistory([]))
    (row,) = report["pipelines"]
    assert (row["held_by_budget"], row["held_by_budget_night"]) == (2, night.isoformat())
    assert row["plan"] is not None and row["plan"]["planned"]["rows"] == 1
    assert [p for p, _ in reads] == [direct.name]
