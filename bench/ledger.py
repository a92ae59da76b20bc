"""Ledger throughput: enroll, reserve-and-bind, and applying results in bulk.

    python bench/ledger.py                      # SQLite 1,000,000 jobs, PostgreSQL 100,000
    python bench/ledger.py --sqlite-rows 200000 --pg-rows 0

Prints rows per second for each step. PostgreSQL comes from LEDGER_TEST_POSTGRES_URL
(default: the local server); a scratch database is created and dropped.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

# Run as `python bench/ledger.py`, this file's folder comes first on sys.path and its name
# would shadow the `ledger` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from ledger import Ledger, NewJob, ResultRow  # noqa: E402

PG = os.environ.get("LEDGER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RESULT = '{"category":"bug","sentiment":"negative","confidence":0.91}'


def items(n: int) -> Iterator[NewJob]:
    for i in range(n):
        text_ = f"Review {i}: the app crashes when I open the camera after the update."
        yield NewJob(
            f"reviews:2026-11-22:review-{i:08d}:v1",
            f'{{"text":"{text_}","system":"Classify this app review."}}',
        )


def run(url: str, n: int, label: str) -> dict[str, float]:
    ledger = Ledger(url)
    # Inputs and results are built before each clock starts: the figures are the ledger's.
    jobs = list(items(n))
    t = time.perf_counter()
    ledger.enroll(jobs, pipeline="reviews", channel="batch", model="gemini-2.5-flash")
    enroll_s = time.perf_counter() - t

    t = time.perf_counter()
    claimed = ledger.reserve(
        pipeline="reviews", limit=n, reservation="bench-1", batch_model="gemini-2.5-flash"
    )
    bound = ledger.bind_batch("bench-1", name="batches/bench-1")
    reserve_s = time.perf_counter() - t
    assert claimed == bound == n, (claimed, bound)

    results = [ResultRow(job.key, RESULT, 40, 12, 52) for job in jobs]
    t = time.perf_counter()
    applied = 0
    for start in range(0, n, ledger.chunk_size):  # as reconcile applies them: chunk by chunk
        applied += ledger.apply_results(
            results[start : start + ledger.chunk_size], handle="batches/bench-1"
        )
    apply_s = time.perf_counter() - t
    assert applied == n, applied
    ledger.dispose()
    figures = {"enroll": n / enroll_s, "reserve+bind": n / reserve_s, "apply results": n / apply_s}
    print(f"{label} ({n:,} jobs)")
    for name, rate in figures.items():
        print(f"  {name:<14} {rate:>12,.0f} rows/s")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sqlite-rows", type=int, default=1_000_000)
    parser.add_argument("--pg-rows", type=int, default=100_000)
    args = parser.parse_args()
    if args.sqlite_rows:
        with tempfile.TemporaryDirectory() as tmp:
            run(f"sqlite:///{Path(tmp) / 'bench.db'}", args.sqlite_rows, "SQLite")
    if args.pg_rows:
        admin = create_engine(make_url(PG), isolation_level="AUTOCOMMIT")
        name = f"gl_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = make_url(PG).set(database=name).render_as_string(hide_password=False)
            run(url, args.pg_rows, "PostgreSQL")
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
