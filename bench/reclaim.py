"""Background channel figures: the reclaim step, and the ledger's share of a tick.

    python bench/reclaim.py                          # both parts, the issue's sizes
    python bench/reclaim.py --part reclaim --n 1000 --latency-ms 50
    python bench/reclaim.py --part ledger --settled 10000,1000000

Part 1 (reclaim): N interactions outstanding in the ledger, the emulator answering every
``interactions.get`` after ``--latency-ms``. Times the collect step (``BackgroundChannel.collect``:
bounded concurrent polls on the SDK's async client, then the bulk ledger apply) against
polling the same interactions one after another with the SDK's client (``get`` per handle,
the obvious loop), and against the same raw-response poller with one request in flight.

Part 2 (ledger share): a ledger holding S settled (consumed) rows of the pipeline plus 10
outstanding interactions; one tick (the flow's steps, without Prefect's own overhead) reclaims,
delivers and enrolls. Every Ledger call the tick makes is timed: the ledger's share should
not grow with S.

Everything talks to a real emulator subprocess through the real google-genai SDK; the ledger
is a SQLite file in a temporary directory.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

# Run as `python bench/reclaim.py`, this file's folder comes first on sys.path; put the project
# root there instead so `ledger`, `flows` and `emulator` resolve to the packages.
_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(_ROOT)] + [
    p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent
]

from sqlalchemy import text  # noqa: E402

from emulator.testing import RunningEmulator  # noqa: E402
from ledger import Ledger, NewJob  # noqa: E402

PIPELINE = "articles"
DAY = date(2026, 11, 22)


def _setup_env(tmp: Path, emu: RunningEmulator) -> None:
    os.environ.update(emu.env())
    os.environ["LEDGER_DATABASE_URL"] = f"sqlite:///{tmp / 'ledger.db'}"
    from ledger import Ledger

    Ledger(os.environ["LEDGER_DATABASE_URL"], create=True).dispose()  # on purpose only
    os.environ["ARTICLES_DIR"] = str(tmp / "articles")


def _jobs(n: int, prefix: str) -> Iterator[NewJob]:
    from flows.examples.articles import build_prompt

    for i in range(n):
        yield NewJob(
            f"articles:{prefix}:topic-{i:07d}:v1",
            build_prompt(f"topic number {i}").model_dump_json(),
        )


def _channel(concurrency: int = 32) -> Any:
    """The background channel of the bench's pipeline, as a tick opens it (no Prefect run:
    the steps log to a plain logger)."""
    from flows.settings import load_settings
    from flows.tick import TickOptions, open_channel, start_run

    ctx = start_run(PIPELINE, load_settings(), DAY)
    return open_channel(ctx, TickOptions(max_concurrency=concurrency))


def _submit_outstanding(ledger: Ledger, n: int, prefix: str) -> None:
    """Enroll n jobs, reserve them and create their interactions (bound), as a tick does."""
    from flows.channels.background import submit_reserved
    from flows.gemini.gateway import gemini_client, shared_client
    from flows.registry import get_pipeline
    from flows.settings import load_settings

    settings = load_settings()
    p = get_pipeline(PIPELINE, settings)
    ledger.enroll(_jobs(n, prefix), pipeline=PIPELINE, channel="background", model=p.model)
    token = f"bench-{prefix}"
    ledger.reserve(pipeline=PIPELINE, limit=n, reservation=token)
    rows = list(ledger.reserved(token))
    out = submit_reserved(
        p,
        ledger,
        rows,
        reservation=token,
        max_concurrency=32,
        client_factory=lambda: gemini_client(settings),
        run_client=lambda: shared_client(settings),
    )
    assert out["submitted"] == n, out


# --- part 1 ---------------------------------------------------------------------------------


def part_reclaim(n: int, latency_ms: float, concurrency: int) -> None:
    from flows.examples.articles import Article
    from flows.gemini.gateway import gemini_client
    from flows.settings import load_settings
    from flows.testing import Handle, open_ledger, poll_all

    print(f"\n== reclaim: {n} outstanding interactions, {latency_ms:g} ms per interactions.get ==")
    with tempfile.TemporaryDirectory() as tmp, RunningEmulator(scenario="clean") as emu:
        _setup_env(Path(tmp), emu)
        ledger = open_ledger(load_settings().database_url)
        t = time.perf_counter()
        _submit_outstanding(ledger, n, "reclaim")
        print(f"setup: {n} interactions created and bound in {time.perf_counter() - t:.1f} s")
        emu.set_scenario({"name": "slow-get", "latency_ms": {"interactions.get": latency_ms}})
        handles = ledger.outstanding(pipeline=PIPELINE)

        client = gemini_client(load_settings())
        t = time.perf_counter()
        for _key, handle, _at in handles:
            client.interactions.get(handle)
        sequential_sdk = time.perf_counter() - t

        jobs = [Handle(k, h, at or 0.0) for k, h, at in handles]
        t = time.perf_counter()
        poll_all(
            jobs,
            Article,
            max_concurrency=1,
            client_factory=lambda: gemini_client(load_settings()),
        )
        sequential_raw = time.perf_counter() - t

        channel = _channel(concurrency)  # as the tick opens it, before the step is timed
        t, cpu = time.perf_counter(), time.process_time()
        report = channel.collect()
        step, cpu = time.perf_counter() - t, time.process_time() - cpu
        assert report.completed == n, report
        gets = emu.stats()["requests"]["GET /v1/interactions/{id}"]
        assert gets == 3 * n, gets  # each handle polled once per method: no hidden retries

    floor = n * latency_ms / 1000 / concurrency
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, load average {load} (other work shares them)")
    print(f"one after another, SDK client .get():        {sequential_sdk:7.2f} s")
    print(f"one after another, this poller (1 in flight): {sequential_raw:7.2f} s")
    print(
        f"reclaim step, {concurrency} in flight (+ bulk apply): {step:7.2f} s"
        f"   (poll {report.poll_seconds:.2f} s, {cpu:.2f} s CPU in this process;"
        f" latency floor {floor:.2f} s)"
    )
    print(
        f"speed-up: {sequential_sdk / step:5.1f}x vs the SDK loop,"
        f" {sequential_raw / step:5.1f}x vs the same poller one at a time (goal >= 10x)"
    )


# --- part 2 ---------------------------------------------------------------------------------


class LedgerTimer:
    """Wraps every public Ledger method the tick calls and sums the time spent inside."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> LedgerTimer:
        for name in dir(Ledger):
            attr = getattr(Ledger, name)
            if name.startswith("_") or not callable(attr) or name == "reserved":
                continue
            self._saved[name] = attr
            setattr(Ledger, name, self._wrap(name, attr))
        return self

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t
                self.calls[name] += 1

        return timed

    def __exit__(self, *exc: object) -> None:
        for name, fn in self._saved.items():
            setattr(Ledger, name, fn)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def _settle(ledger: Ledger, n: int) -> None:
    from flows.settings import load_settings

    """n consumed rows of the pipeline (bulk: enroll, then one UPDATE), plus today's topics."""
    from flows.registry import get_pipeline
    from flows.testing import enroll_day

    chunk = 200_000
    for start in range(0, n, chunk):
        ledger.enroll(
            (
                NewJob(f"articles:2026-01-01:old-{i:08d}:v1", '{"text":"an old topic"}')
                for i in range(start, min(n, start + chunk))
            ),
            pipeline=PIPELINE,
            channel="background",
            model="gemini-2.5-flash",
        )
    # Today's topics exist already: the tick adds none.
    enroll_day(ledger, get_pipeline(PIPELINE, load_settings()), DAY)
    with ledger.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE jobs SET status = 'consumed', attempts = 1, consumed_at = :t,"
                " done_at = :t, submitted_at = :t, result = '{}' WHERE pipeline = :p"
            ),
            {"t": time.time() - 3600, "p": PIPELINE},
        )


