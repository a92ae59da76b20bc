"""The direct channel against the emulator through the real SDK, in a real Prefect run."""

from __future__ import annotations

from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.testing import open_ledger
from flows.tick import tick
from tests.direct import pipelines
from tests.direct.conftest import DAY, SPEC, key_of, scripted
from tests.ledgers import run_ledger


def _run(monkeypatch, items: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the flow for real; the report and {task run name: (state, run_count)}."""
    monkeypatch.setenv(pipelines.ITEMS_ENV, items)
    state = tick(pipeline=SPEC, day=DAY, return_state=True)
    report = state.result()
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    tasks = {r.name: (r.state_type.value if r.state_type else None, r.run_count) for r in runs}
    return report, tasks


def _sent(emulator, item: str) -> int:
    return int(emulator.stats()["submissions"].get(key_of(item), 0))


def test_429_then_503_then_success_takes_three_attempts(direct_env, monkeypatch):
    """A 429, a 503, then an answer: done after three Prefect runs of one task, three sends."""
    scripted(direct_env, {"k1": ["429", "503", "ok"]})
    report, tasks = _run(monkeypatch, "k1")
    job = run_ledger().get(key_of("k1"))
    assert job.status == "consumed"
    assert job.attempts == 3 == _sent(direct_env, "k1")
    assert tasks[f"generate {key_of('k1')}"] == ("COMPLETED", 3)
    assert job.result_dict["label"]
    assert job.total_tokens > 0
    assert report.submit.outcomes == {"done": 1}
    assert [k for k, _ in pipelines.DELIVERED] == [key_of("k1")]


def test_400_is_parked_permanent_after_one_attempt(direct_env, monkeypatch):
    """A 400 is permanent: one attempt, no retry, parked as permanent:400."""
    scripted(direct_env, {"bad": ["400", "ok"]})
    report, tasks = _run(monkeypatch, "bad")
    job = run_ledger().get(key_of("bad"))
    assert (job.status, job.error_class, job.attempts) == ("parked", "permanent:400", 1)
    assert _sent(direct_env, "bad") == 1
    assert tasks[f"generate {key_of('bad')}"] == ("FAILED", 1)
    assert report.submit.outcomes == {"parked": 1}
    assert pipelines.DELIVERED == []


def test_safety_block_is_parked_as_safety(direct_env, monkeypatch):
    """An answer blocked for safety (and a blocked prompt) is parked as safety, not retried."""
    scripted(direct_env, {"unsafe": ["safety", "ok"], "blockedp": ["blocked_prompt", "ok"]})
    _run(monkeypatch, "unsafe,blockedp")
    for item in ("unsafe", "blockedp"):
        job = run_ledger().get(key_of(item))
        assert (job.status, job.error_class, job.attempts) == ("parked", "safety", 1)
        assert _sent(direct_env, item) == 1
        assert job.prompt_tokens > 0  # the blocked answer was billed: its tokens are kept


def test_empty_answer_is_retried_then_parked_as_empty(direct_env, monkeypatch):
    """An empty answer may be fixed by a retry (python-genai #1289): retried in the same run;
    empty every time, it is parked as ``empty`` at the unknown cap (2)."""
    scripted(direct_env, {"blank": ["empty", "ok"], "void": ["empty"]})
    _run(monkeypatch, "blank,void")
    blank, void = run_ledger().get(key_of("blank")), run_ledger().get(key_of("void"))
    assert (blank.status, blank.attempts) == ("consumed", 2)
    assert (void.status, void.error_class, void.attempts) == ("parked", "empty", 2)
    assert _sent(direct_env, "void") == 2


def test_unknown_error_stops_at_its_cap(direct_env, monkeypatch):
    """An unknown error (409 ABORTED) is tried unknown_cap (2) times, then parked unknown:409."""
    scripted(direct_env, {"odd": ["unknown", "unknown", "ok"]})
    _, tasks = _run(monkeypatch, "odd")
    job = run_ledger().get(key_of("odd"))
    assert (job.status, job.error_class, job.attempts) == ("parked", "unknown:409", 2)
    assert _sent(direct_env, "odd") == 2
    assert tasks[f"generate {key_of('odd')}"] == ("FAILED", 2)


def test_429_every_time_is_exhausted_at_the_cap(direct_env, monkeypatch):
    """A 429 on every attempt: four attempts (the cap), then parked as exhausted:429."""
    scripted(direct_env, {"busy": ["429"]})
    report, tasks = _run(monkeypatch, "busy")
    job = run_ledger().get(key_of("busy"))
    assert (job.status, job.error_class, job.attempts) == ("parked", "exhausted:429", 4)
    assert _sent(direct_env, "busy") == 4
    assert tasks[f"generate {key_of('busy')}"] == ("FAILED", 4)
    assert "RESOURCE_EXHAUSTED" in (job.error_message or "") or "quota" in (job.error_message or "")
    assert report.parked == {"exhausted:429": 1}


def test_server_retry_delay_is_honoured(direct_env, monkeypatch):
    """A 429's RetryInfo delay (0.5 s) is waited out even though Prefect's backoff is 10 ms."""
    scripted(direct_env, {"slow": ["429", "ok"]}, retry_delay_s=0.5)
    _run(monkeypatch, "slow")
    job = run_ledger().get(key_of("slow"))
    assert (job.status, job.attempts) == ("consumed", 2)
    assert job.reserved_at is not None and job.last_failure_at is not None
    assert job.reserved_at - job.last_failure_at >= 0.5


@pytest.mark.postgres
def test_direct_tick_on_postgresql(direct_env, monkeypatch, postgres_url):
    """The same outcomes on a PostgreSQL ledger: retried to done, permanent parked at once."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", postgres_url)
    scripted(direct_env, {"pg1": ["503", "ok"], "pg2": ["400"]})
    report, _ = _run(monkeypatch, "pg1,pg2")
    ledger = open_ledger(postgres_url)
    try:
        first, second = ledger.get(key_of("pg1")), ledger.get(key_of("pg2"))
        assert (first.status, first.attempts) == ("consumed", 2)
        assert (second.status, second.error_class, second.attempts) == (
            "parked",
            "permanent:400",
            1,
        )
        assert report.submit.outcomes == {"done": 1, "parked": 1}
    finally:
        ledger.dispose()
