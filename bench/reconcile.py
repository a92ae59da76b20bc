"""Batch reconcile throughput and memory, and the resubmission file's write rate.

    python bench/reconcile.py                    # 1,000,000 lines (memory at 100k and 1M)
    python bench/reconcile.py --lines 200000     # a quicker run

Generates a batch output file with a production-like mix (most rows succeed; some 429/503,
400, safety blocks, empty answers, broken lines, rows missing, a few duplicate and unknown
keys), enrolls, reserves and binds the matching rows in a SQLite ledger, then prints:

- lines/s reconciled into SQLite, validating every answer against the reviews example's
  schema (``flows.channels._batch_reconcile.reconcile_lines``, what the flow runs);
- the floor: lines/s for only reading and JSON-decoding the same file, which no validating
  reconcile can beat, and the parse+validate rate without the database;
- the floor a correct design can reach: the slower of reconcile's two necessary halves,
  parse + validate of the same lines and the bare UPDATE of the same rows (a copy of the
  same ledger, the same chunks and transactions, no compare-and-set predicate), which can
  overlap on two cores; the ratio is floor time / reconcile time (goal >= 0.80);
- peak memory of the reconcile core at 100,000 and at the full size, each measured in its
  own subprocess (growth of its peak resident memory from just before the reconcile
  starts);
- rows/s writing a resubmission JSONL from the ledger's reserved rows.

Goals: >= 100,000 lines/s reconciled; memory within 50 MB between the two sizes;
>= 200,000 rows/s written to the resubmission file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, bench/ is first on sys.path and bench/ledger.py would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

HANDLE = "batches/bench"
RESERVATION = "gl-bench-00000000"
MODEL = "gemini-2.5-flash"
CATEGORIES = ("bug", "performance", "feature_request", "usability", "pricing", "praise", "other")
SENTIMENTS = ("positive", "neutral", "negative")

# The mix: share of rows per outcome (the rest succeed).
MIX = {
    "429": 0.02,
    "503": 0.02,
    "400": 0.01,
    "safety": 0.01,
    "empty": 0.01,
    "broken": 0.005,
    "missing": 0.005,
}


def key_of(i: int) -> str:
    return f"reviews:2026-11-22:rv-{i:08d}:v1"


def _usage(p: int, c: int) -> dict[str, int]:
    return {"promptTokenCount": p, "candidatesTokenCount": c, "totalTokenCount": p + c}


def _error(code: int, status: str, message: str) -> dict[str, object]:
    return {"code": code, "status": status, "message": message}


def make_output(path: Path, n: int, seed: int = 1) -> dict[str, int]:
    """Write an output file for rows 0..n-1; returns how many lines of each kind."""
    rng = random.Random(seed)
    kinds: dict[str, int] = {}
    thresholds = []
    acc = 0.0
    for kind, share in MIX.items():
        acc += share
        thresholds.append((acc, kind))
    with path.open("wb", buffering=1 << 20) as fh:
        buf: list[bytes] = []
        for i in range(n):
            u = rng.random()
            kind = next((k for t, k in thresholds if u < t), "ok")
            kinds[kind] = kinds.get(kind, 0) + 1
            key = key_of(i)
            if kind == "missing":
                continue
            if kind == "ok":
                answer = orjson.dumps(
                    {
                        "category": CATEGORIES[i % len(CATEGORIES)],
                        "sentiment": SENTIMENTS[i % 3],
                        "confidence": round(rng.random(), 3),
                    }
                ).decode()
                line = {
                    "key": key,
                    "response": {
                        "candidates": [
                            {
                                "content": {"parts": [{"text": answer}], "role": "model"},
                                "finishReason": "STOP",
                                "index": 0,
                            }
                        ],
                        "usageMetadata": _usage(40 + i % 60, 18),
                        "modelVersion": MODEL,
                        "responseId": f"r{i}",
                    },
                }
            elif kind == "429":
                line = {"key": key, "error": _error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.")}
            elif kind == "503":
                line = {"key": key, "error": _error(503, "UNAVAILABLE", "The model is overloaded.")}
            elif kind == "400":
                line = {"key": key, "error": _error(400, "INVALID_ARGUMENT", "Invalid argument.")}
            elif kind == "safety":
                line = {
                    "key": key,
                    "response": {
                        "candidates": [
                            {"content": {"role": "model"}, "finishReason": "SAFETY", "index": 0}
                        ],
                        "usageMetadata": _usage(50, 0),
                    },
                }
            elif kind == "empty":
                line = {
                    "key": key,
                    "response": {
                        "candidates": [
                            {
                                "content": {"parts": [{"text": ""}], "role": "model"},
                                "finishReason": "STOP",
                            }
                        ],
                        "usageMetadata": _usage(12, 0),
                    },
                }
            else:  # broken: a line cut in half
                whole = orjson.dumps({"key": key, "response": {"candidates": []}})
                buf.append(whole[: len(whole) // 2] + b"\n")
                continue
            buf.append(orjson.dumps(line) + b"\n")
            if len(buf) >= 8192:
                fh.write(b"".join(buf))
                buf.clear()
        # A few lines a real file may carry: duplicates and keys that were never sent.
        for i in range(0, min(n, 50)):
            buf.append(
                orjson.dumps({"key": key_of(i), "error": _error(503, "UNAVAILABLE", "dup")}) + b"\n"
            )
        for i in range(20):
            buf.append(orjson.dumps({"key": f"unknown:{i}", "error": _error(500, "INTERNAL", "x")}))
            buf.append(b"\n")
        fh.write(b"".join(buf))
    kinds["duplicate"] = min(n, 50)
    kinds["unknown"] = 20
    return kinds


def make_ledger(url: str, n: int) -> None:
    """Enroll rows 0..n-1, reserve them as one batch and bind it, as a tick would."""
    from ledger import Ledger, NewJob

    ledger = Ledger(url, chunk_size=50_000, create=True)
    payload = orjson.dumps(
        {
            "text": "The app crashes every time I open the camera after the update.",
            "system": "You label app-store reviews.",
            "temperature": 0.0,
        }
    ).decode()
    ledger.enroll(
        (NewJob(key_of(i), payload) for i in range(n)),
        pipeline="reviews",
        channel="batch",
        model=MODEL,
    )
    got = ledger.reserve(pipeline="reviews", limit=n, reservation=RESERVATION, batch_model=MODEL)
    assert got == n, got
    ledger.bind_batch(RESERVATION, name=HANDLE)
    _settle(ledger)
    ledger.dispose()


def _settle(ledger: Any) -> None:
    """Let the ledger's checkpoint thread finish the set-up's log before anything is timed."""
    from ledger.testing import checkpointer

    helper = checkpointer(ledger.engine)
    if helper is not None:
        helper.settle()


def _maxrss_mb() -> float:
    """This process's peak resident memory, in MB.

    VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's peak (Linux keeps it
    across fork and exec), so a bench whose parent had grown (bench.scale, after its
    PostgreSQL part) measured no growth at all; VmHWM belongs to the process's own memory.
    """
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def reconcile_once(url: str, output: Path, writer: str = "thread") -> dict[str, object]:
    """Reconcile ``output`` into the ledger at ``url`` (what the flow's core does)."""
    from flows.examples.reviews import ReviewLabel
    from flows.testing import iter_lines, reconcile_lines
    from ledger import Ledger, Policy

    ledger = Ledger(url)
    ledger.counts(pipeline="reviews")  # warm the connection and schema check
    # CPU time spent applying chunks (on the writer thread): a figure that other processes
    # competing for the cores do not distort, unlike wall time.
    apply_cpu = [0.0]
    for verb in ("apply_results", "apply_failures"):
        original = getattr(ledger, verb)

        def timed(*a: object, _f: object = original, **k: object) -> object:
            t0 = time.thread_time()
            try:
                return _f(*a, **k)  # type: ignore[operator]
            finally:
                apply_cpu[0] += time.thread_time() - t0

        setattr(ledger, verb, timed)
    base = _maxrss_mb()
    cpu0 = time.process_time()
    main0 = time.thread_time()
    t = time.perf_counter()
    counts = reconcile_lines(
        ledger,
        iter_lines(output),
        handle=HANDLE,
        reservation=RESERVATION,
        schema=ReviewLabel,
        policy=Policy(),
        scratch_dir=str(output.parent),
        writer=writer,  # type: ignore[arg-type]
    )
    seconds = time.perf_counter() - t
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the writer process, if any
    cpu = time.process_time() - cpu0
    main_cpu = time.thread_time() - main0
    peak = _maxrss_mb()
    return {
        "lines": counts.lines,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "apply_cpu_seconds": apply_cpu[0],
        "main_cpu_seconds": main_cpu,
        "child_cpu_seconds": children.ru_utime + children.ru_stime,
        "child_rss_mb": children.ru_maxrss / 1024.0,
        "writer_cpu_seconds": cpu - main_cpu,
        "applied": counts.succeeded + counts.failed,
        "rss_base_mb": base,
        "rss_peak_mb": peak,
        "rss_growth_mb": peak - base,
        "counts": counts.as_dict(),
    }


def parse_floor(output: Path) -> tuple[int, float, float, float]:
    """(lines, CPU seconds reading + orjson.loads only, wall and CPU seconds parse +
    validate, no database); single-threaded, so CPU seconds are what the work costs on one
    core."""
    from flows.testing import iter_lines

    loads = orjson.loads
    t = time.process_time()
    n = 0
    for line in iter_lines(output):
        with contextlib.suppress(orjson.JSONDecodeError):
            loads(line)
        n += 1
    decode_s = time.process_time() - t
    _, validate_wall, validate_cpu = parse_validate_time(output)
    return n, decode_s, validate_wall, validate_cpu


def parse_validate_time(output: Path) -> tuple[int, float, float]:
    """(lines, wall seconds, CPU seconds) of ``parse_output_line`` over every line: the first
    necessary half of reconcile, the same line model and output-schema validation."""
    from flows.examples.reviews import ReviewLabel
    from flows.testing import iter_lines
    from ledger import parse_output_line

    n = 0
    cpu = time.process_time()
    t = time.perf_counter()
    for line in iter_lines(output):
        parse_output_line(line, ReviewLabel)
        n += 1
    return n, time.perf_counter() - t, time.process_time() - cpu


def _bare_chunks(output: Path, chunk_size: int, now: float) -> Any:
    """The rows reconcile writes, chunk by chunk as it cuts them: (success params, failure
    params) for the bare UPDATEs, each sorted by key, each key's first line only (a later
    line for a key already written, which reconcile sends and the ledger refuses, is left
    out: a floor may know it)."""
    from flows.examples.reviews import ReviewLabel
    from flows.testing import iter_lines
    from ledger import LineSuccess, Status, Verdict, parse_output_line

    to_json = ReviewLabel.__pydantic_serializer__.to_json
    parked, retryable = Status.PARKED.value, Status.RETRYABLE.value
    written: set[str] = set()
    results: list[tuple[Any, ...]] = []
    failures: list[tuple[Any, ...]] = []
    for line in iter_lines(output):
        out = parse_output_line(line, ReviewLabel)
        key = out.key
        if key is None or key in written:
            continue
        written.add(key)
        p, c, t = out.usage[:3]  # the floor writes the three counts the bare UPDATE sets
        if type(out) is LineSuccess:
            results.append((to_json(out.result).decode(), now, now, p, c, t, key))
        else:
            failure = out.failure  # type: ignore[union-attr]
            # What the ledger's CASE decides from the row, decided here: on a fresh batch's
            # first attempt only a permanent verdict parks a row (the default caps).
            parks = failure.verdict is Verdict.PERMANENT
            failures.append(
                (
                    parked if parks else retryable,
                    failure.parked_class() if parks else failure.error_class,
                    now if parks else None,
                    int(failure.verdict is Verdict.UNKNOWN),
                    failure.message,
                    now,
                    now,
                    now + (failure.retry_delay or 0.0),
                    p,
                    c,
                    t,
                    now,
                    key,
                )
            )
        if len(results) + len(failures) >= chunk_size:
            yield sorted(results, key=_last), sorted(failures, key=_last)
            results, failures = [], []
    if results or failures:
        yield sorted(results, key=_last), sorted(failures, key=_last)


def _last(row: tuple[Any, ...]) -> Any:
    return row[-1]


# The columns apply_results and apply_failures write, by primary key alone: no compare-and-set
# on the status and handle, no CASE on the row's attempts.
_BARE_RESULT = (
    "UPDATE jobs SET status = '{done}', result = ?, done_at = ?, updated_at = ?,"
    " error_class = NULL, reservation = NULL, prompt_tokens = prompt_tokens + ?,"
    " candidates_tokens = candidates_tokens + ?, total_tokens = total_tokens + ?"
    " WHERE key = ?"
)
_BARE_FAILURE = (
    "UPDATE jobs SET status = ?, error_class = ?, parked_at = ?,"
    " unknown_failures = unknown_failures + ?, error_message = ?,"
    " first_failure_at = COALESCE(first_failure_at, ?), last_failure_at = ?, due_at = ?,"
    " reservation = NULL, prompt_tokens = prompt_tokens + ?,"
    " candidates_tokens = candidates_tokens + ?, total_tokens = total_tokens + ?,"
    " updated_at = ? WHERE key = ?"
)


def bare_update_time(url: str, output: Path, chunk_size: int | None = None) -> dict[str, float]:
    """The second necessary half of reconcile: the bare UPDATE of the same rows in the same
    SQLite ledger (a copy of it, every row still submitted), through the ledger's own engine
    (its pragmas and checkpoint thread), one transaction per chunk for the results and one
    for the failures as the ledger's bulk verbs take them, the rows sorted by key as the
    writer sorts them. The rows are built first; only the UPDATEs are timed, by wall clock
    and by the CPU of the whole process (its checkpoint thread included, as the writer
    process's CPU includes its own)."""
    from flows.testing import DEFAULT_CHUNK
    from ledger import Ledger, Status

    ledger = Ledger(url, migrate=False)
    ledger.counts(pipeline="reviews")  # warm the connection, as reconcile_once does
    chunks = list(_bare_chunks(output, chunk_size or DEFAULT_CHUNK, time.time()))
    _settle(ledger)
    result_sql = _BARE_RESULT.format(done=Status.DONE.value)
    rows = 0
    cpu = time.process_time()
    t = time.perf_counter()
    for results, failures in chunks:
        for sql, params in ((result_sql, results), (_BARE_FAILURE, failures)):
            if params:
                rows += _execute_many(ledger, sql, params)
    wall = time.perf_counter() - t
    cpu = time.process_time() - cpu
    ledger.dispose()
    return {"rows": rows, "seconds": wall, "cpu_seconds": cpu}


def _execute_many(ledger: Any, sql: str, params: list[tuple[Any, ...]]) -> int:
    """One write transaction as the ledger's verbs open one (BEGIN IMMEDIATE, and a poke of
    the checkpoint thread after the commit), holding one executemany on the driver's cursor."""
    from ledger.testing import checkpointer

    with ledger.engine.connect() as conn, conn.begin():
        cursor = conn.connection.driver_connection.cursor()
        try:
            cursor.executemany(sql, params)
            n = int(cursor.rowcount)
        finally:
            cursor.close()
    helper = checkpointer(ledger.engine)
    if helper is not None:
        helper.poke()
    return n


def resubmission_rate(url: str, n: int) -> tuple[int, float, float, float]:
    """(rows, seconds to reserve them, CPU seconds to write their JSONL from the ledger, CPU
    seconds of its floor).

    The floor reads the same reserved rows from the ledger the same way and writes each
    key and stored payload to a file as they are, building no request: the cost of moving
    the rows from the ledger to a file, which no request file can beat."""
    from flows.examples.reviews import ReviewLabel
    from flows.testing import write_requests
    from ledger import Ledger

    ledger = Ledger(url, chunk_size=50_000)
    t = time.perf_counter()
    # Every row of the fresh ledger is still pending under its own pipeline name.
    got = ledger.reserve(pipeline="resubmit", limit=n, reservation="gl-resubmit", batch_model=MODEL)
    reserve_s = time.perf_counter() - t
    # The reservation's log is still being checkpointed by the ledger's helper thread, whose
    # CPU time would count against the file writing measured below.
    _settle(ledger)
    # One untimed pass first: whichever of the two is measured first otherwise pays alone
    # for the first read of the just-reserved rows (measured at 1,000,000 rows: the file
    # at 0.48 of its floor when timed first, 0.58 when timed after a pass).
    assert sum(1 for _ in ledger.stream_reserved("gl-resubmit")) == got
    schema = ReviewLabel.model_json_schema()
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as fh:
        t = time.process_time()
        rows = write_requests(
            ((r.key, r.payload) for r in ledger.stream_reserved("gl-resubmit")), schema, fh
        )
        fh.flush()
        write_s = time.process_time() - t
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as fh:
        t = time.process_time()
        copied = _copy_rows(((r.key, r.payload) for r in ledger.stream_reserved("gl-resubmit")), fh)
        fh.flush()
        floor_s = time.process_time() - t
    assert rows == got == n == copied, (rows, got, n, copied)
    return rows, reserve_s, write_s, floor_s


def _copy_rows(rows: Any, out: Any) -> int:
    """Write ``key<TAB>payload`` lines unchanged, buffered as write_requests buffers."""
    n = 0
    buffer: list[bytes] = []
    for key, payload in rows:
        buffer.append(f"{key}\t{payload}\n".encode())
        n += 1
        if len(buffer) >= 4096:
            out.write(b"".join(buffer))
            buffer.clear()
    out.write(b"".join(buffer))
    return n


def _child(args: argparse.Namespace) -> None:
    if args.writer == "bare":
        print(json.dumps(bare_update_time(args.url, Path(args.output))))
        return
    print(json.dumps(reconcile_once(args.url, Path(args.output), args.writer)))


def _measure_in_subprocess(url: str, output: Path, writer: str = "thread") -> dict[str, Any]:
    """reconcile_once in a fresh process; ``writer="bare"``: bare_update_time instead."""
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            "--url",
            url,
            "--output",
            str(output),
            "--writer",
            writer,
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _setup(tmp: Path, n: int, label: str) -> tuple[str, Path, dict[str, int]]:
    url = f"sqlite:///{tmp / f'ledger-{label}.db'}"
    output = tmp / f"output-{label}.jsonl"
    t = time.perf_counter()
    kinds = make_output(output, n)
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    make_ledger(url, n)
    print(
        f"  {label}: output file {output.stat().st_size / 1e6:,.0f} MB written in {gen_s:.1f} s;"
        f" ledger enrolled, reserved and bound in {time.perf_counter() - t:.1f} s",
        flush=True,
    )
    return url, output, kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--writer", default="thread", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    report(measure(args.lines, args.small))


def measure(lines_n: int, small_n: int) -> dict[str, Any]:
    """Every figure of this bench, measured in one run (see the module's docstring)."""
    print(f"reconcile bench: {lines_n:,} lines (memory also at {small_n:,})", flush=True)
    with tempfile.TemporaryDirectory(prefix="gl-bench-") as tmp_name:
        tmp = Path(tmp_name)
        small_url, small_out, _ = _setup(tmp, small_n, "small")
        url, output, kinds = _setup(tmp, lines_n, "full")
        print(f"  mix: {dict(sorted(kinds.items()))}")

        small = _measure_in_subprocess(small_url, small_out)
        # The same file once more, applied by a writer process, on a copy of the ledger; and
        # the bare UPDATE floor on another copy, every row still submitted in each.
        copy = tmp / "ledger-copy.db"
        bare_copy = tmp / "ledger-bare.db"
        shutil.copyfile(url.removeprefix("sqlite:///"), copy)
        shutil.copyfile(url.removeprefix("sqlite:///"), bare_copy)
        full = _measure_in_subprocess(url, output)
        proc = _measure_in_subprocess(f"sqlite:///{copy}", output, "process")
        copy.unlink()
        bare = _measure_in_subprocess(f"sqlite:///{bare_copy}", output, "bare")
        bare_copy.unlink()
        lines = int(full["lines"])
        rate = lines / float(full["seconds"])
        n_floor, decode_s, validate_wall, validate_s = parse_floor(output)
        floor_rate = n_floor / decode_s
        validate_rate = n_floor / validate_s

        resub_url = f"sqlite:///{tmp / 'ledger-resubmit.db'}"
        from ledger import Ledger, NewJob

        payload = orjson.dumps(
            {
                "text": "Great app, but it drains my battery 🔋",
                "system": "Label it.",
                "temperature": 0.0,
            }
        ).decode()
        Ledger(resub_url, chunk_size=50_000, create=True).enroll(
            (NewJob(key_of(i), payload) for i in range(lines_n)),
            pipeline="resubmit",
            channel="batch",
            model=MODEL,
        )
        rows, reserve_s, write_s, resub_floor_s = resubmission_rate(resub_url, lines_n)
    return {
        "lines_n": lines_n,
        "small_n": small_n,
        "small": small,
        "full": full,
        "proc": proc,
        "floor_rate": floor_rate,
        "validate_rate": validate_rate,
        "validate_wall_s": validate_wall,
        "validate_cpu_s": validate_s,
        "bare": bare,
        "resub_rows": rows,
        "resub_reserve_s": reserve_s,
        "resub_write_s": write_s,
        "resub_floor_s": resub_floor_s,
        "rate": rate,
        "lines": lines,
    }


def necessary_floor(m: dict[str, Any]) -> dict[str, float]:
    """The floor a correct reconcile can reach: the slower of its two necessary halves, parse
    + validate of the lines and the bare UPDATE of the same rows, which can overlap on two
    cores; in wall seconds (each half timed alone) and in CPU seconds, with the ratios of the
    reconcile's writer thread and writer process to it (floor time / reconcile time)."""
    bare, full, proc = m["bare"], m["full"], m["proc"]
    wall = max(float(m["validate_wall_s"]), float(bare["seconds"]))
    cpu = max(float(m["validate_cpu_s"]), float(bare["cpu_seconds"]))
    busier = max(float(proc["main_cpu_seconds"]), float(proc["child_cpu_seconds"]))
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "thread": wall / float(full["seconds"]),
        "process": wall / float(proc["seconds"]),
        "process_cpu": cpu / busier,
    }


