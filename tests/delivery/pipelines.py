"""Pipelines for the delivery overlap tests, one per channel (``tests.delivery.pipelines:NAME``),
whose side effect is slow and logged.

Their ``on_result`` goes through :data:`OVERLAP`, which the test sets up: it appends the key
to the side-effect log and moves the ledgers' shared clock on by ``effect_s`` (a side effect
that takes that long, without a real wait). The thread named ``slow``, at its ``slow_at``-th
side effect, stops there until the other pass has run to its end: two live passes overlap
with one of them in the middle of a side effect.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from flows.pipeline import Pipeline, Prompt
from ledger import Channel

__all__ = ["OVERLAP", "Overlap", "SharedClock", "background", "batch", "direct"]

SLOW = "slow"  # the name of the thread whose pass stops inside a side effect


class Answer(BaseModel):
    """The stored result every test row carries."""

    label: str


class SharedClock:
    """The ledgers' clock in these tests: moved on only by side effects (and the test)."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class Overlap:
    """One test's side-effect log, clock and the hand-over between the two passes."""

    def __init__(self) -> None:
        self.reset()

    def reset(self, *, effect_s: float = 0.0, slow_at: int = 0) -> None:
        self.log: list[str] = []
        self.by_thread: Counter[str] = Counter()
        self.clock = SharedClock()
        self.effect_s = effect_s
        self.slow_at = slow_at
        self.slowed = threading.Event()  # the slow pass is inside its slow side effect
        self.other_done = threading.Event()  # the other pass ran to its end
        self.while_slow: Callable[[], None] = lambda: None  # run in the slow side effect
        self._lock = threading.Lock()

    def side_effect(self, key: str) -> None:
        with self._lock:
            self.log.append(key)
            self.clock.advance(self.effect_s)
            me = threading.current_thread().name
            self.by_thread[me] += 1
            stop_here = me == SLOW and self.by_thread[me] == self.slow_at
        if stop_here:
            self.while_slow()
            self.slowed.set()
            if not self.other_done.wait(120):
                raise TimeoutError("the other delivery pass never finished")


OVERLAP = Overlap()


def _pipeline(channel: Channel) -> Pipeline[Any]:
    return Pipeline(
        name=f"overlap-{channel.value}",
        model="gemini-2.5-flash",
        channel=channel,
        output=Answer,
        load_items=lambda day: [],
        key_of=lambda item, day: str(item),
        build_prompt=lambda item: Prompt(text=str(item)),
        on_result=lambda key, result: OVERLAP.side_effect(key),
    )


batch = _pipeline(Channel.BATCH)
background = _pipeline(Channel.BACKGROUND)
direct = _pipeline(Channel.DIRECT)
