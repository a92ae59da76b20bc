"""Direct channel throughput: N generate_content calls at 50 ms emulator latency.

    python bench/direct.py                          # 1,000 calls; pools of 1, 8 and 32
    python bench/direct.py --n 200 --concurrency 8

Every figure uses fresh keys against the same emulator (a real subprocess, 50 ms latency on
generateContent, no faults) and a temporary Prefect server:

- ``raw sequential``: the same calls made one after another with the SDK alone (same
  request, same per-key header), no ledger, no Prefect: the floor;
- ``task body sequential``: the direct task's body (reserve, bind, call, validate, record)
  one job after another, without Prefect;
- ``flow, N workers``: the ``tick`` flow with ``max_concurrency=N`` (enrolment,
  sweep and delivery included in the wall time; the call phase timed on its own too).

Prefect's overhead per task is the difference between the 1-worker flow's call phase and
the task body run sequentially, divided by N. Prints numbers and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

# Run as `python bench/direct.py`: put the project first and drop this folder (its
# ledger.py would shadow the ledger package).
_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(_ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != _ROOT / "bench"]

_TMP = tempfile.mkdtemp(prefix="gl-bench-direct-")
os.environ.setdefault("PREFECT_HOME", str(Path(_TMP) / "prefect"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("PREFECT_API_URL", None)
# The server records task runs one at a time by default (its recorder settings): batch them.
os.environ["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE"] = "200"
os.environ["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE"] = "200"
os.environ["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL"] = "1"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
# The temporary server is stopped while its recorder may still flush: not a bench result.
os.environ["PREFECT_SERVER_LOGGING_LEVEL"] = "CRITICAL"
os.environ["LEDGER_DATABASE_URL"] = f"sqlite:///{Path(_TMP) / 'ledger.db'}"
os.environ.setdefault("GEMINI_API_KEY", "bench-key-not-secret")

from pydantic import BaseModel  # noqa: E402

from emulator.testing import RunningEmulator  # noqa: E402
from flows.pipeline import Pipeline, Prompt  # noqa: E402
from ledger import Channel  # noqa: E402

N_ENV = "GL_BENCH_DIRECT_N"


class Label(BaseModel):
    label: str
    confidence: float


def _items(day: date) -> list[int]:
    return list(range(int(os.environ[N_ENV])))


pipeline: Pipeline[int] = Pipeline(
    name="bench-direct",
    model="gemini-2.5-flash",
    channel=Channel.DIRECT,
    output=Label,
    load_items=_items,
    key_of=lambda i, day: f"bench-direct:{day.isoformat()}:{i:06d}:v1",
    build_prompt=lambda i: Prompt(text=f"Classify review {i}: it crashes on start.", system="JSON"),
    on_result=lambda key, result: None,
)
SPEC = "__main__:pipeline"


def _raw_sequential(n: int, day: date) -> float:
    from flows.testing import direct_client, direct_config

    client = direct_client()
    t = time.perf_counter()
    for i in range(n):
        prompt = pipeline.build_prompt(i)
        client.models.generate_content(
            model=pipeline.model,
            contents=prompt.text,
            config=direct_config(pipeline, prompt, pipeline.key_of(i, day)),
        )
    return time.perf_counter() - t


def _body_sequential(n: int, day: date) -> float:
    from flows.channels.direct import Calls, generate_content
    from flows.settings import load_settings
    from flows.tick import start_run
    from ledger import NewJob

    ctx = start_run(SPEC, load_settings(), day)
    calls = Calls(ctx)
    ledger = ctx.ledger
    keys = [pipeline.key_of(i, day) for i in range(n)]
    ledger.enroll(
        (NewJob(k, pipeline.build_prompt(i).model_dump_json()) for i, k in enumerate(keys)),
        pipeline=pipeline.name,
        channel="direct",
        model=pipeline.model,
    )
    t = time.perf_counter()
    for key in keys:
        out = generate_content.fn(SPEC, key, calls)
        assert out["status"] == "done", out
    elapsed = time.perf_counter() - t
    ledger.consume(keys)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="calls per measurement")
    parser.add_argument("--concurrency", default="1,8,32", help="flow pool sizes to run")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    args = parser.parse_args()
    n = args.n
    from ledger import Ledger

    Ledger(os.environ["LEDGER_DATABASE_URL"], create=True).dispose()  # on purpose only
    os.environ[N_ENV] = str(n)
    pools = [int(c) for c in args.concurrency.split(",") if c]

    from prefect.testing.utilities import prefect_test_harness

    scenario = {"name": "bench", "latency_ms": {"generate": {"mean": args.latency_ms}}}
    with RunningEmulator(scenario=scenario, seed=1) as emu, prefect_test_harness(120):
        for name, value in emu.env().items():
            os.environ[name] = value
        from flows.tick import tick

        day = date(2026, 1, 1)
        print(f"direct channel, {n} calls, emulator latency {args.latency_ms:g} ms per call")

        raw = _raw_sequential(n, day - timedelta(days=1000))
        print(f"raw SDK, sequential:      {raw:7.2f} s  {n / raw:7.1f} jobs/s")
        body = _body_sequential(n, day - timedelta(days=999))
        print(
            f"task body, sequential:    {body:7.2f} s  {n / body:7.1f} jobs/s"
            f"  (ledger work {1000 * (body - raw) / n:5.1f} ms/job)"
        )

        results: dict[int, tuple[float, float]] = {}
        for k, workers in enumerate(pools):
            emu.reset()
            t = time.perf_counter()
            report = tick(pipeline=SPEC, day=day + timedelta(days=k), max_concurrency=workers)
            wall = time.perf_counter() - t
            assert report.submit.outcomes == {"done": n}, report.submit.outcomes
            calls = float(report.submit.calls_seconds)
            results[workers] = (wall, calls)
            sent = sum(emu.stats()["submissions"].values())
            print(
                f"flow, {workers:3d} workers:       {wall:7.2f} s  {n / wall:7.1f} jobs/s"
                f"  (call phase {calls:6.2f} s, {n / calls:7.1f} jobs/s;"
                f" {sent} submissions; x{raw / wall:5.2f} vs raw sequential)"
            )
        if 1 in results:
            overhead = (results[1][1] - body) / n
            print(
                f"Prefect overhead per task (1-worker call phase - task body) / n:"
                f" {1000 * overhead:6.1f} ms"
            )


if __name__ == "__main__":
    main()
