"""Fixtures for the direct-channel tests: a fresh SQLite ledger, tiny retry delays, the
emulator and a real Prefect API."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from tests.direct import pipelines

SPEC = "tests.direct.pipelines:pipeline"
DAY = date(2026, 11, 21)


@pytest.fixture
def direct_env(monkeypatch, sqlite_url, emulator, prefect_api) -> Any:
    """Everything a direct run needs, with retry delays of a few milliseconds."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GEMINI_LEDGER_DIRECT_BACKOFF_S", "0.01")
    monkeypatch.setenv("GEMINI_LEDGER_DIRECT_JITTER", "0")
    monkeypatch.delenv("LEDGER_PRICES_FILE", raising=False)
    pipelines.DELIVERED.clear()
    return emulator


def scripted(emulator: Any, scripts: dict[str, list[str]], **extra: Any) -> None:
    """Script the emulator per item: {"k1": ["429", "503", "ok"]}; 429 retry delay 10 ms."""
    emulator.set_scenario(
        {
            "name": "direct-test",
            "retry_delay_s": extra.pop("retry_delay_s", 0.01),
            "scripts": [
                {"match": f"*:{item}:*", "steps": steps} for item, steps in scripts.items()
            ],
            **extra,
        }
    )


def key_of(item: str, day: date = DAY) -> str:
    return f"direct-test:{item}:{day.isoformat()}:v1"
