"""A batch pipeline whose deliveries are counted in a file: for the deadline tests (a tick in a
subprocess delivers into the same file, named by ``DELIVERIES_ENV``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from itertools import islice
from pathlib import Path
from typing import Any

from flows.examples.reviews import ReviewLabel, build_prompt, load_reviews
from flows.pipeline import Pipeline
from ledger import Channel
from tests.child_env import parent_value

__all__ = [
    "DECLARED_DEADLINE",
    "DELIVERIES_ENV",
    "ROWS",
    "deliveries",
    "late",
    "late_declared",
    "late_once",
]

DELIVERIES_ENV = "GL_TEST_DEADLINE_DELIVERIES"
ROWS = 20


def _load(day: date) -> list[dict[str, Any]]:
    return list(islice(load_reviews(day), ROWS))


def _deliver(key: str, result: Any) -> None:
    # One line per side effect run: a key twice is a row delivered twice.
    with Path(parent_value(DELIVERIES_ENV)).open("a", encoding="utf-8") as out:
        out.write(key + "\n")


def deliveries(path: Path) -> list[str]:
    """The keys delivered, one per side effect run."""
    return path.read_text(encoding="utf-8").split() if path.exists() else []


late = Pipeline(
    name="late",
    model="gemini-2.5-flash",
    channel=Channel.BATCH,
    output=ReviewLabel,
    load_items=_load,
    key_of=lambda item, day: f"late:{day.isoformat()}:{item['id']}",
    build_prompt=build_prompt,
    on_result=_deliver,
)

# The same pipeline with its deadline declared on it (what the ``reconcile`` flow, which the
# webhook receiver starts, knows of: a tick's deadline parameter is not passed to it).
DECLARED_DEADLINE = "07:00 UTC"
late_declared = replace(late, name="late_declared", deadline=DECLARED_DEADLINE)

# One attempt allowed: the batch send is each row's last, so a deadline's cancel finds every
# row at its attempt cap.
late_once = replace(late, name="late_once", attempt_cap=1)
