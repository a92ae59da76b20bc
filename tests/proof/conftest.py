"""Fixtures for the proof tests: a world per test on the session's emulator and Prefect API."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .harness import World
from .matrix import SCENARIO


@pytest.fixture
def make_world(tmp_path, emulator, prefect_api) -> Callable[..., World]:
    """Build a world for a channel on a ledger URL (default: a fresh SQLite file), with the
    emulator reset to the proof scenario (``media``: the even items share a file to upload)."""
    emulator.set_scenario(SCENARIO, seed=7)

    def make(
        channel: str,
        *,
        items: int = 6,
        ledger_url: str | None = None,
        extra_env: dict[str, str] | None = None,
        media: bool = False,
    ) -> World:
        root = tmp_path / channel
        root.mkdir(exist_ok=True)
        return World(
            channel=channel,
            root=root,
            ledger_url=ledger_url or f"sqlite:///{root / 'ledger.db'}",
            emulator=emulator,
            prefect_api=prefect_api,
            items=items,
            extra_env=extra_env,
            media=media,
        )

    return make
