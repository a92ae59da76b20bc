"""Embeddings per second on the direct channel, against the SDK calling embed_content alone.

    python bench/embeddings.py                      # 2,000 rows, 32 per call, 8 at a time
    python bench/embeddings.py --n 500 --group 16 --concurrency 4

Both figures use the same emulator (a real subprocess, ``--latency-ms`` per embed call, no
faults) in the same run, with fresh keys:

- ``SDK alone``: ``client.models.embed_content`` with the same groups of texts (same model,
  same ``EmbedContentConfig``), ``--concurrency`` calls at a time on a thread pool, nothing
  recorded: the ceiling;
- ``tick flow``: the ``tick`` flow of an embedding pipeline with ``max_concurrency`` the same
  (enrolment, reservation, one call per group, each vector checked and recorded as its own
  row, delivery into nothing, all in the wall time; the call phase timed on its own too),
  on a temporary Prefect server.

Prints embeddings per second and the ratio flow / SDK, then where the tick's wall time went:
each step's task run as the Prefect server recorded it (``recover``, ``collect``,
``deliver``, ``enroll``, ``submit`` and its call phase, the second ``deliver`` of what the
submit settled) and the rest of the flow (its start, the progress artifact between steps,
the report); asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

# Run as `python bench/embeddings.py`: put the project first and drop this folder (its
# ledger.py would shadow the ledger package).
_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(_ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != _ROOT / "bench"]

_TMP = tempfile.mkdtemp(prefix="gl-bench-embeddings-")
os.environ.setdefault("PREFECT_HOME", str(Path(_TMP) / "prefect"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("PREFECT_API_URL", None)
os.environ["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE"] = "200"
os.environ["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE"] = "200"
os.environ["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL"] = "1"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ["PREFECT_SERVER_LOGGING_LEVEL"] = "CRITICAL"
os.environ["LEDGER_DATABASE_URL"] = f"sqlite:///{Path(_TMP) / 'ledger.db'}"
os.environ.setdefault("GEMINI_API_KEY", "bench-key-not-secret")

from emulator.testing import RunningEmulator  # noqa: E402
from flows import EmbeddingSettings, Pipeline, Prompt  # noqa: E402
from ledger import Channel  # noqa: E402

N_ENV = "GL_BENCH_EMBED_N"
GROUP_ENV = "GL_BENCH_EMBED_GROUP"
DIMENSION = 768


def _items(day: date) -> list[int]:
    return list(range(int(os.environ[N_ENV])))


def _text(i: int) -> str:
    return f"Review {i}: the app crashes on start since the last update."


def _pipeline() -> Pipeline[int]:
    return Pipeline(
        name="bench-embeddings",
        model="gemini-embedding-001",
        channel=Channel.DIRECT,
        embedding=EmbeddingSettings(
            task_type="CLUSTERING",
            output_dimensionality=DIMENSION,
            group_size=int(os.environ.get(GROUP_ENV, "32")),
        ),
        load_items=_items,
        key_of=lambda i, day: f"bench-embeddings:{day.isoformat()}:{i:06d}:v1",
        build_prompt=lambda i: Prompt(text=_text(i)),
        on_result=lambda key, result: None,
    )


SPEC = "__main__:pipeline"


def _sdk_alone(emu: RunningEmulator, n: int, group: int, concurrency: int) -> float:
    from google.genai import types

    client = emu.client(api_key=os.environ["GEMINI_API_KEY"])
    config = types.EmbedContentConfig(
        task_type="CLUSTERING",
        output_dimensionality=DIMENSION,
        http_options=types.HttpOptions(retry_options=types.HttpRetryOptions(attempts=1)),
    )
    groups = [[_text(i) for i in range(s, min(s + group, n))] for s in range(0, n, group)]

    def call(texts: list[str]) -> int:
        out = client.models.embed_content(
            model="gemini-embedding-001", contents=texts, config=config
        )
        return len(out.embeddings or [])

    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        got = sum(pool.map(call, groups))
    elapsed = time.perf_counter() - t
    assert got == n, got
    return elapsed


_STEPS = ("recover", "collect", "deliver", "enroll", "submit")


def _step_seconds(flow_run_id: Any) -> list[tuple[str, float]]:
    """(step, seconds) of the tick's step task runs in the order they started, read from the
    Prefect server (it records task runs from their events: waited for, bounded)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs: list[Any] = []
    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            steps = [r for r in runs if r.name.rsplit("-", 1)[0] in _STEPS]
            if len(steps) >= len(_STEPS) + 1 and all(r.end_time for r in steps):
                break
            time.sleep(0.5)  # a poll of the server's records, not a synchronisation
    steps.sort(key=lambda r: r.start_time)
    return [
        (r.name.rsplit("-", 1)[0], (r.end_time - r.start_time).total_seconds())
        for r in steps
        if r.start_time and r.end_time
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="rows (embeddings) per figure")
    parser.add_argument("--group", type=int, default=32, help="inputs per embed call")
    parser.add_argument("--concurrency", type=int, default=8, help="calls at a time")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="per embed call")
    args = parser.parse_args()
    n, group = args.n, args.group
    os.environ[N_ENV], os.environ[GROUP_ENV] = str(n), str(group)
    globals()["pipeline"] = _pipeline()
    from ledger import Ledger

    Ledger(os.environ["LEDGER_DATABASE_URL"], create=True).dispose()

    from prefect.testing.utilities import prefect_test_harness

    scenario = {"name": "bench", "latency_ms": {"embed": {"mean": args.latency_ms}}}
    with RunningEmulator(scenario=scenario, seed=1) as emu, prefect_test_harness(120):
        for name, value in emu.env().items():
            os.environ[name] = value
        from flows.tick import tick

        print(
            f"embeddings, {n} rows, {group} per call, {args.concurrency} calls at a time,"
            f" emulator latency {args.latency_ms:g} ms per call, {DIMENSION} values"
        )
        sdk = _sdk_alone(emu, n, group, args.concurrency)
        print(f"SDK embed_content alone: {sdk:7.2f} s  {n / sdk:8.1f} embeddings/s")
        emu.reset()
        t = time.perf_counter()
        state = tick(
            pipeline=SPEC, day=date(2026, 1, 1), max_concurrency=args.concurrency, return_state=True
        )
        wall = time.perf_counter() - t
        report = state.result()
        assert report.submit.outcomes == {"done": n}, report.submit.outcomes
        calls = float(report.submit.calls_seconds)
        print(
            f"tick flow (ledger):      {wall:7.2f} s  {n / wall:8.1f} embeddings/s"
            f"  (call phase {calls:6.2f} s, {n / calls:8.1f} embeddings/s)"
        )
        print(f"ratio flow / SDK alone: wall x{sdk / wall:5.2f}, call phase x{sdk / calls:5.2f}")
        steps = _step_seconds(state.state_details.flow_run_id)
        parts = [f"{name} {seconds:.2f}" for name, seconds in steps]
        rest = wall - sum(seconds for _, seconds in steps)
        print(
            f"tick wall by step (s): {', '.join(parts)}; submit's calls {calls:.2f};"
            f" rest of the flow {rest:.2f}"
        )


if __name__ == "__main__":
    main()
