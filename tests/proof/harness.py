"""The proof harness: a world (ledger, emulator, Prefect API, side-effect destination), ticks
run in real subprocesses (one armed to SIGKILL itself at a crash point, or several released
at the same moment) or in this process, and the invariant checker.

Used by the tests in this package and by ``bench/proof.py``. The invariants, checked from
the ledger, the side-effect log (completions per key) and the emulator's counters:

- every item is in the ledger and ends ``consumed`` or ``parked`` (nothing lost);
- a consumed key's side effect completed once; twice only for a key that was in hand when
  a kill interrupted the delivery (its side effect completed, ``consumed`` not recorded);
  a parked key's never;
- no key was submitted to the API more times than the ledger's attempts, plus its
  ``possible_duplicates`` (the flagged background orphan): no submission beyond the first
  per attempt except the flagged orphan case;
- the ledger never records more tokens than the emulator billed;
- in a world with media (``media=True``: the shared file of ``pipelines.MEDIA_ENV``), its
  bytes went up to the Files API once (the emulator's uploads per display name), and every
  upload is deleted at the end: its ledger row ``deleted``, the emulator storing no file;
- for the ``exact_keys`` given (after kills around uploads: ``media_keys``, the keys whose
  prompts read the shared file), attempts are the submissions the API received (an upload,
  or a kill around one, is never a row's attempt).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from flows.contents import content_hash
from flows.testing import UPLOAD_STALE_S, upload_display_name
from ledger import Ledger, UploadState
from tests.prewarmed import run_cli

from . import pipelines

__all__ = [
    "CHANNELS",
    "DAY",
    "ROOT",
    "SETTLED",
    "Channel",
    "TickRun",
    "Verdict",
    "World",
    "batch_holders",
]

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2026, 11, 22)
SETTLED = frozenset({"consumed", "parked"})


@dataclass(frozen=True)
class Channel:
    """How the harness drives one channel's proof pipeline."""

    name: str
    spec: str  # what ``tick`` is given
    pipeline: str  # the name the ledger stores
    stale_env: str  # the knob that makes a dead tick's leftovers stale at once


CHANNELS: dict[str, Channel] = {
    "batch": Channel(
        "batch", "tests.proof.pipelines:batch", "proof-batch", "GEMINI_LEDGER_BATCH_STALE_S"
    ),
    "background": Channel(
        "background",
        "tests.proof.pipelines:background",
        "proof-bg",
        "GEMINI_LEDGER_BACKGROUND_STALE_S",
    ),
    "direct": Channel(
        "direct", "tests.proof.pipelines:direct", "proof-direct", "GEMINI_LEDGER_DIRECT_STALE_S"
    ),
}

_CRASH_ENVS = ("GEMINI_LEDGER_CRASH_AT", "GEMINI_LEDGER_CRASH_SIGNAL", "GEMINI_LEDGER_CRASH_TRACE")
# What a tick stopped by SIGTERM between rows exits with (flows.run._stop.Stopped.exit_code).
STOPPED_EXIT = 128 + signal.SIGTERM


@dataclass
class TickRun:
    """One tick that ran in a subprocess."""

    returncode: int
    stdout: str
    stderr: str
    trace: list[str]
    seconds: float

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    @property
    def stopped(self) -> bool:
        """Stopped by SIGTERM between rows, as the CLI reports it (not killed by it)."""
        return self.returncode == STOPPED_EXIT

    def report(self) -> dict[str, Any] | None:
        """The JSON report the tick printed, if it finished."""
        start = self.stdout.find("{")
        if start < 0:
            return None
        try:
            found: dict[str, Any] = json.loads(self.stdout[start:])
        except json.JSONDecodeError:
            return None
        return found


