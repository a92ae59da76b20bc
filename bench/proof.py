"""Proof under faults: what was tried and what held, as a table.

    .venv/bin/python -m bench.proof                  # --fast: the crash matrix and concurrency
    .venv/bin/python -m bench.proof --postgres postgresql+psycopg://postgres@127.0.0.1/test
    .venv/bin/python -m bench.proof --scale          # the night: 10,000 batch + 2,000 background
    .venv/bin/python -m bench.proof --scale --batch-items 2000 --background-items 500

``--fast`` (the default; what CI proves through ``tests/proof``): for each crash point of
the batch, background and direct channels (and each media upload point on each channel: in
every world but the halt rows' the even items share a file to upload), one tick in a real
subprocess is SIGKILLed at the point (the trace proves it was reached; a
``*.before_release_on_halt`` tick runs under a refused key, a ``*.after_delivery_failure``
world has one side effect that always fails), ordinary ticks follow until the night
settles, and the invariants are checked; then the same rows with SIGTERM instead of SIGKILL
at the last point of each (``GEMINI_LEDGER_CRASH_SIGNAL=TERM``: the tick stops between rows,
exit 143); then four ticks released together on one ledger, per channel (SQLite, and
PostgreSQL with ``--postgres``). ``--scale`` runs ``bench/night.py``.

One Prefect server (the test harness's) is started here once; every tick reports to it.
Columns: ticks run, items, consumed, parked, lost (not settled), duplicated (a side effect
completed twice outside a kill inside it), over-submitted (more submissions than attempts
plus flagged orphans), unbilled attempts (attempts beyond a key's submissions: only a direct
call a kill left in flight may have one), attempts and submissions, flagged possible
duplicates, tokens the emulator billed and the ledger recorded, times the shared file went
up to the Files API (1) and files the emulator still stores at the end (0).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(_ROOT)] + [
    p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent
]

# Prefect reads its settings at import: a throwaway home, quiet logs, no analytics.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="gl-proof-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("PREFECT_API_URL", None)
os.environ.setdefault("GEMINI_API_KEY", "proof-api-key")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

# Wide enough for the table when the output goes to a file or a pipe.
console = Console(width=None if sys.stdout.isatty() else 250)

COLUMNS = (
    "ticks",
    "items",
    "consumed",
    "parked",
    "lost",
    "duplicated",
    "over_submitted",
    "unbilled_attempts",
    "attempts",
    "submissions",
    "possible_duplicates",
    "billed_tokens",
    "recorded_tokens",
    "media_uploads",
    "files_stored",
)


def _table(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title)
    for col in ("what", "point", "hit", *COLUMNS, "held"):
        table.add_column(
            col.replace("_", " "), justify="left" if col in ("what", "point") else "right"
        )
    for row in rows:
        table.add_row(
            row["what"],
            row["point"],
            row["hit"],
            *(str(row.get(c, "")) for c in COLUMNS),
            "yes" if row["held"] else "[red]NO[/red]",
        )
    return table


def run_fast(prefect_api: str, *, postgres: str | None) -> bool:
    from emulator.testing import RunningEmulator
    from tests.proof.harness import World, batch_holders
    from tests.proof.matrix import MATRIX, SCENARIO, exact_attempts, kill_env, media, world_env

    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    started = time.monotonic()
    with RunningEmulator(scenario="clean", seed=7) as emu, tempfile.TemporaryDirectory() as tmp:
        os.environ.update(emu.env())
        crashes = [(False, m) for m in MATRIX] + [(True, m) for m in MATRIX]
        for n, (term, (channel, kills, prep)) in enumerate(crashes):
            emu.reset()
            emu.set_scenario(SCENARIO, seed=7)
            root = Path(tmp) / f"crash-{n}"
            root.mkdir()
            world = World(
                channel=channel,
                root=root,
                ledger_url=f"sqlite:///{root / 'ledger.db'}",
                emulator=emu,
                prefect_api=prefect_api,
                items=6,
                extra_env=world_env(kills),
                media=media(kills),
            )
            runs, in_hand = world.kill_at(kills, prep=prep, kill_env=kill_env, term_last=term)
            killed = runs[:-1] if term else runs
            hit = len(runs) == len(kills) and all(
                r.killed and r.trace and r.trace[-1] == p
                for p, r in zip(kills, killed, strict=False)
            )
            if term:  # the last point sent SIGTERM: stopped (143), or halted (1) on a halt row
                stopped_as = 1 if kills[-1].endswith("_on_halt") else 143
                hit = hit and runs[-1].returncode == stopped_as and kills[-1] in runs[-1].trace
            world.settle(max_ticks=8)
            exact = world.media_keys if exact_attempts(kills) else []
            verdict = world.check(allowed_repeats=in_hand, exact_keys=exact)
            held = hit and verdict.ok
            point = " then ".join(kills) + (" (SIGTERM)" if term else "")
            rows.append(
                {
                    "what": f"{'stop' if term else 'kill'} {channel}",
                    "point": point,
                    "hit": "yes" if hit else f"no (rc {[r.returncode for r in runs]})",
                    "ticks": world.ticks_run,
                    **verdict.as_dict(),
                    "held": held,
                }
            )
            problems += [f"{point}: {p}" for p in verdict.problems]
            console.print(f"  {point}: {'held' if held else 'BROKEN'}")
        backends = [("sqlite", None)] + ([("postgres", postgres)] if postgres else [])
        for backend, base_url in backends:
            for channel in ("batch", "background"):
                emu.reset()
                emu.set_scenario(SCENARIO, seed=7)
                root = Path(tmp) / f"together-{channel}-{backend}"
                root.mkdir()
                url = _fresh_postgres(base_url) if base_url else f"sqlite:///{root / 'ledger.db'}"
                world = World(
                    channel=channel,
                    root=root,
                    ledger_url=url,
                    emulator=emu,
                    prefect_api=prefect_api,
                    items=6,
                )
                world.tick()
                world.items = 12
                runs = world.ticks_together(4)
                exits = [r.returncode for r in runs]
                world.settle(max_ticks=6, stale_s=None)
                verdict = world.check()
                held = verdict.ok and exits == [0, 0, 0, 0]
                if channel == "batch":
                    jobs = world.ledger().jobs(pipeline=world.channel.pipeline)
                    holders = batch_holders(url, world.channel.pipeline)
                    held = held and all(holders.get(j.key, 0) <= j.attempts for j in jobs)
                rows.append(
                    {
                        "what": f"4 {channel} ticks at once",
                        "point": backend,
                        "hit": "-",
                        "ticks": world.ticks_run,
                        **verdict.as_dict(),
                        "held": held,
                    }
                )
                problems += [f"{channel} x4 {backend}: {p}" for p in verdict.problems]
                console.print(
                    f"  4 {channel} ticks at once on {backend}: {'held' if held else 'BROKEN'}"
                )
    _drop_databases()
    console.print(_table(f"proof under faults ({time.monotonic() - started:.0f} s)", rows))
    hits = sum(1 for r in rows if r["hit"] == "yes")
    console.print(
        f"crash points hit: {hits} of {2 * len(MATRIX)} (SIGKILL and SIGTERM);"
        f" all held: {all(r['held'] for r in rows)}"
    )
    for p in problems:
        console.print(f"[red]{p}[/red]")
    return all(r["held"] for r in rows)


_created_databases: list[tuple[str, str]] = []


def _fresh_postgres(base_url: str) -> str:
    """A new PostgreSQL database next to ``base_url``'s (dropped by :func:`_drop_databases`)."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin_url = make_url(base_url)
    name = f"gl_proof_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    _created_databases.append((base_url, name))
    return admin_url.set(database=name).render_as_string(hide_password=False)


