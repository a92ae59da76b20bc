"""The shared quota's pieces against a real Prefect API: limits apply, the shared pause after
a 429, and the unlimited default."""

from __future__ import annotations

import logging
import time

import pytest

from flows.gemini import quota
from ledger import Failure, Verdict

MODEL = "gemini-test-quota"


@pytest.fixture(autouse=True)
def _fresh(prefect_api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    quota.reset_cache()


def test_limits_apply_creates_then_leaves_alone_then_updates() -> None:
    """Applying the same limits twice changes nothing; new figures update them."""
    model = f"{MODEL}-apply"
    first = quota.apply_limits([model], rpm=600, concurrency=4)
    again = quota.apply_limits([f"models/{model}"], rpm=600, concurrency=4)
    changed = quota.apply_limits([model], rpm=1200, concurrency=None)

    assert [(a.name, a.action) for a in first] == [
        (f"gemini-ledger:{model}:rpm", "created"),
        (f"gemini-ledger:{model}:inflight", "created"),
    ]
    assert [a.action for a in again] == ["unchanged", "unchanged"]
    assert [(a.name, a.action, a.limit) for a in changed] == [
        (f"gemini-ledger:{model}:rpm", "updated", 20)
    ]
    # At most rpm a minute even with a full bucket at the start and one burst of margin.
    rate = first[0]
    assert rate.limit + rate.slot_decay_per_second * 60 <= 600 - rate.limit + 1e-3
    limits = quota.limits_for(model)
    assert (limits.rpm, limits.inflight) == (20, 4)
    assert limits.per_minute is not None and limits.per_minute <= 1200


def test_a_429_pauses_the_model_for_every_worker() -> None:
    """A 429 with a retry delay seen by one process is the next request's wait in another."""
    model = f"{MODEL}-pause"
    quota.apply_limits([model], rpm=600, concurrency=None)
    before = time.time()
    quota.note_failure(model, Failure(Verdict.RETRYABLE, "429", "quota", retry_delay=30.0))

    quota.reset_cache()  # what another worker, which never saw the 429, reads
    assert quota.not_before(model) >= before + 30.0
    # A 503 does not pause anyone.
    quota.note_failure(model, Failure(Verdict.RETRYABLE, "503", "down", retry_delay=90.0))
    assert quota.not_before(model, fresh=True) < before + 31.0


def test_a_429_without_a_retry_delay_still_pauses_the_model() -> None:
    """A 429 that names no delay (some carry only a google.rpc.Help link) pauses every worker
    for the default delay, not for nothing."""
    model = f"{MODEL}-pause-default"
    quota.apply_limits([model], rpm=600, concurrency=None)
    before = time.time()
    quota.note_failure(model, Failure(Verdict.RETRYABLE, "429", "quota"))
    quota.reset_cache()
    assert quota.not_before(model) >= before + quota.DEFAULT_PAUSE_S


def test_a_model_without_limits_runs_unlimited_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No limit on the server: the slot is free and the log says so once per process."""
    model = f"{MODEL}-none"
    with caplog.at_level(logging.INFO, logger="gemini_ledger.quota"):
        for _ in range(3):
            with quota.request_slot(model):
                pass
        quota.note_failure(model, Failure(Verdict.RETRYABLE, "429", "quota", retry_delay=5.0))
    said = [r.getMessage() for r in caplog.records if "not limited" in r.getMessage()]
    assert len(said) == 1, said
    assert quota.not_before(model, fresh=True) == 0.0


def test_a_limited_model_holds_a_slot_on_the_server_during_the_request() -> None:
    """With limits, a request holds one in-flight slot the server counts, freed after it."""
    from prefect.client.orchestration import get_client

    model = f"{MODEL}-slots"
    quota.apply_limits([model], rpm=6000, concurrency=2)

    def held() -> int:
        with get_client(sync_client=True) as client:
            found = client.read_global_concurrency_limit_by_name(quota.inflight_name(model))
        return int(found.active_slots)

    with quota.request_slot(model):
        during = held()
    assert (during, held()) == (1, 0)


def test_two_workers_noting_a_429_at_once_do_not_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pause Variable created by another worker between our read and our create is
    updated instead (it failed the background tick with ObjectAlreadyExists)."""
    from prefect.client.orchestration import SyncPrefectClient

    _read_variable = SyncPrefectClient.read_variable_by_name
    model = f"{MODEL}-race"
    quota.apply_limits([model], rpm=600, concurrency=None)
    quota.note_failure(model, Failure(Verdict.RETRYABLE, "429", "quota", retry_delay=1.0))
    # Our read happens before the other worker's create lands: it sees no Variable.
    monkeypatch.setattr(SyncPrefectClient, "read_variable_by_name", lambda self, name: None)
    before = time.time()
    quota.note_failure(model, Failure(Verdict.RETRYABLE, "429", "quota", retry_delay=60.0))
    monkeypatch.setattr(SyncPrefectClient, "read_variable_by_name", _read_variable)
    assert quota.not_before(model, fresh=True) >= before + 60.0
