"""A tick whose run's final state reached the Prefect server but whose answer was lost (a
read timeout on a busy server): Prefect's client sends the proposal again and gets back the
stored state without its data. The tick still ends as itself: a stop exits 143 and a halt 1,
each with its one line, never as "a bug in gemini-ledger" (exit 2), as CI once saw."""

from __future__ import annotations

import pytest

from tests.lossy_proxy import LossyProxy

from .harness import STOPPED_EXIT, World
from .matrix import REFUSED_KEY

pytestmark = pytest.mark.system


@pytest.mark.parametrize(
    ("point", "env", "expected", "line"),
    [
        pytest.param(
            "direct.after_side_effect",
            {"GEMINI_LEDGER_CRASH_SIGNAL": "TERM"},
            STOPPED_EXIT,
            "stopped by SIGTERM between rows",
            id="stop",
        ),
        pytest.param(None, {"GEMINI_API_KEY": REFUSED_KEY}, 1, "error:", id="halt"),
    ],
)
def test_a_lost_answer_to_the_final_state_keeps_the_ending(
    make_world, prefect_api, point: str | None, env: dict[str, str], expected: int, line: str
) -> None:
    """The server's answer to the tick run's Cancelled (a SIGTERM) or Failed (a refused key)
    lost once: the tick exits 143 or 1 with its one line, not 2 with a traceback."""
    world: World = make_world("direct")
    with LossyProxy(prefect_api) as proxy:
        world.prefect_api = proxy.url
        run = world.tick_subprocess(crash_at=point, env=env)
    assert proxy.dropped == 1, run.stderr[-3000:]  # the answer was lost, the proposal sent again
    assert run.returncode == expected, run.stderr[-3000:]
    assert line in run.stderr and "unexpected" not in run.stderr, run.stderr[-3000:]