def _drop_databases() -> None:
    from sqlalchemy import create_engine, text

    for base_url, name in _created_databases:
        admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    _created_databases.clear()


def run_scale(prefect_api: str, args: argparse.Namespace) -> bool:
    from bench.night import BILLED_FIGURES, run_night

    with tempfile.TemporaryDirectory(prefix="gl-night-") as tmp:
        result = run_night(
            prefect_api=prefect_api,
            root=Path(tmp),
            batch_items=args.batch_items,
            background_items=args.background_items,
            seed=args.seed,
            webhooks=not args.no_webhooks,
            log=console.print,
        )
    rows = [
        {
            "what": f"night {name}",
            "point": "night scenario",
            "hit": "-",
            "ticks": result.ticks[name],
            **v,
            "held": not any(p.startswith(name) for p in result.problems),
        }
        for name, v in result.verdicts.items()
    ]
    console.print(_table(f"the night at scale ({result.seconds:.0f} s)", rows))
    fates = Table(title="fates (checked against the emulator's own seeded decisions)")
    fates.add_column("channel")
    fates.add_column("fate")
    fates.add_column("keys", justify="right")
    for channel, tally in result.fates.items():
        for fate, n in sorted(tally.items()):
            fates.add_row(channel, fate, str(n))
    console.print(fates)
    billed = Table(title="billed (emulator) vs recorded (ledger)")
    for col in ("what", "billed", "recorded", "equal"):
        billed.add_column(col, justify="left" if col == "what" else "right")
    for what in BILLED_FIGURES:
        b, r = result.billed[what], result.recorded[what]
        billed.add_row(what, str(b), str(r), "yes" if b == r else "[red]NO[/red]")
    billed.add_row("answers billed", str(result.billed["answers"]), "-", "-")
    console.print(billed)
    console.print(f"webhooks and jobs: {result.webhooks}")
    parked = {n: v["parked_by_class"] for n, v in result.verdicts.items()}
    console.print(f"parked by class: {parked}")
    for p in result.problems:
        console.print(f"[red]{p}[/red]")
    console.print(f"all held: {result.ok}")
    return result.ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="crash matrix + concurrency (default)")
    parser.add_argument("--scale", action="store_true", help="the night at scale")
    parser.add_argument("--postgres", help="also run the concurrency part on this PostgreSQL")
    parser.add_argument("--batch-items", type=int, default=10_000)
    parser.add_argument("--background-items", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--no-webhooks", action="store_true", help="night without the receiver")
    args = parser.parse_args()

    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    ok = True
    with prefect_test_harness(server_startup_timeout=120):
        api = str(PREFECT_API_URL.value())
        if args.fast or not args.scale:
            ok = run_fast(api, postgres=args.postgres) and ok
        if args.scale:
            ok = run_scale(api, args) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