def report(m: dict[str, Any]) -> None:
    """Print the figures of :func:`measure`."""
    small, full, proc = m["small"], m["full"], m["proc"]
    lines, rate, floor_rate, validate_rate = (
        m["lines"],
        m["rate"],
        m["floor_rate"],
        m["validate_rate"],
    )
    rows, reserve_s, write_s = m["resub_rows"], m["resub_reserve_s"], m["resub_write_s"]
    small_n, lines_n = m["small_n"], m["lines_n"]

    growth_small = float(small["rss_growth_mb"])
    growth_full = float(full["rss_growth_mb"])
    cpu = float(full["cpu_seconds"])
    apply_cpu = float(full["apply_cpu_seconds"])
    applied = int(full["applied"])
    load = os.getloadavg()[0]
    print()
    print(
        f"machine: {os.cpu_count()} cores, load average {load:.1f} at the end (wall-clock"
        " rates fall with the load; CPU-time rates do not)"
    )
    print(
        f"reconciled into SQLite, writer thread, wall:   {rate:>10,.0f} lines/s"
        f"  ({lines:,} lines in {float(full['seconds']):.1f} s; parse + validate + apply)"
    )
    print(f"  per CPU-second of the process (both threads):         {lines / cpu:>10,.0f} lines/s")
    print(
        "  of which the ledger's bulk UPDATEs (writer thread):   "
        f"{applied / apply_cpu:>10,.0f} rows per CPU-second ({apply_cpu / cpu:.0%} of the CPU)"
    )
    main_cpu = float(full["main_cpu_seconds"])
    writer_cpu = float(full["writer_cpu_seconds"])
    print(
        f"  parsing thread {main_cpu:.1f} CPU s, writer thread {writer_cpu:.1f} CPU s: the wall"
        f" rate cannot beat the busier thread, {lines / max(main_cpu, writer_cpu):,.0f} lines/s"
    )
    p_lines, p_wall = int(proc["lines"]), float(proc["seconds"])
    p_main, p_child = float(proc["main_cpu_seconds"]), float(proc["child_cpu_seconds"])
    print(
        f"reconciled into SQLite, writer process, wall:  {p_lines / p_wall:>10,.0f} lines/s"
        "  goal >= 100,000 (what the flow uses for files >= 64 MB)"
    )
    print(
        f"  parser {p_main:.1f} CPU s, writer process {p_child:.1f} CPU s: bound"
        f" {p_lines / max(p_main, p_child):,.0f} lines/s given a free core"
        f" (writer process peak rss {float(proc['child_rss_mb']):.0f} MB)"
    )
    print(f"floor, read + orjson.loads only (CPU):                  {floor_rate:>10,.0f} lines/s")
    p_bound = p_lines / max(p_main, p_child)
    print(
        f"  ratios to the floor: writer thread {rate / floor_rate:.2f}, writer process"
        f" {p_lines / p_wall / floor_rate:.2f} (wall; goal >= 0.40), writer process given a"
        f" free core {p_bound / floor_rate:.2f} (CPU)"
    )
    print(
        f"parse + validate, no database (CPU):                    {validate_rate:>10,.0f} lines/s"
        f"  (the parsing thread of reconcile runs at {lines / main_cpu / validate_rate:.0%} of it)"
    )
    bare, need = m["bare"], necessary_floor(m)
    print(
        f"bare UPDATE of the same {int(bare['rows']):,} rows, same ledger and chunks, no"
        f" compare-and-set: {float(bare['seconds']):.1f} s wall, {float(bare['cpu_seconds']):.1f}"
        f" CPU s; parse + validate {float(m['validate_wall_s']):.1f} s wall,"
        f" {float(m['validate_cpu_s']):.1f} CPU s"
    )
    print(
        f"  floor, the slower half: {need['wall_s']:.1f} s wall ({need['cpu_s']:.1f} CPU s);"
        f" ratios floor / reconcile: writer process {need['process']:.2f}, writer thread"
        f" {need['thread']:.2f} (wall; goal >= 0.80), writer process given a free core"
        f" {need['process_cpu']:.2f} (CPU)"
    )
    print(
        f"peak memory growth, {small_n:,} lines:   {growth_small:6.1f} MB"
        f"  (rss {float(small['rss_peak_mb']):.0f} MB)"
    )
    print(
        f"peak memory growth, {lines_n:,} lines: {growth_full:6.1f} MB"
        f"  (rss {float(full['rss_peak_mb']):.0f} MB)"
        f"  difference {growth_full - growth_small:+.1f} MB, goal within 50 MB"
    )
    print(
        f"resubmission JSONL from the ledger (CPU):               {rows / write_s:>10,.0f} rows/s"
        f"  ({rows:,} rows in {write_s:.1f} CPU s; reserving them took {reserve_s:.1f} s wall)"
        "  goal >= 200,000"
    )
    print(
        "  floor, the same rows copied from the ledger to a file unchanged (CPU):"
        f" {rows / m['resub_floor_s']:,.0f} rows/s; ratio {m['resub_floor_s'] / write_s:.2f}"
    )
    print(f"counts: {json.dumps(full['counts'])}")


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    main()
