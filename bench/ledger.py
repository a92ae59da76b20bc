"""Ledger throughput: enroll, reserve-and-bind, and applying results in bulk.

    python bench/ledger.py                      # SQLite 1,000,000 jobs, PostgreSQL 100,000
    python bench/ledger.py --sqlite-rows 200000 --pg-rows 0

Prints rows per second for each step; on PostgreSQL, each bulk step beside its floor
(a plain COPY of the same rows into an unlogged table, measured in the same run), as a
wall-clock ratio and, when the server runs on this machine, as a ratio of CPU seconds
(this process's and the database's server backends'), which other load does not move.
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

from ledger import Ledger, NewJob, ResultRow, Status, fingerprint_of  # noqa: E402

PG = os.environ.get("LEDGER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RESULT = '{"category":"bug","sentiment":"negative","confidence":0.91}'


def items(n: int) -> Iterator[NewJob]:
    for i in range(n):
        text_ = f"Review {i}: the app crashes when I open the camera after the update."
        yield NewJob(
            f"reviews:2026-11-22:review-{i:08d}:v1",
            f'{{"text":"{text_}","system":"Classify this app review."}}',
        )


class CpuClock:
    """CPU seconds spent by this process and by the database's server backends (PostgreSQL
    on this machine, read from /proc), so that a bulk step and its floor can be compared by
    what they cost rather than by wall time, which on a shared machine swings with other
    people's load (measured here: the same COPY floor from 79,000 to 500,000 rows/s).

    ``server`` is None when the server's processes cannot be read (a remote database)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._tick = os.sysconf("SC_CLK_TCK")

    def _backends(self) -> dict[int, float] | None:
        with self.ledger.engine.connect() as conn:
            pids = [
                row[0]
                for row in conn.exec_driver_sql(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                    " AND backend_type = 'client backend'"
                )
            ]
        cpu: dict[int, float] = {}
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                return None
            cpu[pid] = (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime
        return cpu

    def start(self) -> tuple[float, dict[int, float] | None]:
        return time.process_time(), self._backends()

    def stop(self, started: tuple[float, dict[int, float] | None]) -> tuple[float, float | None]:
        """(client CPU seconds, server CPU seconds or None) since ``started``."""
        client = time.process_time() - started[0]
        before, after = started[1], self._backends()
        if before is None or after is None:
            return client, None
        return client, sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def run(url: str, n: int, label: str, floor_url: str | None = None) -> dict[str, float]:
    """Time each bulk step on the ledger at ``url``; on PostgreSQL, beside its COPY floors and,
    given ``floor_url`` (another empty database), the apply's UPDATE floor
    (:func:`update_floor`)."""
    ledger = Ledger(url, create=True)
    pg = ledger.engine.dialect.name == "postgresql"
    clock = CpuClock(ledger) if pg else None
    cpu: dict[str, float] = {}
    # Inputs and results are built before each clock starts: the figures are the ledger's.
    jobs = list(items(n))
    ledger.counts()  # a pooled connection, open before the clocks start
    started = clock.start() if clock else None
    t = time.perf_counter()
    ledger.enroll(jobs, pipeline="reviews", channel="batch", model="gemini-2.5-flash")
    enroll_s = time.perf_counter() - t
    if clock and started:
        _add_cpu(cpu, "enroll", n, clock.stop(started))

    t = time.perf_counter()
    claimed = ledger.reserve(
        pipeline="reviews", limit=n, reservation="bench-1", batch_model="gemini-2.5-flash"
    )
    bound = ledger.bind_batch("bench-1", name="batches/bench-1")
    reserve_s = time.perf_counter() - t
    assert claimed == bound == n, (claimed, bound)

    results = [ResultRow(job.key, RESULT, 40, 12, 52) for job in jobs]
    started = clock.start() if clock else None
    t = time.perf_counter()
    applied = 0
    for start in range(0, n, ledger.chunk_size):  # as reconcile applies them: chunk by chunk
        applied += ledger.apply_results(
            results[start : start + ledger.chunk_size], handle="batches/bench-1"
        )
    apply_s = time.perf_counter() - t
    if clock and started:
        _add_cpu(cpu, "apply results", n, clock.stop(started))
    assert applied == n, applied
    figures = {"enroll": n / enroll_s, "reserve+bind": n / reserve_s, "apply results": n / apply_s}
    floors: dict[str, float] = {}
    if clock:
        floors = copy_floors(ledger, jobs, results, clock, cpu)
    update: dict[str, float] = {}
    if pg and floor_url:
        update = update_floor(floor_url, jobs, results, ledger.chunk_size)
    ledger.dispose()
    print(f"{label} ({n:,} jobs)")
    for name, rate in figures.items():
        line = f"  {name:<14} {rate:>12,.0f} rows/s"
        if name in floors:
            line += (
                f"   floor (plain COPY, unlogged) {floors[name]:>10,.0f} rows/s,"
                f" ratio {rate / floors[name]:.2f}"
            )
        if f"{name} cpu" in cpu and f"{name} floor cpu" in cpu:
            line += f" (CPU: {cpu[f'{name} floor cpu'] / cpu[f'{name} cpu']:.2f})"
        print(line)
    if update:
        line = (
            f"  apply results  floor (COPY to staging + one UPDATE ... FROM, same schema and rows,"
            f" no compare-and-set) {update['rate']:>10,.0f} rows/s,"
            f" ratio {figures['apply results'] / update['rate']:.2f}"
        )
        if "apply results cpu" in cpu and "cpu" in update:
            line += f" (CPU: {update['cpu'] / cpu['apply results cpu']:.2f})"
        print(line)
        figures["apply results update floor"] = update["rate"]
        if "cpu" in update:
            figures["apply results update floor cpu"] = update["cpu"]
    figures.update({f"{name} floor": rate for name, rate in floors.items()})
    figures.update(cpu)
    return figures


def _add_cpu(cpu: dict[str, float], step: str, n: int, spent: tuple[float, float | None]) -> None:
    """Record a step's CPU seconds per row (client and server), when the server's are known."""
    client, server = spent
    if server is not None:
        cpu[f"{step} cpu"] = (client + server) / n
        cpu[f"{step} server cpu"] = server / n


def copy_floors(
    ledger: Ledger,
    jobs: list[NewJob],
    results: list[ResultRow],
    clock: CpuClock | None = None,
    cpu: dict[str, float] | None = None,
) -> dict[str, float]:
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
    spent: dict[str, tuple[float, float | None]] = {}
    rates = {
        "enroll": _copy_rate(
            ledger,
            "key text, pipeline text, channel text, model text, payload text,"
            " fingerprint text, due_at float8, created_at float8, updated_at float8",
            enroll_rows,
            clock,
            spent,
            "enroll floor",
        ),
        "apply results": _copy_rate(
            ledger,
            "key text, handle text, result text, p bigint, c bigint, t bigint",
            result_rows,
            clock,
            spent,
            "apply results floor",
        ),
    }
    if cpu is not None:
        for step, used in spent.items():
            _add_cpu(cpu, step, len(jobs), used)
    return rates


def update_floor(
    url: str, jobs: list[NewJob], results: list[ResultRow], chunk_size: int
) -> dict[str, float]:
    """What no apply of results on PostgreSQL can beat: per chunk (the ledger's chunk size,
    one transaction each, as reconcile applies them), COPY the rows into a temporary staging
    table and apply them with one ``UPDATE jobs ... FROM`` by key, writing the columns
    apply_results writes but without its compare-and-set predicate (status and handle),
    on the ledger's own schema and indexes in another database (``url``), whose rows went
    through the same enroll, reserve and bind first. Planned by key, as the ledger plans
    its own (a lookup per staged key, which stays flat as the ledger grows).

    Returns rows/s by wall clock and, when the server's processes can be read, the CPU
    seconds per row of this process and the server backends."""
    ledger = Ledger(url, create=True)
    ledger.enroll(jobs, pipeline="reviews", channel="batch", model="gemini-2.5-flash")
    ledger.reserve(
        pipeline="reviews", limit=len(jobs), reservation="bench-1", batch_model="gemini-2.5-flash"
    )
    assert ledger.bind_batch("bench-1", name="batches/bench-1") == len(jobs)
    rows = [(r[0], r[1], r[2], r[3], r[4]) for r in results]  # built before the clock starts
    clock = CpuClock(ledger)
    sql = (
        f"UPDATE jobs SET status = '{Status.DONE.value}', result = s.result, done_at = %(now)s,"
        " updated_at = %(now)s, error_class = NULL, reservation = NULL,"
        " prompt_tokens = jobs.prompt_tokens + s.p,"
        " candidates_tokens = jobs.candidates_tokens + s.c,"
        " total_tokens = jobs.total_tokens + s.t"
        " FROM gl_floor_stage s WHERE jobs.key = s.key"
    )
    applied = 0
    with ledger.engine.connect() as conn:
        # The driver's own connection: its commit ends each chunk's transaction (and drops
        # the staging table), which SQLAlchemy, not having begun it, would not send.
        raw = conn.connection.driver_connection
        assert raw is not None
        raw.commit()
        started = clock.start()
        t = time.perf_counter()
        for start in range(0, len(rows), chunk_size):
            with raw.cursor() as cursor:
                cursor.execute(
                    "CREATE TEMPORARY TABLE gl_floor_stage (key text, result text, p bigint,"
                    " c bigint, t bigint) ON COMMIT DROP"
                )
                with cursor.copy("COPY gl_floor_stage (key, result, p, c, t) FROM STDIN") as copy:
                    write = copy.write_row
                    for row in rows[start : start + chunk_size]:
                        write(row)
                cursor.execute("SET LOCAL enable_hashjoin = off")
                cursor.execute("SET LOCAL enable_mergejoin = off")
                cursor.execute(sql, {"now": time.time()})
                applied += cursor.rowcount
            raw.commit()
        seconds = time.perf_counter() - t
        client, server = clock.stop(started)
    ledger.dispose()
    assert applied == len(rows), (applied, len(rows))
    figures = {"rate": len(rows) / seconds}
    if server is not None:
        figures["cpu"] = (client + server) / len(rows)
    return figures


def _copy_rate(
    ledger: Ledger,
    columns: str,
    rows: Sequence[tuple[object, ...]],
    clock: CpuClock | None = None,
    spent: dict[str, tuple[float, float | None]] | None = None,
    step: str = "",
) -> float:
    table = f"gl_floor_{uuid.uuid4().hex[:8]}"
    with ledger.engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE UNLOGGED TABLE {table} ({columns})")
        conn.commit()
        try:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            started = clock.start() if clock else None
            t = time.perf_counter()
            with cursor.copy(f"COPY {table} FROM STDIN") as copy:
                write = copy.write_row
                for row in rows:
                    write(row)
            conn.commit()
            seconds = time.perf_counter() - t
            if clock and started and spent is not None:
                spent[step] = clock.stop(started)
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
