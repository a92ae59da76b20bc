"""Scale figures, each as a ratio to a floor measured in the same run, with the machine's load.

    python -m bench.scale                                # PostgreSQL 200,000 rows, 1M lines
    python -m bench.scale --pg-rows 100000 --lines 200000 --small 50000 --night 200000

- PostgreSQL bulk paths (COPY into a staging table, one set-based statement): enroll and
  apply results, against a plain COPY of the same rows into an unlogged table (goal >= 0.50);
  and apply results against the floor a correct design can reach: COPY into a staging table
  and one ``UPDATE ... FROM`` on the ledger's own schema and indexes (another database, the
  same rows through the same enroll, reserve and bind), without the compare-and-set
  predicate (goal >= 0.80);
- batch reconcile into SQLite with validation (``bench.reconcile``), against reading and
  ``orjson.loads`` alone (goal >= 0.40), and against the floor a correct design can reach:
  the slower of its two necessary halves, which can overlap on two cores, parse + validate
  of the same lines and the bare UPDATE of the same rows in a copy of the same ledger, in
  the same chunks and transactions, without the compare-and-set (goal >= 0.80); its memory
  growth from the small to the full size (goal within 50 MB), and the resubmission file
  against copying the same rows from the ledger to a file unchanged (goal >= 0.50);
- a big night's submission side: every due row reserved in jobs of ``--batch-rows``, each
  file split at ``--file-bytes``, against the same without the size limit; peak memory
  growth (enroll included) at a tenth of the rows and at all of them (flat: within 50 MB).

Shared machines are noisy: only the ratios mean something, and the load average printed at
the start and the end says how noisy this run was.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]
sys.path.insert(0, str(ROOT))

MODEL = "gemini-2.5-flash"


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min) on {os.cpu_count()} cores"


def postgres(rows: int) -> dict[str, float]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from bench.ledger import PG, run

    admin = create_engine(make_url(PG), isolation_level="AUTOCOMMIT")
    # The ledger's, and another for the UPDATE floor (the same schema and rows).
    names = [f"gl_scale_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        url, floor_url = (
            make_url(PG).set(database=name).render_as_string(hide_password=False) for name in names
        )
        return run(url, rows, "PostgreSQL", floor_url)
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# -- a big night's submission side -----------------------------------------------------------


def night_child(n: int, batch_rows: int, file_bytes: int | None) -> dict[str, Any]:
    """Enroll ``n`` rows, then reserve, write and bind them job by job as BatchChannel.submit does
    (no API): with ``file_bytes`` each file is cut at that size and the rest released."""
    import orjson

    from bench.reconcile import _maxrss_mb
    from flows.examples.reviews import ReviewLabel
    from flows.testing import write_requests
    from ledger import Ledger, NewJob

    with tempfile.TemporaryDirectory(prefix="gl-night-") as tmp:
        base = _maxrss_mb()
        ledger = Ledger(f"sqlite:///{Path(tmp) / 'ledger.db'}", chunk_size=50_000, create=True)
        payload = orjson.dumps(
            {"text": "The camera crashes after the update.", "system": "Label it."}
        ).decode()
        ledger.enroll(
            (NewJob(f"night:{i:08d}", payload) for i in range(n)),
            pipeline="night",
            channel="batch",
            model=MODEL,
        )
        schema = ReviewLabel.model_json_schema()
        t = time.perf_counter()
        jobs = sent = biggest = 0
        limit = batch_rows
        while True:
            reservation = f"gl-night-{jobs:05d}"
            if not ledger.reserve(
                pipeline="night", limit=limit, reservation=reservation, batch_model=MODEL
            ):
                ledger.release(reservation)
                break
            left_out: list[str] = []
            too_large: list[str] = []
            path = Path(tmp) / "requests.jsonl"
            with path.open("wb") as fh:
                rows = write_requests(
                    ((r.key, r.payload) for r in ledger.stream_reserved(reservation)),
                    schema,
                    fh,
                    max_bytes=file_bytes,
                    left_out=left_out if file_bytes else None,
                    too_large=too_large if file_bytes else None,
                )
            ledger.release_keys(reservation, left_out)
            size = path.stat().st_size
            biggest = max(biggest, size)
            if left_out and file_bytes:  # as BatchChannel.submit: reserve next what a file holds
                per_row = max(size / max(rows, 1), 1.0)
                limit = max(1, min(batch_rows, int(file_bytes / per_row * 0.97)))
            sent += ledger.bind_batch(reservation, name=f"batches/{reservation}")
            jobs += 1
        seconds = time.perf_counter() - t
        peak = _maxrss_mb()
        ledger.dispose()
    assert sent == n, (sent, n)
    return {
        "rows": sent,
        "jobs": jobs,
        "seconds": seconds,
        "biggest_file": biggest,
        "rss_growth_mb": peak - base,
    }


def _night(n: int, batch_rows: int, file_bytes: int | None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.scale", "--night-child", str(n)]
    cmd += ["--batch-rows", str(batch_rows), "--file-bytes", str(file_bytes or 0)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-rows", type=int, default=200_000)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--night", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=50_000)
    # About 760 bytes a request line here: 25 MB cuts every full job of 50,000 in two files.
    parser.add_argument("--file-bytes", type=int, default=25_000_000)
    parser.add_argument("--night-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.night_child:
        print(json.dumps(night_child(args.night_child, args.batch_rows, args.file_bytes or None)))
        return

    print(f"load at start: {_load()}", flush=True)
    lines: list[str] = []

    if args.pg_rows:
        pg = postgres(args.pg_rows)
        for step in ("enroll", "apply results"):
            ratio = pg[step] / pg[f"{step} floor"]
            lines.append(
                f"PostgreSQL {step:<14} {pg[step]:>10,.0f} rows/s / floor"
                f" {pg[f'{step} floor']:>10,.0f} (plain COPY, unlogged) = {ratio:.2f}"
                f"  goal >= 0.50 ({args.pg_rows:,} rows)"
            )
            if f"{step} cpu" in pg and f"{step} floor cpu" in pg:
                lines.append(
                    f"  by CPU (client + server backends): {pg[f'{step} cpu'] * 1e6:.1f} µs/row"
                    f" ({pg[f'{step} server cpu'] * 1e6:.1f} on the server) / floor"
                    f" {pg[f'{step} floor cpu'] * 1e6:.1f} µs/row"
                    f" = {pg[f'{step} floor cpu'] / pg[f'{step} cpu']:.2f}"
                )
        if "apply results update floor" in pg:
            rate, floor = pg["apply results"], pg["apply results update floor"]
            lines.append(
                f"PostgreSQL apply results  {rate:>10,.0f} rows/s / floor {floor:>10,.0f}"
                " (COPY to staging + one UPDATE ... FROM, same schema and rows, no"
                f" compare-and-set) = {rate / floor:.2f}  goal >= 0.80"
            )
            if "apply results update floor cpu" in pg and "apply results cpu" in pg:
                mine, floor_cpu = pg["apply results cpu"], pg["apply results update floor cpu"]
                lines.append(
                    f"  by CPU (client + server backends): {mine * 1e6:.1f} µs/row / floor"
                    f" {floor_cpu * 1e6:.1f} µs/row = {floor_cpu / mine:.2f}"
                )

    if args.lines:
        from bench.reconcile import measure, necessary_floor, report

        m = measure(args.lines, args.small)
        report(m)
        proc = m["proc"]
        p_wall = float(proc["lines"]) / float(proc["seconds"])
        p_bound = float(proc["lines"]) / max(
            float(proc["main_cpu_seconds"]), float(proc["child_cpu_seconds"])
        )
        floor = float(m["floor_rate"])
        lines.append(
            f"reconcile (validate, SQLite, writer process) {p_wall:>10,.0f} lines/s / floor"
            f" {floor:>10,.0f} (read + orjson.loads) = {p_wall / floor:.2f}  goal >= 0.40"
            f" ({args.lines:,} lines; given a free core: {p_bound / floor:.2f})"
        )
        lines.append(
            f"reconcile (validate, SQLite, writer thread)  {m['rate']:>10,.0f} lines/s / floor"
            f" {floor:>10,.0f} = {m['rate'] / floor:.2f}"
        )
        need = necessary_floor(m)
        n_lines = float(proc["lines"])
        lines.append(
            f"reconcile (validate, SQLite, writer process) {p_wall:>10,.0f} lines/s / floor"
            f" {n_lines / need['wall_s']:>10,.0f} (the slower of parse + validate"
            f" {n_lines / float(m['validate_wall_s']):,.0f} and the bare UPDATE"
            f" {n_lines / float(m['bare']['seconds']):,.0f}) = {need['process']:.2f}"
            f"  goal >= 0.80 (by CPU, given a free core: {need['process_cpu']:.2f})"
        )
        lines.append(
            f"reconcile (validate, SQLite, writer thread)  {m['rate']:>10,.0f} lines/s / floor"
            f" {n_lines / need['wall_s']:>10,.0f} = {need['thread']:.2f}"
        )
        lines.append(
            f"parse + validate alone (no database)         {m['validate_rate']:>10,.0f} lines/s"
            f" / floor {floor:>10,.0f} = {m['validate_rate'] / floor:.2f}"
        )
        growth = float(m["full"]["rss_growth_mb"]) - float(m["small"]["rss_growth_mb"])
        lines.append(
            f"reconcile memory growth {args.small:,} -> {args.lines:,} lines: {growth:+.1f} MB"
            "  goal within 50 MB"
        )
        rows = int(m["resub_rows"])
        write, floor_s = float(m["resub_write_s"]), float(m["resub_floor_s"])
        lines.append(
            f"resubmission file {rows / write:>10,.0f} rows/s / floor {rows / floor_s:>10,.0f}"
            f" (the same rows copied unchanged) = {floor_s / write:.2f}  goal >= 0.50"
        )

    if args.night:
        split = _night(args.night, args.batch_rows, args.file_bytes)
        whole = _night(args.night, args.batch_rows, None)
        tenth = _night(max(args.night // 10, 1), args.batch_rows, args.file_bytes)
        lines.append(
            f"big night, {args.night:,} rows in {split['jobs']} jobs of <= {args.batch_rows:,}"
            f" rows and <= {args.file_bytes:,} bytes (largest file {split['biggest_file']:,}):"
            f" {split['rows'] / split['seconds']:,.0f} rows/s / floor"
            f" {whole['rows'] / whole['seconds']:,.0f} (no size limit, {whole['jobs']} jobs)"
            f" = {whole['seconds'] / split['seconds']:.2f}"
        )
        lines.append(
            f"big night memory growth: {tenth['rss_growth_mb']:.1f} MB at {tenth['rows']:,} rows,"
            f" {split['rss_growth_mb']:.1f} MB at {split['rows']:,}"
            f" ({split['rss_growth_mb'] - tenth['rss_growth_mb']:+.1f} MB)  goal within 50 MB"
        )

    print()
    print("scale figures, each a ratio to a floor measured in this run:")
    for line in lines:
        print(f"  {line}")
    print(f"load at end: {_load()}")


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    main()
