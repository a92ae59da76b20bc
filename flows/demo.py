"""The demo: a whole night against the local emulator, then the morning report.

Starts the emulator (``default`` scenario: a bad night in production) in a subprocess, runs
the review pipeline through as many nightly batch ticks as the night needs, then the article
pipeline through its background ticks, and prints what a user reads in the morning:
delivered, parked by class with reasons, attempts, tokens, what a replay would do, and how
to open the Prefect UI on this run. Everything it writes lives under ``var/demo/``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ledger import Counts, Ledger, Status

__all__ = ["DemoResult", "run_demo"]

_SETTLED = {Status.CONSUMED, Status.PARKED}


@dataclass(frozen=True)
class DemoResult:
    """What the demo did, for its report and for the test that checks the report."""

    ledger_url: str
    ticks: dict[str, int]
    counts: dict[str, Counts]
    replay_preview: dict[str, Any]
    prefect_home: Path


def _outstanding(ledger: Ledger, pipeline: str) -> int:
    by_status = ledger.counts(pipeline=pipeline).by_status
    return sum(n for status, n in by_status.items() if status not in _SETTLED)


def _run_until_settled(
    tick: Callable[[], object],
    *,
    ledger: Ledger,
    pipeline: str,
    max_ticks: int,
    say: Callable[[str], None],
) -> int:
    """Tick until every job is consumed or parked (or max_ticks); returns ticks run."""
    for n in range(1, max_ticks + 1):
        tick()
        left = _outstanding(ledger, pipeline)
        counts = ledger.counts(pipeline=pipeline).by_status
        say(
            f"  {pipeline} tick {n}: consumed {counts.get('consumed', 0)},"
            f" parked {counts.get('parked', 0)}, still in flight {left}"
        )
        if left == 0:
            return n
        # Rows told to come back later by a server-sent retry delay are not due yet, and an
        # emulated batch needs another poll: give the clock a moment before the next tick.
        time.sleep(0.5)
    return max_ticks


def run_demo(
    *,
    root: Path = Path("var/demo"),
    scenario: str = "default",
    seed: int = 2026,
    max_ticks: int = 25,
    console: Console | None = None,
) -> DemoResult:
    """Run the demo night in this process and print the morning report."""
    from flows._emulator_process import EmulatorProcess

    out = console or Console()
    say = out.print
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    prefect_home = (root / "prefect").resolve()
    ledger_url = f"sqlite:///{(root / 'ledger.db').resolve()}"
    os.environ.update(
        {
            "LEDGER_DATABASE_URL": ledger_url,
            "ARTICLES_DIR": str((root / "articles").resolve()),
            "PREFECT_HOME": str(prefect_home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # A fresh temporary server migrates its database first: slow on a busy machine.
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": os.environ.get(
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180"
            ),
            # Flow and task logs still reach the Prefect UI; the terminal shows our progress.
            "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
            "PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_LEVEL": "WARNING",
            "PREFECT_LOGGING_HANDLERS_CONSOLE_TASK_RUNS_LEVEL": "WARNING",
        }
    )
    os.environ.setdefault("GEMINI_API_KEY", "demo-key-for-the-local-emulator")
    say(f"[bold]gemini-ledger demo[/]: emulator scenario '{scenario}', ledger {ledger_url}")
    with EmulatorProcess(scenario=scenario, seed=seed) as emu:
        os.environ.update(emu.env())
        say(f"emulator up at {emu.base_url}; starting Prefect (a temporary local server)")
        # Imported only now: Prefect reads PREFECT_HOME when it is first imported.
        from flows.ops.replay import replay
        from flows.tick import tick

        ledger = Ledger(ledger_url, create=True)  # the demo starts its own ledger
        today = date.today()
        ticks = {
            "reviews": _run_until_settled(
                lambda: tick(pipeline="reviews", day=today),
                ledger=ledger,
                pipeline="reviews",
                max_ticks=max_ticks,
                say=say,
            ),
            "articles": _run_until_settled(
                lambda: tick(pipeline="articles", day=today, stale_s=5.0),
                ledger=ledger,
                pipeline="articles",
                max_ticks=max_ticks,
                say=say,
            ),
        }
        preview = replay(execute=False, limit=20)
        stats = emu.stats()
        stats["base_url"] = emu.base_url
    result = DemoResult(
        ledger_url=ledger_url,
        ticks=ticks,
        counts={p: ledger.counts(pipeline=p) for p in ticks},
        replay_preview=preview,
        prefect_home=prefect_home,
    )
    _report(out, ledger, result, stats)
    (root / "report.json").write_text(json.dumps(_as_json(result, stats), indent=2))
    ledger.dispose()
    return result


def _as_json(result: DemoResult, stats: dict[str, Any]) -> dict[str, Any]:
    """The report in a form a test (or a script) can check against the ledger."""
    return {
        "ledger_url": result.ledger_url,
        "ticks": result.ticks,
        "pipelines": {name: counts.as_dict() for name, counts in result.counts.items()},
        "replay_would_return": result.replay_preview.get("scanned", 0),
        "emulator_submissions": sum(stats.get("submissions", {}).values()),
        "emulator_url": stats.get("base_url"),
    }


def _report(out: Console, ledger: Ledger, result: DemoResult, stats: dict[str, Any]) -> None:
    out.rule("[bold]the morning report")
    table = Table(title="jobs by pipeline")
    for column in ("pipeline", "ticks", "delivered", "parked", "in flight", "attempts", "tokens"):
        table.add_column(column, justify="left" if column == "pipeline" else "right")
    for name, counts in result.counts.items():
        by = counts.by_status
        table.add_row(
            name,
            str(result.ticks[name]),
            str(by.get(Status.CONSUMED, 0)),
            str(by.get(Status.PARKED, 0)),
            str(sum(n for s, n in by.items() if s not in _SETTLED)),
            str(counts.attempts),
            str(counts.total_tokens),
        )
    out.print(table)

    parked = Table(title="parked (dead letter) by class, with a reason")
    parked.add_column("pipeline")
    parked.add_column("class")
    parked.add_column("jobs", justify="right")
    parked.add_column("example reason")
    for name, counts in result.counts.items():
        for cls, n in counts.by_error_class.items():
            [example] = ledger.select_for_replay(limit=1, error_class=cls, pipeline=name)
            parked.add_row(name, cls, str(n), (example.error_message or "")[:70])
    out.print(parked)

    billed = stats.get("submissions", {})
    out.print(
        f"attempts recorded {sum(c.attempts for c in result.counts.values())},"
        f" submissions the emulator saw {sum(billed.values())}"
    )
    plan = result.replay_preview.get("jobs", [])
    by_class: dict[str, int] = {}
    for job in plan:
        by_class[job["error_class"]] = by_class.get(job["error_class"], 0) + 1
    parked_total = sum(sum(c.by_error_class.values()) for c in result.counts.values())
    classes = ", ".join(f"{c} {n}" for c, n in sorted(by_class.items())) or "none"
    out.print(
        f"replay (dry run, limit 20): would return {len(plan)} of {parked_total} parked"
        f" job(s) to their channel, oldest first ({classes}); after fixing a cause, run"
        " `gemini-ledger replay --error-class CLASS --execute`."
    )
    out.print(
        "Prefect UI on this run: "
        f"PREFECT_HOME={result.prefect_home} .venv/bin/prefect server start"
        " then open http://127.0.0.1:4200"
    )
    root = result.prefect_home.parent
    out.print(
        f"Results: the review labels are in the `review_labels` table of {root}/ledger.db,"
        f" the articles in {root}/articles/. Next: the README's 'Deploying to a Prefect"
        " server' runs the same ticks on a schedule."
    )
