"""The production-like night at scale, run to the end, and what held.

    .venv/bin/python -m bench.proof --scale                    # 10,000 batch + 2,000 background
    .venv/bin/python -m bench.proof --scale --batch-items 2000 --background-items 500

10,000 items through the batch channel and 2,000 through the background channel, under the
emulator's ``default`` scenario (429, 503, 500, 400, safety blocks, emoji-only items
answered empty, rows missing from outputs, failed batch jobs, duplicate and late signed
webhooks), its 5 % chance of a failed batch job made certain for the second job, plus the
real API's shapes (:data:`REAL_SHAPES`: gRPC-style error lines, a late output file,
interaction step errors, MAX_TOKENS truncation, MODEL_ARMOR safety blocks, thinking and
cached prompt tokens in the usage).

Every tick is a real subprocess (``python -m flows.cli tick``, as cron runs it) reporting
to one Prefect server; the webhook receiver (``flows.webhooks.receiver.create_app``) is
served in this process, and each finished batch it hears about starts a real ``reconcile``
flow run here, overlapping the ticks.

Checked at the end, from the ledger, the side-effect log and the emulator's counters:

- the invariants of ``tests/proof/harness.py`` (nothing lost, nothing published twice,
  nothing submitted beyond its attempts), with submissions equal to attempts per key;
- the ledger's attempts and tokens equal what the emulator billed;
- every key's fate is what the emulator's own seeded decisions say it must be: the emulator
  decides each submission from ``(seed, key, submission number)``, so replaying those
  decisions (and the ledger's record of which batch jobs failed as a whole, whose rows the
  classifier calls retryable, under the attempt cap) gives, per key,
  the attempt it must succeed on, or the attempt and class it must be parked with. A
  transient-only item succeeds within its cap; a permanent one is parked after the one
  attempt that failed, with the right class.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import os
import secrets
import socket
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

__all__ = [
    "BILLED_FIGURES",
    "REAL_SHAPES",
    "NightResult",
    "expected_fates",
    "night_scenario",
    "run_night",
]

SEED = 2026
# What the emulator billed and the ledger recorded, compared one by one (equal, or a problem).
BILLED_FIGURES = (
    "submissions",
    "prompt_tokens",
    "candidates_tokens",
    "total_tokens",
    "thoughts_tokens",
    "cached_tokens",
)
CAP = 4
UNKNOWN_CAP = 2
# What the emulator's steps become in the ledger (the classifier's classes).
PERMANENT = {"400": "permanent:400", "safety": "safety", "blocked_prompt": "safety"}
PERMANENT_ANSWERS = {"incomplete": "truncated"}
# Answers without text: unknown, retried until the unknown cap (or the attempt cap), then
# parked under their class (an emoji-only item is answered empty every time).
UNKNOWN_ANSWERS = {"empty": "empty"}
# "failed": an interaction whose model_output step carries a Status error of code 14
# (UNAVAILABLE), retried by the classifier.
TRANSIENT = {"429", "503", "500", "missing", "failed"}

# The real API's shapes the night carries on top of the default scenario's faults (each
# emulator behaviour cites its source where it is built, see emulator/_scenario.py):
# batch output error lines with a numeric gRPC code and no status; a SUCCEEDED job whose
# output file appears only on a later poll; interaction step errors (code 14); MAX_TOKENS
# truncation (items 100-109 of both channels); safety blocks reported as MODEL_ARMOR.
TRUNCATED_ITEMS = "*:item-0010?:*"
STEP_ERROR_ITEMS = "proof-bg:*:item-0011?:*"
REAL_SHAPES: dict[str, Any] = {
    "batch_error_style": "grpc",
    "batch_output_delay_polls": 1,
    "interaction_step_error_code": 14,
    "safety_finish_reason": "MODEL_ARMOR",
    # Implicit cache hits on part of every prompt (cachedContentTokenCount), beside the
    # thinking tokens every answer reports: both compared, billed against recorded.
    "cached_prompt_fraction": 0.25,
    "scripts": [
        {"match": TRUNCATED_ITEMS, "steps": ["incomplete"]},
        {"match": STEP_ERROR_ITEMS, "steps": ["failed", "ok"]},
    ],
}


def night_scenario() -> dict[str, Any]:
    """The default scenario, its 5 % chance of a failed batch job made a certainty for the
    second job (the retries' batch: the night always has one), and the real shapes."""
    from emulator import BUILTINS

    return {
        **BUILTINS["default"],
        "name": "night",
        "batch_job_outcomes": ["SUCCEEDED", "FAILED"],
        **REAL_SHAPES,
    }


@dataclass
class NightResult:
    """Figures of one night and every discrepancy found."""

    seconds: float = 0.0
    ticks: dict[str, int] = field(default_factory=dict)
    verdicts: dict[str, Any] = field(default_factory=dict)
    fates: dict[str, dict[str, int]] = field(default_factory=dict)
    billed: dict[str, int] = field(default_factory=dict)
    recorded: dict[str, int] = field(default_factory=dict)
    webhooks: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# -- the webhook receiver, served here ------------------------------------------------------


class _Receiver:
    """``flows.webhooks.receiver.create_app`` under uvicorn in a thread, on a socket bound here."""

    def __init__(self, *, secret: str, ledger_url: str, batch_spec: str) -> None:
        import uvicorn

        from flows.webhooks.receiver import create_app

        self.reconciles: Counter[str] = Counter()
        self._spec = batch_spec
        self._threads: list[threading.Thread] = []
        app = create_app(secret=secret, ledger_url=ledger_url, on_batch_complete=self._start)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        )
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def _start(self, job_name: str) -> None:
        # What flows.webhooks.receiver.start_reconcile does without a deployment, but naming the
        # pipeline's spec: the ledger stores the name "proof-batch", which the registry
        # cannot load by itself (see the report on module:attr pipelines).
        from flows.reconcile import reconcile

        def run() -> None:
            try:
                reconcile(job_name=job_name, pipeline=self._spec)
                self.reconciles["ok"] += 1
            except Exception as exc:
                self.reconciles[type(exc).__name__] += 1

        ctx = contextvars.copy_context()
        t = threading.Thread(target=ctx.run, args=(run,), daemon=True)
        self._threads.append(t)
        t.start()

    def __enter__(self) -> _Receiver:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("webhook receiver did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        for t in self._threads:
            t.join(timeout=120)
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


# -- expected fates ------------------------------------------------------------------------


def _batch_history(url: str, pipeline: str) -> dict[str, list[str]]:
    """Per key, the final state of each created batch job it was in, oldest first."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT m.key, b.state FROM batch_members m JOIN batch_jobs b"
                    " ON b.reservation = m.reservation"
                    " WHERE b.name IS NOT NULL AND b.pipeline = :p"
                    " ORDER BY b.submitted_at, b.created_at"
                ),
                {"p": pipeline},
            ).all()
    finally:
        engine.dispose()
    history: dict[str, list[str]] = defaultdict(list)
    for key, state in rows:
        history[str(key)].append(str(state))
    return history


def expected_fates(
    keys_and_texts: list[tuple[str, str]],
    *,
    seed: int,
    batch: bool,
    history: dict[str, list[str]] | None = None,
) -> dict[str, tuple[str, int, str | None]]:
    """Per key, ``(status, attempts, error class)`` the emulator's decisions dictate.

    ``history`` (batch only) says which submissions went into a job that failed as a whole
    (a transient failure whatever the row's own decision was).
    """
    from emulator import load_scenario
    from emulator.testing import Core

    core = Core(load_scenario(night_scenario()), seed, clock=time.time)
    out: dict[str, tuple[str, int, str | None]] = {}
    for key, prompt in keys_and_texts:
        states = (history or {}).get(key, [])
        fate: tuple[str, int, str | None] | None = None
        unknowns = 0
        for n in range(1, CAP + 1):
            if batch and n <= len(states) and states[n - 1] != "succeeded":
                step = "job_failed"
            else:
                step = core.decide(key, n, prompt, batch=batch)
            if step == "job_failed":
                # The classifier calls a FAILED batch job retryable: its rows come back
                # until the attempt cap, then park as exhausted.
                if n == CAP:
                    fate = ("parked", n, "exhausted:batch_failed")
            elif step == "ok":
                fate = ("consumed", n, None)
            elif step in PERMANENT:
                fate = ("parked", n, PERMANENT[step])
            elif step in PERMANENT_ANSWERS:
                fate = ("parked", n, PERMANENT_ANSWERS[step])
            elif step in UNKNOWN_ANSWERS:
                unknowns += 1
                if unknowns >= UNKNOWN_CAP or n == CAP:
                    fate = ("parked", n, UNKNOWN_ANSWERS[step])
            elif step not in TRANSIENT:
                fate = ("unexpected", n, step)
            elif n == CAP:
                fate = ("parked", n, "exhausted:*")
            if fate is not None:
                break
        assert fate is not None
        out[key] = fate
    return out


def _compare_fates(world: Any, *, seed: int, batch: bool, result: NightResult) -> None:
    from tests.proof.pipelines import item_text

    history = _batch_history(world.ledger_url, world.channel.pipeline) if batch else None
    texts = [(k, item_text(i)) for i, k in enumerate(world.keys)]
    fates = expected_fates(texts, seed=seed, batch=batch, history=history)
    jobs = {j.key: j for j in world.ledger().jobs(pipeline=world.channel.pipeline)}
    tally: Counter[str] = Counter()
    wrong = 0
    for key, (status, attempts, cls) in fates.items():
        job = jobs.get(key)
        kind = (
            "succeeded first time"
            if status == "consumed" and attempts == 1
            else "succeeded after transient failures"
            if status == "consumed"
            else "exhausted"
            if cls == "exhausted:*"
            else f"parked {cls}"
        )
        tally[kind] += 1
        if job is None:
            wrong += 1
            continue
        cls_ok = (
            job.error_class == cls
            if cls != "exhausted:*"
            else (job.error_class or "").startswith("exhausted:")
        )
        if (job.status, job.attempts) != (status, attempts) or (status == "parked" and not cls_ok):
            wrong += 1
            if wrong <= 10:
                result.problems.append(
                    f"{key}: expected {status} after {attempts} ({cls}),"
                    f" got {job.status} after {job.attempts} ({job.error_class})"
                )
    tally["fate differs from the emulator's decisions"] = wrong
    result.fates[world.channel.name] = dict(tally)
    if wrong:
        result.problems.append(f"{world.channel.name}: {wrong} keys off their expected fate")


# -- the night -----------------------------------------------------------------------------


def run_night(
    *,
    prefect_api: str,
    root: Path,
    batch_items: int = 10_000,
    background_items: int = 2_000,
    seed: int = SEED,
    max_ticks: int = 30,
    webhooks: bool = True,
    log: Any = print,
) -> NightResult:
    """Run the night to the end (bounded by ``max_ticks`` per channel) and check it."""
    from emulator.testing import RunningEmulator
    from tests.proof.harness import World
    from tests.proof.pipelines import EMOJI_ENV

    result = NightResult()
    url = f"sqlite:///{root / 'ledger.db'}"
    from ledger import Ledger

    Ledger(url, create=True).dispose()  # before the receiver opens it
    os.environ[EMOJI_ENV] = "97"  # emoji-only items, answered empty: parked as empty
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    started = time.monotonic()
    receiver = (
        _Receiver(secret=secret, ledger_url=url, batch_spec="tests.proof.pipelines:batch")
        if webhooks
        else None
    )
    scenario = night_scenario()
    with (
        receiver if receiver is not None else contextlib.nullcontext() as rx,
        RunningEmulator(
            scenario=scenario,
            seed=seed,
            webhook_url=rx.url if rx else None,
            webhook_secret=secret if rx else None,
        ) as emu,
    ):
        worlds = {
            name: World(
                channel=name,
                root=root,
                ledger_url=url,
                emulator=emu,
                prefect_api=prefect_api,
                items=n,
                extra_env={EMOJI_ENV: "97"},
            )
            for name, n in (("batch", batch_items), ("background", background_items))
        }
        # The receiver's reconcile runs here: same world as the ticks.
        os.environ.update(worlds["batch"].environ())
        os.environ["PREFECT_API_URL"] = prefect_api
        pending = set(worlds)
        for round_no in range(1, max_ticks + 1):
            for name in sorted(pending):
                world = worlds[name]
                run = world.tick_subprocess(timeout=900)
                if run.returncode != 0:
                    result.problems.append(f"{name} tick {round_no} exited {run.returncode}")
                    log(run.stderr[-3000:])
                counts = world.ledger().counts(pipeline=world.channel.pipeline).by_status
                log(
                    f"  {name} tick {round_no} ({run.seconds:.1f}s): {dict(sorted(counts.items()))}"
                )
                if world.settled():
                    pending.discard(name)
            if not pending:
                break
        if rx is not None:
            # Late webhooks may still be on their way: wait for the emulator to go quiet.
            deadline = time.monotonic() + 30
            last = -1
            while time.monotonic() < deadline:
                sent = emu.stats()["webhooks_sent"]
                if sent == last:
                    break
                last = sent
                time.sleep(1.0)
        result.seconds = time.monotonic() - started
        for name, world in worlds.items():
            result.ticks[name] = world.ticks_run
            verdict = world.check()
            result.verdicts[name] = verdict.as_dict()
            result.problems += [f"{name}: {p}" for p in verdict.problems[:20]]
            if name in pending:
                result.problems.append(f"{name}: not settled after {max_ticks} ticks")
            subs = emu.stats()["submissions"]
            unequal = [
                j.key
                for j in world.ledger().jobs(pipeline=world.channel.pipeline)
                if subs.get(j.key, 0) != j.attempts
            ]
            if unequal:
                result.problems.append(
                    f"{name}: {len(unequal)} keys submitted a different number of times than"
                    f" their attempts, e.g. {unequal[:3]}"
                )
            _compare_fates(world, seed=seed, batch=name == "batch", result=result)
        stats = emu.stats()
        billed = stats["billed"]
        counts = worlds["batch"].ledger().counts()
        result.billed = {
            "submissions": sum(stats["submissions"].values()),
            "answers": billed["batch_rows"] + billed["interactions"] + billed["generate_calls"],
            "prompt_tokens": billed["prompt_tokens"],
            "candidates_tokens": billed["candidates_tokens"],
            "total_tokens": billed["total_tokens"],
            "thoughts_tokens": billed["thoughts_tokens"],
            "cached_tokens": billed["cached_tokens"],
        }
        result.recorded = {
            "submissions": counts.attempts,
            "answers": -1,
            "prompt_tokens": counts.prompt_tokens,
            "candidates_tokens": counts.candidates_tokens,
            "total_tokens": counts.total_tokens,
            "thoughts_tokens": counts.usage.thoughts_tokens,
            "cached_tokens": counts.usage.cached_tokens,
        }
        for what in BILLED_FIGURES:
            if result.billed[what] != result.recorded[what]:
                result.problems.append(
                    f"billed {what} {result.billed[what]} != recorded {result.recorded[what]}"
                )
        engine = create_engine(url)
        with engine.connect() as conn:
            jobs_by_state = dict(
                conn.execute(text("SELECT state, COUNT(*) FROM batch_jobs GROUP BY state")).all()
            )
            recorded_deliveries = conn.execute(
                text("SELECT COUNT(*) FROM webhook_deliveries")
            ).scalar()
        engine.dispose()
        result.webhooks = {
            "batch jobs by final state": {str(k): int(v) for k, v in jobs_by_state.items()},
            "deliveries recorded (distinct ids)": int(recorded_deliveries or 0),
            "sent": stats["webhooks_sent"],
            "failed_attempts": stats["webhooks_failed"],
            "batches_created": stats["batches_created"],
            "interactions_created": stats["interactions_created"],
            **({f"reconcile {k}": v for k, v in rx.reconciles.items()} if rx else {}),
        }
    return result
