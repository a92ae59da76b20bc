"""Two live delivery passes at once, one of them in the middle of a slow side effect: every
side effect runs once. Each channel's deliver step (batch, background, direct: they share
``flows.run._deliver.deliver_done``) and replay's delivery, against each other in two threads,
each with a ledger of its own on SQLite and PostgreSQL.

The side effects take time on the ledgers' shared clock (``tests.delivery.pipelines``), not
in real time: the slow pass stops inside its ``SLOW_AT``-th side effect, 500 s after it
claimed its rows, well past the stale age of a claim that is never renewed, and the other
pass runs to its end meanwhile.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from flows.settings import Settings
from flows.testing import RunContext
from flows.tick import open_channel
from ledger import Channel, Ledger, NewJob, ResultRow, Status

from . import pipelines
from .pipelines import OVERLAP, SLOW

ROWS = 20
STALE_S = 200.0  # every channel's stale age in these tests
EFFECT_S = 100.0  # one side effect, on the ledgers' clock: below the stale age
SLOW_AT = 5  # the slow pass stops inside its 5th side effect
STALE_ENVS = (
    "GEMINI_LEDGER_BATCH_STALE_S",
    "GEMINI_LEDGER_BACKGROUND_STALE_S",
    "GEMINI_LEDGER_DIRECT_STALE_S",
)
DAY = date(2026, 12, 6)


def _settings(stale_s: float = STALE_S) -> Settings:
    return Settings.given(**{env: stale_s for env in STALE_ENVS})


def _done_rows(ledger: Ledger, channel: Channel, n: int, *, first: int = 0) -> list[str]:
    """``n`` rows of the channel's overlap pipeline, done with a stored result."""
    name = f"overlap-{channel.value}"
    keys = [f"{name}:{i:03d}" for i in range(first, first + n)]
    token = f"setup-{first}"
    ledger.enroll((NewJob(k, {"k": k}) for k in keys), pipeline=name, channel=channel, model="m")
    ledger.reserve(pipeline=name, limit=n, reservation=token, batch_model="m")
    ledger.bind_batch(token, name=f"batches/{token}")
    ledger.apply_results([ResultRow(k, '{"label": "ok"}') for k in keys], handle=f"batches/{token}")
    return keys


def _deliver(ledger: Ledger, channel: Channel, settings: Settings) -> Any:
    """The channel's deliver step, as a tick runs it."""
    ctx = RunContext(
        spec=f"tests.delivery.pipelines:{channel.value}",
        pipeline=getattr(pipelines, channel.value),
        ledger=ledger,
        settings=settings,
        day=DAY,
    )
    return open_channel(ctx).deliver()


