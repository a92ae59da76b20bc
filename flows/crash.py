"""Named crash points, armed through the environment, for proving recovery.

``crash_point("batch.after_create")`` does nothing unless ``GEMINI_LEDGER_CRASH_AT`` names
that point (comma-separated names, or ``name@N`` to die on its N-th visit). When armed,
the process kills itself with SIGKILL: no exception handler, no ``finally``, no flush,
just as a power cut or an OOM kill would. ``GEMINI_LEDGER_CRASH_SIGNAL=TERM`` sends SIGTERM
there instead (what Prefect's cancellation and a worker's shutdown send): the process goes on
and stops gracefully (``flows.run._stop``). ``GEMINI_LEDGER_CRASH_TRACE`` names a file that
every visited point is appended to, so a test can prove each point is reached.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter

__all__ = ["CRASH_AT_ENV", "CRASH_SIGNAL_ENV", "CRASH_TRACE_ENV", "crash_armed", "crash_point"]

CRASH_AT_ENV = "GEMINI_LEDGER_CRASH_AT"
CRASH_SIGNAL_ENV = "GEMINI_LEDGER_CRASH_SIGNAL"  # KILL (default) or TERM
CRASH_TRACE_ENV = "GEMINI_LEDGER_CRASH_TRACE"
_visits: Counter[str] = Counter()
# Ticks visit points from several threads (direct calls, background polls): one visit at a
# time, so that no other thread records a visit between an armed point's line in the trace
# and its SIGKILL, and the trace's last line is always the point that killed the process.
_lock = threading.Lock()


def _armed() -> dict[str, int]:
    spec = os.environ.get(CRASH_AT_ENV, "")
    armed: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, nth = part.partition("@")
        armed[name] = int(nth) if nth else 1
    return armed


def crash_armed() -> bool:
    """Whether this process has a crash point armed (``doctor`` warns: tests only)."""
    return bool(os.environ.get(CRASH_AT_ENV, "").strip())


def _signal() -> signal.Signals:
    name = os.environ.get(CRASH_SIGNAL_ENV, "KILL").strip().upper().removeprefix("SIG")
    return signal.Signals[f"SIG{name or 'KILL'}"]


def crash_point(name: str) -> None:
    """Die here with SIGKILL (or get the armed signal) if this point is armed; record the
    visit if tracing."""
    trace = os.environ.get(CRASH_TRACE_ENV)
    if not trace and CRASH_AT_ENV not in os.environ:
        return
    with _lock:
        if trace:
            with open(trace, "a", encoding="utf-8") as fh:
                fh.write(name + "\n")
        if CRASH_AT_ENV not in os.environ:
            return
        _visits[name] += 1
        if _armed().get(name) == _visits[name]:
            # SIGKILL cannot be blocked: it lands before kill() returns, the lock still held.
            # SIGTERM's handler only asks for a stop (in the main thread) and this goes on.
            os.kill(os.getpid(), _signal())