def _one_tick(settled: int) -> tuple[float, float, LedgerTimer]:
    from flows.settings import load_settings
    from flows.testing import enroll_day, open_ledger

    with tempfile.TemporaryDirectory() as tmp, RunningEmulator(scenario="clean") as emu:
        _setup_env(Path(tmp), emu)
        ledger = open_ledger(load_settings().database_url)
        t = time.perf_counter()
        _settle(ledger, settled)
        _submit_outstanding(ledger, 10, "outstanding")
        setup = time.perf_counter() - t
        with LedgerTimer() as timer:
            t = time.perf_counter()
            channel = _channel()
            channel.recover()
            reclaimed = channel.collect()
            delivered = channel.deliver()
            enrolled = enroll_day(ledger, channel.ctx.pipeline, DAY)
            submitted = channel.submit()
            wall = time.perf_counter() - t
        assert reclaimed.completed == 10 and delivered.consumed == 10, (reclaimed, delivered)
        assert enrolled.enrolled == 0 and submitted.reserved == 0, (enrolled, submitted)
        counts = ledger.counts(pipeline=PIPELINE).by_status
        assert counts.get("consumed") == settled + 10 + 40, counts
        ledger.dispose()
    return setup, wall, timer


def part_ledger(sizes: list[int]) -> None:
    print("\n== ledger share of one tick: settled rows + 10 outstanding ==")
    rows = []
    for settled in sizes:
        setup, wall, timer = _one_tick(settled)
        rows.append((settled, wall, timer))
        print(f"settled {settled:>9,}: setup {setup:6.1f} s")
    header = f"{'settled rows':>12} {'tick wall':>10} {'ledger':>8} {'share':>6}"
    print(f"{header}  slowest ledger calls")
    for settled, wall, timer in rows:
        top = sorted(timer.seconds.items(), key=lambda kv: -kv[1])[:4]
        detail = ", ".join(f"{k} {v * 1000:.1f} ms x{timer.calls[k]}" for k, v in top)
        share = timer.total / wall
        print(f"{settled:>12,} {wall:>9.3f}s {timer.total:>7.3f}s {share:>5.0%}  {detail}")
    if len(rows) > 1:
        small, large = rows[0][2].total, rows[-1][2].total
        print(
            f"ledger time {rows[-1][0]:,} vs {rows[0][0]:,} settled rows: {large / small:.2f}x"
            " (goal: under 0.2 s, not growing with settled rows)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["reclaim", "ledger", "both"], default="both")
    parser.add_argument("--n", type=int, default=1000, help="outstanding interactions")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--settled", default="10000,1000000", help="comma-separated sizes")
    args = parser.parse_args()
    if args.part in ("reclaim", "both"):
        part_reclaim(args.n, args.latency_ms, args.concurrency)
    if args.part in ("ledger", "both"):
        part_ledger([int(s) for s in args.settled.split(",")])


if __name__ == "__main__":
    main()