def _overlap(slow: Callable[[], Any], other: Callable[[], Any]) -> tuple[Any, Any]:
    """Run ``slow`` and, once it is inside its slow side effect, ``other`` to its end."""
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def run(name: str, work: Callable[[], Any], after: threading.Event | None) -> None:
        try:
            if after is not None and not after.wait(120):
                raise TimeoutError("the slow pass never reached its slow side effect")
            results[name] = work()
        except BaseException as exc:
            errors.append(exc)
        finally:
            if name == "other":
                OVERLAP.other_done.set()

    threads = [
        threading.Thread(target=run, args=("slow", slow, None), name=SLOW),
        threading.Thread(target=run, args=("other", other, OVERLAP.slowed), name="other"),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors, errors
    return results["slow"], results["other"]


def _ledgers(url: str, n: int) -> list[Ledger]:
    return [Ledger(url, clock=OVERLAP.clock) for _ in range(n)]


@pytest.mark.parametrize("channel", [Channel.BATCH, Channel.BACKGROUND, Channel.DIRECT])
def test_a_second_deliver_step_never_repeats_a_live_passs_side_effects(
    ledger_url: str, channel: Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deliver step that starts while another is inside a slow side effect, its claims made
    longer ago than the stale age, takes none of them (they are renewed as the pass goes):
    every side effect runs once and the first pass delivers everything."""
    settings = _settings()
    OVERLAP.reset(effect_s=EFFECT_S, slow_at=SLOW_AT)
    setup, a, b = _ledgers(ledger_url, 3)
    keys = _done_rows(setup, channel, ROWS)

    slow, other = _overlap(
        lambda: _deliver(a, channel, settings), lambda: _deliver(b, channel, settings)
    )

    assert Counter(OVERLAP.log) == dict.fromkeys(keys, 1)
    assert slow.consumed + other.consumed == ROWS
    assert other.claimed == 0
    assert {j.status for j in setup.jobs(pipeline=f"overlap-{channel.value}")} == {Status.CONSUMED}


@pytest.mark.parametrize("channel", [Channel.BATCH, Channel.BACKGROUND])
def test_a_pass_whose_claim_was_taken_over_records_nothing_and_stops(
    ledger_url: str, channel: Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass that stalled inside a side effect past the stale age (no renewal: as good as
    dead) loses its claims to the next pass; it records nothing more, stops, and says so, so
    only the rows it held unrecorded can run twice, never the rest of its group."""
    settings = _settings()
    OVERLAP.reset(effect_s=EFFECT_S, slow_at=SLOW_AT)
    OVERLAP.while_slow = lambda: OVERLAP.clock.advance(3 * STALE_S)  # the stall
    setup, a, b = _ledgers(ledger_url, 3)
    keys = _done_rows(setup, channel, ROWS)

    slow, other = _overlap(
        lambda: _deliver(a, channel, settings), lambda: _deliver(b, channel, settings)
    )

    ran = Counter(OVERLAP.log)
    held_unrecorded = 1  # every channel consumes each row right after its side effect
    assert set(ran) == set(keys)
    assert [k for k in keys if ran[k] != 1] == keys[SLOW_AT - held_unrecorded : SLOW_AT]
    assert slow.lost_claim and not other.lost_claim
    assert slow.taken_over == held_unrecorded
    assert slow.consumed == SLOW_AT - held_unrecorded
    assert other.consumed == ROWS - slow.consumed
    assert {j.status for j in setup.jobs(pipeline=f"overlap-{channel.value}")} == {Status.CONSUMED}


def test_a_claim_holds_through_a_side_effect_longer_than_the_stale_age(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one side effect runs longer than the stale age, the pass's renewal keeps its
    claims fresh: a second pass takes none of them, and every side effect runs once."""
    stale_s = 0.4  # renewed every 0.1 s of real time
    settings = _settings(stale_s)
    OVERLAP.reset(effect_s=0.0, slow_at=1)
    setup, a, b = _ledgers(ledger_url, 3)
    keys = _done_rows(setup, Channel.BACKGROUND, ROWS)

    def long_side_effect() -> None:
        OVERLAP.clock.advance(3 * stale_s)
        now = OVERLAP.clock()
        # Wait (bounded) until the held claims were renewed past the stale age.
        renewed = threading.Event()
        deadline = threading.Event()
        timer = threading.Timer(30, deadline.set)
        timer.start()
        try:
            while not deadline.is_set():
                claims = [j.claimed_at for j in setup.jobs(pipeline="overlap-background")]
                if all(c is not None and c >= now for c in claims):
                    renewed.set()
                    break
                deadline.wait(0.05)
        finally:
            timer.cancel()

    OVERLAP.while_slow = long_side_effect
    slow, other = _overlap(
        lambda: _deliver(a, Channel.BACKGROUND, settings),
        lambda: _deliver(b, Channel.BACKGROUND, settings),
    )

    assert Counter(OVERLAP.log) == dict.fromkeys(keys, 1)
    assert other.claimed == 0
    assert slow.consumed == ROWS


def test_replay_delivering_beside_a_tick_never_repeats_its_side_effects(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch, prefect_api: str
) -> None:
    """``replay --execute`` re-delivering a row parked by its delivery, while a tick's deliver
    step is inside a slow side effect, takes none of that pass's claims: each side effect
    runs once (the replayed row's too)."""
    import flows.ops.replay
    from ledger import DELIVERY_CLASS_PREFIX

    settings = _settings()
    OVERLAP.reset(effect_s=EFFECT_S, slow_at=SLOW_AT)
    setup, a, b = _ledgers(ledger_url, 3)
    channel = Channel.BACKGROUND
    [parked] = _done_rows(setup, channel, 1, first=900)
    setup.claim_done(pipeline="overlap-background", token="setup", older_than=STALE_S)
    setup.fail_delivery(
        parked,
        token="setup",
        error_class=f"{DELIVERY_CLASS_PREFIX}RuntimeError",
        message="x",
        cap=1,
    )
    assert setup.get(parked).status == Status.PARKED
    keys = _done_rows(setup, channel, ROWS)
    # The replay flow loads its settings when it starts, as a worker's run would (the same
    # stale ages), and opens its own ledger on the same database: b, on the test's clock.
    for env in STALE_ENVS:
        monkeypatch.setenv(env, str(STALE_S))
    import flows.tick

    for module in (flows.ops.replay, flows.tick):
        monkeypatch.setattr(module, "open_ledger", lambda *args, **kwargs: b)

    def replay() -> Any:
        return flows.ops.replay.replay(
            execute=True,
            limit=5,
            pipeline="tests.delivery.pipelines:background",
            rate_per_second=1000.0,
        )

    _slow, report = _overlap(lambda: _deliver(a, channel, settings), replay)

    assert report["scanned"] == 1
    assert Counter(OVERLAP.log) == dict.fromkeys([*keys, parked], 1)
    assert {j.status for j in setup.jobs(pipeline="overlap-background")} == {Status.CONSUMED}
