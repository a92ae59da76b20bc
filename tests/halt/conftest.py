"""Fixtures for the halt and real-shape tests: one world (ledger, emulator, Prefect API) and
the test pipeline of every channel."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from ledger import Ledger
from tests.child_env import child_env

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2026, 11, 23)
GOOD_KEY = "halt-test-good-key-0000"


@dataclass(frozen=True)
class Channel:
    """One channel's test pipeline and how to run its tick flow."""

    name: str
    spec: str
    pipeline: str
    rows: int
    tick: Callable[..., Any]


def _tick_batch(**kw: Any) -> Any:
    from flows.tick import tick

    return tick(pipeline="tests.batch.pipelines:small_reviews", day=DAY, **kw)


def _tick_background(**kw: Any) -> Any:
    from flows.tick import tick

    return tick(pipeline="tests.background.pipelines:tiny", day=DAY, **kw)


def _tick_direct(**kw: Any) -> Any:
    from flows.tick import tick

    return tick(pipeline="tests.direct.pipelines:pipeline", day=DAY, **kw)


CHANNELS = {
    "batch": Channel("batch", "tests.batch.pipelines:small_reviews", "small", 40, _tick_batch),
    "background": Channel(
        "background", "tests.background.pipelines:tiny", "bgtest", 6, _tick_background
    ),
    "direct": Channel("direct", "tests.direct.pipelines:pipeline", "direct-test", 6, _tick_direct),
}


@pytest.fixture
def world(emulator, prefect_api, tmp_path, monkeypatch) -> dict[str, Any]:
    """A fresh SQLite ledger, the emulator accepting only GOOD_KEY, items for every channel."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    env = {
        "LEDGER_DATABASE_URL": url,
        "GEMINI_API_KEY": GOOD_KEY,
        "BG_TEST_ITEMS": "a,b,c,d,e,f",
        "BG_TEST_OUT": str(tmp_path / "out"),
        "BG_TEST_COMPLETIONS": str(tmp_path / "completions.log"),
        "DIRECT_TEST_ITEMS": "a,b,c,d,e,f",
        "GEMINI_LEDGER_DIRECT_BACKOFF_S": "0.01",
        "GEMINI_LEDGER_DIRECT_JITTER": "0",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("REVIEWS_RESULTS_URL", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    emulator.set_scenario({"name": "halt-test", "valid_api_keys": [GOOD_KEY]})
    Ledger(url, create=True).dispose()  # a ledger is created on purpose only
    return {"url": url, "emulator": emulator, "env": env}


def scenario(world: dict[str, Any], scripts: dict[str, list[str]], **extra: Any) -> None:
    """Script the emulator per item glob ({"k-bad": ["400"]}); only GOOD_KEY is valid."""
    world["emulator"].set_scenario(
        {
            "name": "shapes",
            "valid_api_keys": [GOOD_KEY],
            "retry_delay_s": 0.01,
            "scripts": [{"match": f"*:{k}:*", "steps": steps} for k, steps in scripts.items()],
            **extra,
        }
    )


def settle(ch: Channel, ledger: Any, max_ticks: int = 8) -> list[Any]:
    """Tick until every row is consumed or parked (bounded); the reports."""
    reports = []
    for _ in range(max_ticks):
        reports.append(ch.tick())
        by_status = ledger.counts(pipeline=ch.pipeline).by_status
        if by_status and set(by_status) <= {"consumed", "parked"}:
            return reports
    raise AssertionError(f"{ch.name} not settled: {by_status}")


def tick_command(
    world: dict[str, Any], prefect_api: str, ch: Channel, *, key: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """``gemini-ledger tick`` of ``ch``'s pipeline in a subprocess with ``key``; what it did
    and the ``error:`` lines it printed."""
    env = child_env(world["env"])
    env.update(world["emulator"].env())
    env["GEMINI_API_KEY"] = key  # after env(): the emulator's env() names its own key
    env["PREFECT_API_URL"] = prefect_api
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "tick", ch.spec, "--day", DAY.isoformat()],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return done, [line for line in done.stderr.splitlines() if line.startswith("error:")]