@dataclass
class Verdict:
    """What the invariant checker found: figures, and every broken invariant in words."""

    items: int = 0
    consumed: int = 0
    parked: int = 0
    lost: int = 0
    duplicated: int = 0
    over_submitted: int = 0
    unbilled_attempts: int = 0  # attempts counted beyond the key's submissions the API saw
    unattempted_submissions: int = 0  # submissions the API saw beyond the key's attempts
    attempts: int = 0
    submissions: int = 0
    possible_duplicates: int = 0
    billed_tokens: int = 0
    recorded_tokens: int = 0
    media_uploads: int = 0  # times the shared file's bytes went up to the Files API
    files_stored: int = 0  # files the emulator still stores at the end
    parked_by_class: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "consumed": self.consumed,
            "parked": self.parked,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "over_submitted": self.over_submitted,
            "unbilled_attempts": self.unbilled_attempts,
            "unattempted_submissions": self.unattempted_submissions,
            "attempts": self.attempts,
            "submissions": self.submissions,
            "possible_duplicates": self.possible_duplicates,
            "billed_tokens": self.billed_tokens,
            "recorded_tokens": self.recorded_tokens,
            "media_uploads": self.media_uploads,
            "files_stored": self.files_stored,
            "parked_by_class": dict(self.parked_by_class),
            "problems": list(self.problems),
        }


