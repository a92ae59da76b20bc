"""Fixtures for the background channel: a ledger, the emulator, output files, ticks in-process
(a real Prefect run) and in a real subprocess (``python -m flows.cli tick``)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from ledger import Ledger
from tests.child_env import child_env
from tests.prewarmed import CliRun, run_cli

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = "tests.background.pipelines:tiny"
DAY = date(2026, 11, 22)


def key_of(item: str) -> str:
    return f"bgtest:{DAY.isoformat()}:{item}:v1"


@dataclass
class Bench:
    """One test's world: ledger URL, emulator, files, and how to run ticks."""

    url: str
    emulator: Any
    prefect_api: str
    tmp: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def completions_file(self) -> Path:
        return self.tmp / "completions.log"

    def completions(self) -> Counter[str]:
        if not self.completions_file.exists():
            return Counter()
        return Counter(self.completions_file.read_text().split())

    def ledger(self) -> Ledger:
        return Ledger(self.url)

    def set_items(self, items: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
        self.env["BG_TEST_ITEMS"] = ",".join(items)
        monkeypatch.setenv("BG_TEST_ITEMS", self.env["BG_TEST_ITEMS"])

    def tick(self, **kwargs: Any) -> dict[str, Any]:
        """One tick in this process: a real Prefect flow run."""
        from flows.tick import tick

        report: dict[str, Any] = tick(pipeline=PIPELINE, day=DAY, **kwargs)
        return report

    def sub_env(self, **extra: str) -> dict[str, str]:
        env = child_env(self.env)
        env.update(self.emulator.env())
        env["PREFECT_API_URL"] = self.prefect_api
        env["PYTHONPATH"] = str(ROOT)
        env.update(extra)
        return env

    def cli_tick(self, *, timeout: float = 120, **extra: str) -> CliRun:
        """One tick in a real subprocess through the CLI, as cron would run it (forked from
        a process that has done the imports: tests/prewarmed.py)."""
        args = ["tick", PIPELINE, "--day", DAY.isoformat(), "--json"]
        return run_cli(args, env=self.sub_env(**extra), cwd=ROOT, timeout=timeout)

    def submissions(self) -> dict[str, int]:
        subs: dict[str, int] = self.emulator.stats()["submissions"]
        return subs


@pytest.fixture
def bench(tmp_path, monkeypatch, emulator, prefect_api, request) -> Bench:
    """A fresh SQLite ledger (or the URL given by indirect parametrization) and output files."""
    url = getattr(request, "param", None) or "sqlite"
    if url in ("sqlite", "postgres"):
        url = request.getfixturevalue(f"{url}_url")
    b = Bench(url=url, emulator=emulator, prefect_api=prefect_api, tmp=tmp_path)
    b.env = {
        "LEDGER_DATABASE_URL": url,
        "BG_TEST_OUT": str(tmp_path / "out"),
        "BG_TEST_COMPLETIONS": str(b.completions_file),
        "BG_TEST_ITEMS": "",
    }
    for name, value in b.env.items():
        monkeypatch.setenv(name, value)
    return b


def parse_report(stdout: str) -> dict[str, Any]:
    """The JSON report a ``tick --json`` printed (the last JSON object on stdout)."""
    start = stdout.index("{")
    report: dict[str, Any] = json.loads(stdout[start:])
    return report
