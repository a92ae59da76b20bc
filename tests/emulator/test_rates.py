"""The emulator's highest observed request rate per model and window."""

from __future__ import annotations

from typing import Any

from emulator.testing import RateMeter, RunningEmulator

from .helpers import MODEL


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_meter_keeps_the_most_requests_seen_in_any_window() -> None:
    """Three requests within a second and seven within a minute, whatever came between."""
    clock = FakeClock()
    meter = RateMeter(clock)
    for t in (0.0, 0.4, 0.9, 1.5, 2.0, 30.0, 59.0, 61.0):
        clock.now = t
        meter.observe(f"models/{MODEL}")
    clock.now = 200.0
    meter.observe("other-model")

    figures = meter.as_json()
    assert figures[MODEL] == {"requests": 8, "max_per_second": 3, "max_per_minute": 7}
    assert figures["other-model"] == {"requests": 1, "max_per_second": 1, "max_per_minute": 1}


def test_generate_and_interactions_count_toward_their_model(
    emu: RunningEmulator, client: Any
) -> None:
    """generateContent (model in the path) and interactions.create (model in the body)
    count; a poll does not."""
    client.models.generate_content(model=MODEL, contents="Say something")
    created = client.interactions.create(model=MODEL, input="Write about tea", background=True)
    client.interactions.get(created.id)

    rates = emu.stats()["rates"]
    assert rates == {
        MODEL: {
            "requests": 2,
            "max_per_second": rates[MODEL]["max_per_second"],
            "max_per_minute": 2,
        }
    }
    assert 1 <= rates[MODEL]["max_per_second"] <= 2
