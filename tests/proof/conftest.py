"""Fixtures for the proof tests: a world per test on the session's emulator and Prefect API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from .harness import World

# The scripted faults every crash and concurrency run carries on top of the clean scenario:
# one key fails with a retryable 503 on its first submission, one is refused for good.
RETRYABLE_ITEM = "item-00001"
PERMANENT_ITEM = "item-00002"
SCENARIO: dict[str, Any] = {
    "name": "proof",
    "batch_polls_to_complete": 1,
    "interaction_polls_to_complete": 1,
    "retry_delay_s": 0.01,
    "scripts": [
        {"match": f"*:{RETRYABLE_ITEM}:*", "steps": ["503", "ok"]},
        {"match": f"*:{PERMANENT_ITEM}:*", "steps": ["400"]},
    ],
}


@pytest.fixture
def make_world(tmp_path, emulator, prefect_api) -> Callable[..., World]:
    """Build a world for a channel on a ledger URL (default: a fresh SQLite file), with the
    emulator reset to the proof scenario."""
    emulator.set_scenario(SCENARIO, seed=7)

    def make(channel: str, *, items: int = 6, ledger_url: str | None = None) -> World:
        root = tmp_path / channel
        root.mkdir(exist_ok=True)
        return World(
            channel=channel,
            root=root,
            ledger_url=ledger_url or f"sqlite:///{root / 'ledger.db'}",
            emulator=emulator,
            prefect_api=prefect_api,
            items=items,
        )

    return make