def batch_holders(url: str, pipeline: str) -> dict[str, int]:
    """Per key, how many created batch jobs (bound to a name) hold it."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT m.key, COUNT(*) FROM batch_members m JOIN batch_jobs b"
                    " ON b.reservation = m.reservation"
                    " WHERE b.name IS NOT NULL AND b.pipeline = :p GROUP BY m.key"
                ),
                {"p": pipeline},
            ).all()
    finally:
        engine.dispose()
    return {str(k): int(n) for k, n in rows}


@contextlib.contextmanager
def _environ(values: Mapping[str, str], drop: tuple[str, ...] = ()) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in (*values, *drop)}
    try:
        for k in drop:
            os.environ.pop(k, None)
        os.environ.update(values)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class World:
    """One proof scenario's world: a channel's proof pipeline over one ledger and emulator.

    ``emulator`` is a :class:`emulator.testing.RunningEmulator` (or anything with ``env()``
    and ``stats()``); ``prefect_api`` the API URL every subprocess tick reports to, so they
    share one Prefect server instead of each starting its own.
    """

    def __init__(
        self,
        *,
        channel: str,
        root: Path,
        ledger_url: str,
        emulator: Any,
        prefect_api: str,
        items: int,
        day: date = DAY,
        extra_env: Mapping[str, str] | None = None,
        media: bool = False,
    ) -> None:
        self.channel = CHANNELS[channel]
        self.root = root
        self.ledger_url = ledger_url
        Ledger(ledger_url, create=True).dispose()  # a ledger is created on purpose only
        self.emulator = emulator
        self.prefect_api = prefect_api
        self.items = items
        self.day = day
        self.extra_env = dict(extra_env or {})
        self.out_dir = root / "out"
        self.completions_file = root / "completions.log"
        # The document the even items' prompts share (uploaded once, deleted at the end).
        self.media: Path | None = None
        if media:
            self.media = root / "shared.pdf"
            self.media.write_bytes(b"%PDF-1.4\n" + b"proof " * 4096)
        self.ticks_run = 0
        self.points_hit: list[str] = []
        self._runs = 0

    # -- environment ---------------------------------------------------------------------

    def environ(self, *, stale_s: float | None = None) -> dict[str, str]:
        """The variables that define this world (ledger, emulator, items, destination)."""
        env = {
            "LEDGER_DATABASE_URL": self.ledger_url,
            f"{pipelines.ITEMS_ENV}_{self.channel.name.upper()}": str(self.items),
            pipelines.OUT_ENV: str(self.out_dir),
            pipelines.COMPLETIONS_ENV: str(self.completions_file),
            # Direct retries within a run: milliseconds, not seconds.
            "GEMINI_LEDGER_DIRECT_BACKOFF_S": "0.01",
            "GEMINI_LEDGER_DIRECT_JITTER": "0",
            **self.emulator.env(),
            **self.extra_env,
        }
        if self.media is not None:
            env[pipelines.MEDIA_ENV] = str(self.media)
        if stale_s is not None:
            env[self.channel.stale_env] = str(stale_s)
        return env

    def _age_uploads(self, stale_s: float | None) -> None:
        """With ``stale_s=0``, a dead tick's upload reservations are made stale too: their age
        is fixed (``UPLOAD_STALE_S``, half an hour) and no setting shortens it, so the
        ledger's clock for them is moved instead of waited on."""
        if stale_s != 0 or self.media is None:
            return
        ledger = self.ledger()
        with ledger.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE uploads SET reserved_at = reserved_at - :age"
                    " WHERE pipeline = :p AND state = :reserving"
                ),
                {
                    "age": UPLOAD_STALE_S + 1,
                    "p": self.channel.pipeline,
                    "reserving": UploadState.RESERVING.value,
                },
            )

    def subprocess_env(self, *, stale_s: float | None = None, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _CRASH_ENVS}
        env.update(self.environ(stale_s=stale_s))
        env["PREFECT_API_URL"] = self.prefect_api
        env["PYTHONPATH"] = str(ROOT)
        env.update(extra)
        return env

    def key_of(self, i: int) -> str:
        return f"{self.channel.pipeline}:{self.day.isoformat()}:{pipelines.item_name(i)}:v1"

    @property
    def keys(self) -> list[str]:
        return [self.key_of(i) for i in range(self.items)]

    @property
    def media_keys(self) -> list[str]:
        """The keys whose prompts read the shared file (none in a world without media)."""
        if self.media is None:
            return []
        return [self.key_of(i) for i in range(self.items) if pipelines.reads_media(i)]

    # -- ticks ---------------------------------------------------------------------------

    def _trace_file(self) -> Path:
        self._runs += 1
        return self.root / f"trace-{self._runs}.txt"

    def tick_subprocess(
        self,
        *,
        crash_at: str | None = None,
        stale_s: float | None = None,
        timeout: float = 180,
        env: Mapping[str, str] | None = None,
    ) -> TickRun:
        """One tick through the CLI in a real subprocess (as cron runs it), optionally armed
        to SIGKILL itself at ``crash_at`` (``name`` or ``name@N``); ``stale_s=0`` makes it
        take over whatever a dead tick left behind at once; ``env`` is added for this tick
        only (e.g. a refused key)."""
        trace = self._trace_file()
        self._age_uploads(stale_s)
        extra = {**(env or {}), "GEMINI_LEDGER_CRASH_TRACE": str(trace)}
        if crash_at:
            extra["GEMINI_LEDGER_CRASH_AT"] = crash_at
        args = ["tick", self.channel.spec, "--day", self.day.isoformat(), "--json"]
        started = time.monotonic()
        # A process of its own, forked from one that has done the imports (tests/prewarmed.py).
        proc = run_cli(
            args, env=self.subprocess_env(stale_s=stale_s, **extra), cwd=ROOT, timeout=timeout
        )
        run = TickRun(
            proc.returncode,
            proc.stdout,
            proc.stderr,
            trace.read_text().split() if trace.exists() else [],
            time.monotonic() - started,
        )
        self.ticks_run += 1
        if run.killed and run.trace:
            self.points_hit.append(run.trace[-1])
        return run

    def kill_at(
        self,
        kills: tuple[str, ...],
        *,
        prep: int = 0,
        kill_env: Callable[[str], Mapping[str, str]] | None = None,
        term_last: bool = False,
    ) -> tuple[list[TickRun], set[str]]:
        """``prep`` ticks here, then one subprocess tick armed at each point in turn (each
        after the first takes the dead ticks' leftovers over at once: ``stale_s=0``), run
        with ``kill_env(point)`` added. ``term_last``: the last point sends SIGTERM instead
        of SIGKILL (the tick stops gracefully). Stops at a tick that was not killed. Returns
        the runs, and the keys in hand at a kill (their side effect may run again)."""
        for _ in range(prep):
            self.tick()
        runs: list[TickRun] = []
        in_hand: set[str] = set()
        for n, point in enumerate(kills):
            env = dict(kill_env(point)) if kill_env else {}
            if term_last and n == len(kills) - 1:
                env["GEMINI_LEDGER_CRASH_SIGNAL"] = "TERM"
            run = self.tick_subprocess(crash_at=point, stale_s=0.0 if n else None, env=env)
            runs.append(run)
            if not run.killed:
                break
            in_hand |= self.in_hand()
        return runs, in_hand

    def ticks_together(self, n: int, *, timeout: float = 240) -> list[TickRun]:
        """``n`` ticks in real subprocesses, released at the same moment: each imports
        everything, says ``ready`` and waits for a line on stdin; all get ``go`` together."""
        cmd = [
            sys.executable,
            "-m",
            "tests.proof.runner",
            self.channel.spec,
            self.day.isoformat(),
        ]
        procs: list[tuple[subprocess.Popen[str], Any, Path]] = []
        started = time.monotonic()
        try:
            for _ in range(n):
                trace = self._trace_file()
                err = (self.root / f"stderr-{self._runs}.txt").open("w+", encoding="utf-8")
                proc = subprocess.Popen(
                    cmd,
                    cwd=ROOT,
                    env=self.subprocess_env(GEMINI_LEDGER_CRASH_TRACE=str(trace)),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    text=True,
                )
                procs.append((proc, err, trace))
            for proc, err, _ in procs:
                assert proc.stdout is not None
                line = proc.stdout.readline().strip()
                if line != "ready":
                    err.seek(0)
                    raise RuntimeError(f"tick runner not ready ({line!r}): {err.read()[-3000:]}")
            for proc, _, _ in procs:  # release them all at once
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            runs = []
            for proc, err, trace in procs:
                out, _ = proc.communicate(timeout=timeout)
                err.seek(0)
                runs.append(
                    TickRun(
                        proc.returncode,
                        out,
                        err.read(),
                        trace.read_text().split() if trace.exists() else [],
                        time.monotonic() - started,
                    )
                )
        finally:
            for proc, err, _ in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
                err.close()
        self.ticks_run += n
        return runs

    def tick(self, *, stale_s: float | None = None) -> Any:
        """One tick in this process (a real Prefect flow run against the same API)."""
        from flows.tick import run_tick

        self._age_uploads(stale_s)
        with _environ(self.environ(stale_s=stale_s), drop=_CRASH_ENVS):
            report = run_tick(self.channel.spec, day=self.day)
        self.ticks_run += 1
        return report

    def settle(self, *, max_ticks: int = 8, stale_s: float | None = 0.0) -> int:
        """Ordinary ticks until every item is consumed or parked (bounded); returns how many
        ran. ``stale_s=0``: whatever a dead tick left behind is taken over at once."""
        for n in range(1, max_ticks + 1):
            self.tick(stale_s=stale_s)
            if self.settled():
                return n
        return max_ticks

    def settled(self) -> bool:
        by_status = self.ledger().counts(pipeline=self.channel.pipeline).by_status
        total = sum(by_status.values())
        return total >= self.items and all(s in SETTLED for s, n in by_status.items() if n)

    # -- what the world holds ------------------------------------------------------------

    def ledger(self) -> Ledger:
        from flows.testing import open_ledger

        return open_ledger(self.ledger_url)

    def completions(self) -> Counter[str]:
        """Side-effect completions per key of this world's pipeline (the log may be shared)."""
        if not self.completions_file.exists():
            return Counter()
        prefix = f"{self.channel.pipeline}:"
        return Counter(
            k
            for k in self.completions_file.read_text(encoding="utf-8").split()
            if k.startswith(prefix)
        )

    def in_hand(self) -> set[str]:
        """Keys whose side effect completed but whose ``consumed`` was not recorded: after a
        kill, the only keys whose side effect may run again."""
        done = {j.key for j in self.ledger().jobs(pipeline=self.channel.pipeline, status="done")}
        return {k for k, n in self.completions().items() if n and k in done}

    def check(
        self,
        *,
        allowed_repeats: frozenset[str] | set[str] = frozenset(),
        exact_keys: Iterable[str] = (),
    ) -> Verdict:
        """Check every invariant; return the figures and the problems found.
        ``exact_keys``: these keys' attempts also equal the submissions the API saw."""
        ledger = self.ledger()
        jobs = {j.key: j for j in ledger.jobs(pipeline=self.channel.pipeline)}
        completions = self.completions()
        exact = set(exact_keys)
        stats = self.emulator.stats()
        subs: dict[str, int] = stats["submissions"]
        v = Verdict(items=self.items)
        parked: Counter[str] = Counter()
        for key in self.keys:
            job = jobs.get(key)
            if job is None:
                v.lost += 1
                v.problems.append(f"{key}: never enrolled")
                continue
            if job.status not in SETTLED:
                v.lost += 1
                v.problems.append(f"{key}: left {job.status}")
        for key, job in jobs.items():
            done = completions.get(key, 0)
            sent = subs.get(key, 0)
            v.attempts += job.attempts
            v.submissions += sent
            v.possible_duplicates += job.possible_duplicates
            if job.status == "consumed":
                v.consumed += 1
                limit = 2 if key in allowed_repeats else 1
                if done == 0:
                    v.problems.append(f"{key}: consumed but its side effect never completed")
                elif done > limit:
                    v.duplicated += 1
                    v.problems.append(f"{key}: side effect completed {done} times")
            elif job.status == "parked":
                v.parked += 1
                parked[job.error_class or "unclassified"] += 1
                if done:
                    v.duplicated += 1
                    v.problems.append(f"{key}: parked ({job.error_class}) yet published")
            v.unbilled_attempts += max(0, job.attempts - sent)
            v.unattempted_submissions += max(0, sent - job.attempts)
            if key in exact and sent != job.attempts:
                v.problems.append(f"{key}: {job.attempts} attempts, {sent} submissions received")
            if sent > job.attempts + job.possible_duplicates:
                v.over_submitted += 1
                v.problems.append(
                    f"{key}: submitted {sent} times for {job.attempts} attempts"
                    f" (+{job.possible_duplicates} flagged)"
                )
        strangers = set(completions) - set(jobs)
        if strangers:
            v.problems.append(f"side effects for keys not in the ledger: {sorted(strangers)[:5]}")
        v.parked_by_class = dict(sorted(parked.items()))
        v.billed_tokens = int(stats["billed"]["total_tokens"])
        v.recorded_tokens = ledger.counts().total_tokens
        if v.recorded_tokens > v.billed_tokens:
            v.problems.append(
                f"ledger records {v.recorded_tokens} tokens, the emulator billed {v.billed_tokens}"
            )
        if self.media is not None:
            self._check_media(v, ledger, stats)
        return v

    def _check_media(self, v: Verdict, ledger: Ledger, stats: dict[str, Any]) -> None:
        """The shared file went up once, and nothing is left stored at the end."""
        assert self.media is not None
        pipeline = self.channel.pipeline
        digest = content_hash(self.media.read_bytes())
        files = stats["files"]
        v.media_uploads = int(files["uploaded"].get(upload_display_name(digest, pipeline), 0))
        v.files_stored = int(files["stored"])
        if v.media_uploads != 1:
            v.problems.append(f"the shared file went up {v.media_uploads} times, not once")
        if v.files_stored:
            v.problems.append(f"the emulator still stores {v.files_stored} files")
        for rec in ledger.uploads(pipeline):
            if rec.state != UploadState.DELETED.value or rec.uploads != 1:
                v.problems.append(
                    f"upload {rec.content_hash[:12]}: {rec.state} after {rec.uploads} uploads"
                )
        if not ledger.uploads(pipeline):
            v.problems.append("no upload recorded for the shared file")
