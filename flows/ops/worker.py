"""``gemini-ledger worker start``: Prefect's process worker, stopped gently by Ctrl-C or SIGTERM.

``prefect worker start`` (Prefect 3.9.1), on SIGINT or SIGTERM, cancels its task groups, and
anyio SIGKILLs the flow-run processes it started when their wait is cancelled. Those
processes run in sessions of their own, so a terminal's Ctrl-C never reaches them either:
the tick in the middle of a delivery dies as a kill -9 would leave it, and Prefect shows the
run Running until the zombie automation marks it Crashed. This command runs the same worker
(``python -m prefect worker start`` with the arguments given) as its child and, on the
first SIGINT or SIGTERM:

1. pauses the worker (SIGSTOP): it takes no new run and kills none;
2. sends each flow run it started SIGTERM, as Prefect's own cancellation does: the tick stops
   between rows and ends Cancelled (``flows.run._stop``);
3. waits for them to end, at most :data:`GRACE_S` (Prefect's grace before its SIGKILL too);
   one still there is killed;
4. resumes the worker and sends it SIGTERM: with no run left, it exits.

The command then exits ``128 + signal`` (130 for Ctrl-C). A second signal stops at once:
the worker is resumed and gets it, and does what Prefect's worker does. The worker runs in a
session of its own (Ctrl-C reaches only this command) and gets SIGTERM if this command dies.
Finding the flow-run processes reads ``/proc`` (Linux); elsewhere step 2 finds none and the
worker stops as Prefect's does.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

__all__ = ["GRACE_S", "flow_run_processes", "run_worker"]

GRACE_S = 30.0
_PR_SET_PDEATHSIG = 1
_log = logging.getLogger("gemini_ledger.worker")


def flow_run_processes(worker: int) -> list[int]:
    """The live child processes of ``worker`` (a process worker's children are its runs)."""
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        state, parent = fields[0], int(fields[1])
        if parent == worker and state not in {"Z", "X"}:
            found.append(int(entry.name))
    return found


def _signal_run(pid: int, signum: int) -> None:
    """Signal a flow run and its group (Prefect starts each in a session of its own)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _term_with_parent() -> Callable[[], None]:
    parent = os.getpid()

    def arm() -> None:  # in the child, between fork and exec
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # this command died before the line above took effect
            os._exit(1)

    return arm


class _Signals:
    """The signals this command got, in order (set by the handler, read by the loop)."""

    def __init__(self) -> None:
        self.got: list[int] = []

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.got.append(signum)


def _wait_runs(worker: int, runs: list[int], signals: _Signals, grace_s: float) -> None:
    """Until the runs have ended, the grace is over, or a second signal came."""
    deadline = time.monotonic() + grace_s
    while len(signals.got) < 2:
        alive = set(flow_run_processes(worker)) & set(runs)
        if not alive:
            return
        if time.monotonic() > deadline:
            _log.warning("flow runs %s still running after %.0f s: killed", sorted(alive), grace_s)
            for pid in alive:
                _signal_run(pid, signal.SIGKILL)
            return
        time.sleep(0.1)


def run_worker(args: Sequence[str], *, grace_s: float = GRACE_S) -> int:
    """Run ``prefect worker start ARGS`` until it exits or a signal stops it gently; returns
    the exit code (the worker's, or ``128 + signal``)."""
    signals = _Signals()
    previous = {s: signal.signal(s, signals.handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", *args],
            start_new_session=True,
            preexec_fn=_term_with_parent(),
        )
        while worker.poll() is None and not signals.got:
            time.sleep(0.1)
        if worker.returncode is not None:
            return worker.returncode
        first = signals.got[0]
        name = signal.Signals(first).name
        print(
            f"gemini-ledger: {name}: stopping the worker's flow runs between rows, then the worker"
            " (send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            runs = flow_run_processes(worker.pid)
            for pid in runs:
                _signal_run(pid, signal.SIGTERM)
            _wait_runs(worker.pid, runs, signals, grace_s)
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        os.kill(worker.pid, signals.got[1] if len(signals.got) > 1 else signal.SIGTERM)
        try:
            worker.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        return 128 + first
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
