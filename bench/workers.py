"""Several Prefect process workers on one night, sharing one Gemini quota.

    python -m bench.workers                     # 50,000 items: 40,000 batch, 5,000 background,
                                                # 5,000 direct; 1 worker, then 3 workers
    python -m bench.workers --batch 4000 --background 500 --direct 500 --rpm 3000

Each run: a fresh ``prefect server start``, a fresh PostgreSQL database (the tests' server,
``LEDGER_TEST_POSTGRES_URL``), the emulator, ``gemini-ledger limits apply --rpm R
--concurrency C``, then ``prefect worker start`` processes on one pool running waves of the
three proof deployments (two runs of each per wave) until every item is delivered or parked
(see ``tests/multiworker/night.py``). Prints, per worker count: items/s over the night, the
ratio to one worker, the emulator's highest requests in any 60 s and any 1 s window against
the limit, every invariant the checker verified, and the machine's load average. Asserts
nothing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import uuid
from pathlib import Path

os.environ.setdefault("GEMINI_API_KEY", "bench-key-not-secret")
# Prefect reads its settings at import: this process only talks to the servers it starts.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="gl-bench-workers-home-"))
os.environ.pop("PREFECT_API_URL", None)

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.multiworker.night import Night, NightResult, run_night

_PG = os.environ.get(
    "LEDGER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _database() -> tuple[str, str]:
    admin = create_engine(make_url(_PG), isolation_level="AUTOCOMMIT")
    name = f"gl_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(_PG).set(database=name).render_as_string(hide_password=False), name


def _drop(name: str) -> None:
    admin = create_engine(make_url(_PG), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _one(night: Night) -> NightResult:
    url, name = _database()
    try:
        with tempfile.TemporaryDirectory(prefix="gl-bench-workers-") as tmp:
            return run_night(night, root=Path(tmp), ledger_url=url)
    finally:
        _drop(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=40_000)
    parser.add_argument("--background", type=int, default=5_000)
    parser.add_argument("--direct", type=int, default=5_000)
    parser.add_argument("--rpm", type=int, default=30_000, help="requests a minute, per model")
    parser.add_argument("--concurrency", type=int, default=32, help="in flight, per model")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 3])
    args = parser.parse_args()
    items = {"batch": args.batch, "background": args.background, "direct": args.direct}
    total = sum(items.values())
    print(
        f"night: {total:,} items ({', '.join(f'{k} {v:,}' for k, v in items.items())});"
        f" limit {args.rpm:,} requests/min, {args.concurrency} in flight per model;"
        f" {os.cpu_count()} cores"
    )
    base: float | None = None
    for n in args.workers:
        night = Night(items=items, rpm=args.rpm, concurrency=args.concurrency, workers=n)
        r = _one(night)
        per_s = total / r.seconds
        base = base or per_s
        rates = r.rates
        held = all(v.ok for v in r.verdicts.values())
        attempts = sum(v.attempts for v in r.verdicts.values())
        sent = sum(v.submissions for v in r.verdicts.values())
        settled = sum(v.consumed + v.parked for v in r.verdicts.values())
        print(
            f"{n} worker(s): {r.seconds:7.1f} s, {r.waves} waves, {per_s:7.1f} items/s"
            f" ({per_s / base:.2f}x one worker); settled {settled:,}/{total:,};"
            f" attempts {attempts:,} = emulator submissions {sent:,}: {attempts == sent};"
            f" invariants {'held' if held else 'BROKEN'}"
        )
        print(
            f"    max observed: {rates.get('max_per_minute')} requests in 60 s"
            f" (limit {args.rpm:,}), {rates.get('max_per_second')} in 1 s"
            f" (limit/60 = {args.rpm / 60:.0f}); {rates.get('requests')} quota-counted requests;"
            f" runs per worker {r.runs_per_worker};"
            f" load average {r.load[0]:.2f} {r.load[1]:.2f} {r.load[2]:.2f}"
        )
        for channel, v in r.verdicts.items():
            if v.problems:
                print(f"    {channel}: {v.problems[:5]}")


if __name__ == "__main__":
    main()
