"""The plans verbs on both backends: a night's plan adds up its reservations, its spend is
read from its rows (answered rows' usage, the rows on their way at the planned cost per row),
the cap is marked reached once, and planned against actual comes back per night."""

from __future__ import annotations

from ledger import (
    DIRECT_HANDLE_PREFIX,
    Failure,
    Ledger,
    NewJob,
    Policy,
    ResultRow,
    Verdict,
)


def _night(ledger: Ledger) -> None:
    ledger.enroll(
        [NewJob(f"k{i}", {"text": f"t{i}"}) for i in range(5)],
        pipeline="p",
        channel="direct",
        model="gemini-2.5-flash",
    )
    assert ledger.reserve(pipeline="p", limit=3, reservation="r1", plan_day="2026-12-02") == 3
    ledger.note_plan(
        pipeline="p",
        day="2026-12-02",
        channel="direct",
        rows=3,
        prompt_tokens=300,
        output_tokens=600,
        usd=0.3,
        source="history",
        cap_usd=1.0,
    )
    for key in ("k0", "k1", "k2"):
        ledger.bind_handle(key, reservation="r1", handle=f"h-{key}")
    ledger.record_result(ResultRow("k0", "{}", 90, 150, 250, 10), handle="h-k0")


def test_a_nights_spend_and_plan_read_from_its_rows(ledger_url: str) -> None:
    """One answered row counts its usage, two still on their way count their planned cost,
    and the other rows (never reserved that night) count nothing."""
    ledger = Ledger(ledger_url)
    _night(ledger)
    spend = ledger.night_spend("2026-12-02", pipeline="p")
    assert [(u.rows, u.usage.prompt_tokens, u.usage.thoughts_tokens) for u in spend.usage] == [
        (1, 90, 10)
    ]
    assert spend.in_flight == {"p": 2} and abs(spend.in_flight_usd - 0.2) < 1e-9
    assert ledger.night_spend("2026-12-03").usage == ()
    (night,) = ledger.plans_for("p", "2026-12-01")
    assert night.planned is not None
    assert (night.day, night.planned.rows, night.planned.usd, night.planned.cap_usd) == (
        "2026-12-02",
        3,
        0.3,
        1.0,
    )
    assert (night.answered, night.in_flight, night.tokens.total_tokens) == (1, 2, 250)
    assert ledger.plans_for("p", "2026-12-03") == []
    due = ledger.due_rows("p", sample=1)
    assert (due.pending, due.retrying, len(due.sample)) == (2, 0, 1)
    assert ledger.known_keys(["k0", "nope"]) == {"k0"}


def test_a_plan_adds_up_and_its_cap_is_reached_once(ledger_url: str) -> None:
    """A second reservation adds to the night's plan; the held rows are replaced; the first
    mark of the cap wins and a second changes nothing."""
    ledger = Ledger(ledger_url)
    _night(ledger)
    ledger.note_plan(
        pipeline="p",
        day="2026-12-02",
        channel="direct",
        rows=1,
        prompt_tokens=100,
        output_tokens=200,
        usd=0.1,
        source="history",
        cap_usd=1.0,
    )
    ledger.note_held(pipeline="p", day="2026-12-02", channel="direct", held=7, cap_usd=1.0)
    ledger.note_held(pipeline="p", day="2026-12-02", channel="direct", held=2, cap_usd=1.0)
    assert ledger.mark_reached(pipeline="p", day="2026-12-02", channel="direct") is True
    assert ledger.mark_reached(pipeline="p", day="2026-12-02", channel="direct") is False
    (night,) = ledger.plans_for("p", "2026-12-02")
    assert night.planned is not None
    assert (night.planned.rows, round(night.planned.usd, 9), night.planned.held) == (4, 0.4, 2)
    assert night.planned.reached_at is not None
    assert ledger.planned("p", "2026-12-02") == night.planned
    assert ledger.planned("p", "2026-12-03") is None


def test_a_batch_row_sent_directly_is_read_as_sent_directly(ledger_url: str) -> None:
    """A batch row answered under a ``direct:`` handle (a deadline's fallback) is among the
    night's usage under its own channel and named in ``sent_direct``; one sent in a batch job
    is not."""
    ledger = Ledger(ledger_url)
    ledger.enroll(
        [NewJob(f"b{i}", {"text": f"t{i}"}) for i in range(2)],
        pipeline="b",
        channel="batch",
        model="gemini-2.5-flash",
    )
    assert ledger.reserve(pipeline="b", limit=2, reservation="r", plan_day="2026-12-02") == 2
    ledger.bind_handle("b0", reservation="r", handle=f"{DIRECT_HANDLE_PREFIX}r")
    ledger.bind_handle("b1", reservation="r", handle="batches/x")
    ledger.record_result(ResultRow("b0", "{}", 100, 50, 150, 0), handle=f"{DIRECT_HANDLE_PREFIX}r")
    ledger.record_result(ResultRow("b1", "{}", 100, 50, 150, 0), handle="batches/x")
    spend = ledger.night_spend("2026-12-02")
    assert sum(u.rows for u in spend.usage) == 2
    assert [(u.channel, u.rows) for u in spend.sent_direct] == [("batch", 1)]


def test_an_answer_without_tokens_counts_at_the_planned_cost(ledger_url: str) -> None:
    """An answer recorded with no tokens is counted (unmetered) at its night's planned cost
    per row; a failure that brought no tokens is not."""
    ledger = Ledger(ledger_url)
    _night(ledger)
    ledger.record_result(ResultRow("k1", "{}", 0, 0, 0, 0), handle="h-k1")
    busy = Failure(Verdict.RETRYABLE, "429", "busy")
    assert ledger.record_failure("k2", busy, policy=Policy(), handle="h-k2") == "retryable"
    spend = ledger.night_spend("2026-12-02", pipeline="p")
    assert spend.unmetered == {"p": 1} and abs(spend.unmetered_usd - 0.1) < 1e-9
    assert spend.in_flight == {}
