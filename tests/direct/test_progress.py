"""The tick's progress artifact (issue 23): rows settled of rows due, created when the tick
starts and moving while it runs, read back from a real Prefect API."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    ArtifactFilterType,
)
from pydantic import BaseModel

from flows.pipeline import Pipeline, Prompt
from flows.testing import PROGRESS_EVERY_POINTS as EVERY_POINTS
from flows.testing import PROGRESS_EVERY_S as EVERY_S
from flows.testing import ProgressPublisher as Publisher
from flows.testing import TickProgress
from flows.tick import run_tick
from ledger import Channel, Ledger, NewJob, ResultRow
from tests.direct.conftest import DAY, scripted

GOOD = [f"g{i:02d}" for i in range(20)]
BAD = ["bad1", "bad2"]
# What on_result saw of the progress artifact, row by row: (progress, description).
SEEN: list[tuple[float, str]] = []


class Label(BaseModel):
    label: str


def _progress_of_this_run() -> list[Any]:
    from prefect.runtime import flow_run

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]),
                type=ArtifactFilterType(any_=["progress"]),
            )
        )


def _watch(key: str, value: Label) -> None:
    """The side effect: read the tick's own progress artifact as the rows are delivered."""
    (artifact,) = _progress_of_this_run()
    SEEN.append((float(artifact.data), str(artifact.description)))


watching: Pipeline[str] = Pipeline(
    name="progress-test",
    model="gemini-2.5-flash",
    channel=Channel.DIRECT,
    output=Label,
    load_items=lambda day: GOOD + BAD,
    key_of=lambda item, day: f"progress-test:{item}:{day.isoformat()}:v1",
    build_prompt=lambda item: Prompt(text=f"label {item}", temperature=0.0),
    on_result=_watch,
)


def test_the_progress_artifact_moves_while_the_tick_delivers_and_ends_at_100(
    direct_env, prefect_api
):
    """Read from inside the delivery pass, the tick's progress artifact already counts the
    parked rows and rises row by row; after the tick it says 22 of 22 settled at 100."""
    scripted(direct_env, {item: ["400"] for item in BAD})
    SEEN.clear()

    report = run_tick(f"{__name__}:watching", day=DAY)

    assert (report.delivered, sum(report.parked.values())) == (20, 2)
    values = [v for v, _ in SEEN]
    assert len(values) == 20
    assert values == sorted(values)  # never backwards within the pass
    assert values[0] == pytest.approx(100 * 2 / 22, abs=0.1)  # the two parked, after submit
    assert len(set(values)) >= 5  # it moved during the pass, not only between steps
    assert all(v < 100 for v in values)
    assert "after submit" in SEEN[0][1] and "still owed" in SEEN[0][1]

    with get_client(sync_client=True) as client:
        (final,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["tick-progress-progress-test"]),
                type=ArtifactFilterType(any_=["progress"]),
            )
        )
    assert float(final.data) == 100.0
    assert "22 of 22 rows settled (20 delivered, 2 parked); 0 still owed" in final.description
    assert "tick finished" in final.description
    assert final.updated > final.created


class _Published:
    """A publisher that keeps what it was given, on a clock the test moves."""

    def __init__(self) -> None:
        self.shown: list[tuple[float, str]] = []
        self.now = 0.0

    def publisher(self) -> Publisher:
        return Publisher(
            create=lambda pct, key, text: self.shown.append((pct, text)) or "artifact-id",
            update=lambda ident, pct, text: self.shown.append((pct, text)),
        )


def test_the_loops_update_at_most_every_few_seconds_or_points(sqlite_url):
    """Between steps the loops' notes reach the artifact only when the figure moved
    EVERY_POINTS points or EVERY_S seconds passed; a step's end always does; a failing
    API is given up on, never raised into the tick."""
    import logging

    ledger = Ledger(sqlite_url)
    keys = [f"k{i:03d}" for i in range(200)]
    ledger.enroll([NewJob(k, {"k": k}) for k in keys], pipeline="p", channel="direct", model="m")
    out = _Published()
    progress = TickProgress(
        ledger, "p", "tick-progress-p", logging.getLogger("t"), out.publisher(), lambda: out.now
    )
    progress.start()
    assert out.shown == [
        (0.0, "0 of 200 rows settled (0 delivered, 0 parked); 200 still owed; starting")
    ]

    for _ in range(9):  # 4.5 points: not enough, and no time passed
        progress.note(delivered=1)
    assert len(out.shown) == 1
    progress.note(delivered=1)  # 5 points
    assert out.shown[-1][0] == 5.0 and len(out.shown) == 2
    progress.note(answered=1)  # the words change, the figure does not: wait for the clock
    assert len(out.shown) == 2
    out.now += EVERY_S
    progress.note(answered=1)
    assert len(out.shown) == 3 and "2 answered in this step" in out.shown[-1][1]
    assert EVERY_POINTS == 5.0

    ledger.reserve(pipeline="p", limit=10, reservation="r")
    for k in keys[:10]:
        ledger.bind_handle(k, reservation="r", handle="direct:r")
    ledger.apply_results(
        [ResultRow(k, '{"label":"x"}', 1, 1, 2) for k in keys[:10]], handle="direct:r"
    )
    ledger.consume(keys[:10])
    progress.after("deliver", _delivered(10))
    assert out.shown[-1] == (
        5.0,
        "10 of 200 rows settled (10 delivered, 0 parked); 190 still owed; after deliver",
    )

    def refuse(*_: Any) -> None:
        raise ConnectionError("the API is down")

    progress.publisher = Publisher(create=refuse, update=refuse)
    progress.note(delivered=50)  # logged, not raised
    progress.finish(1.0)
    assert len(out.shown) == 4


def _delivered(n: int) -> Any:
    """What the deliver step's record carries that the progress reads."""
    return SimpleNamespace(consumed=n, parked=[])
