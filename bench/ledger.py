"""Ledger throughput: enroll, reserve-and-bind, and applying results in bulk.

    python bench/ledger.py                      # SQLite 1,000,000 jobs, PostgreSQL 100,000
    python bench/ledger.py --sqlite-rows 200000 --pg-rows 0

Prints rows per second for each step; on PostgreSQL, each bulk step beside its floor
(a plain COPY of the same rows into an unlogged table, measured in the same run).
PostgreSQL comes from LEDGER_TEST_POSTGRES_URL (default: the local server); a scratch
database is created and dropped.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

# Run as `python bench/ledger.py`, this file's folder comes first on sys.path and its name
# would shadow the `ledger` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from ledger import Ledger, NewJob, ResultRow, fingerprint_of  # noqa: E402

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
    figures = {"enroll": n / enroll_s, "reserve+bind": n / reserve_s, "apply results": n / apply_s}
    floors: dict[str, float] = {}
    if ledger.engine.dialect.name == "postgresql":
        floors = copy_floors(ledger, jobs, results)
    ledger.dispose()
    print(f"{label} ({n:,} jobs)")
    for name, rate in figures.items():
        line = f"  {name:<14} {rate:>12,.0f} rows/s"
        if name in floors:
            line += (
                f"   floor (plain COPY, unlogged) {floors[name]:>10,.0f} rows/s,"
                f" ratio {rate / floors[name]:.2f}"
            )
        print(line)
    figures.update({f"{name} floor": rate for name, rate in floors.items()})
    return figures


def copy_floors(ledger: Ledger, jobs: list[NewJob], results: list[ResultRow]) -> dict[str, float]:
    """Rows/s of a plain COPY of the same rows into an unlogged table with no index: what
    no enroll or apply on PostgreSQL can beat. The rows are built before the clock starts
    (the ledger's own figures include building them), so the floor is a strict one."""
    now = time.time()
    enroll_rows = [
        (j.key, "reviews", "batch", "gemini-2.5-flash", p, fingerprint_of(p), now, now, now)
        for j in jobs
        for p in (j.payload if isinstance(j.payload, str) else "",)
    ]
    result_rows = [(r[0], "batches/bench-1", r[1], r[2], r[3], r[4]) for r in results]
    return {
        "enroll": _copy_rate(
            ledger,
            "key text, pipeline text, channel text, model text, payload text,"
            " fingerprint text, due_at float8, created_at float8, updated_at float8",
            enroll_rows,
        ),
        "apply results": _copy_rate(
            ledger, "key text, handle text, result text, p bigint, c bigint, t bigint", result_rows
        ),
    }


def _copy_rate(ledger: Ledger, columns: str, rows: Sequence[tuple[object, ...]]) -> float:
    table = f"gl_floor_{uuid.uuid4().hex[:8]}"
    with ledger.engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE UNLOGGED TABLE {table} ({columns})")
        conn.commit()
        try:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            t = time.perf_counter()
            with cursor.copy(f"COPY {table} FROM STDIN") as copy:
                write = copy.write_row
                for row in rows:
                    write(row)
            conn.commit()
            seconds = time.perf_counter() - t
            cursor.close()
        finally:
            conn.exec_driver_sql(f"DROP TABLE {table}")
            conn.commit()
    return len(rows) / seconds


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
