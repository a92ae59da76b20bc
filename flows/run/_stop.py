"""A graceful stop: SIGTERM or SIGINT asks a running tick to stop between rows.

SIGTERM is what Prefect sends to cancel a run (the worker's runner, then SIGKILL after its
30 s grace) and what a worker's flow runs get when it shuts down. Without this, the signal
ended the tick wherever it was: every side effect of the delivery pass not yet recorded ran
again later, and creates in flight were never bound. With it:

- the tick installs the handlers for its run (:func:`stop_on_signals`); the first signal
  only sets a flag (:func:`request_stop`);
- a run cancelled in Prefect that no worker runs (``gemini-ledger tick`` reporting to a
  server) gets no signal: the run watches its own state (every 2 s) and sets the same flag
  once it is Cancelling;
- the loops that do one row's work at a time ask :func:`stop_requested` before they take
  the next one: the delivery pass (the side effect in hand finishes and is recorded
  ``consumed``, the rest of its claims are given back), the submits of the three channels
  (what was sent is bound, what was reserved and not sent is released), the reclaim polls
  and the batch jobs' loops;
- the tick checks the flag after each step (:func:`raise_if_stopped`) and ends
  **Cancelled** with one line (:class:`Stopped`); ``gemini-ledger tick`` exits
  ``128 + signal`` (143 for SIGTERM and a cancellation). The next tick carries on;
- a second signal stops at once: the handler that was there before (Prefect's, which
  reports the run Crashed, or the default) gets it.

The flag is a plain boolean, set and read under the GIL: a signal handler must not take a
lock the interrupted main thread may hold.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, TypeVar, cast

from flows.run._ending import ended_with
from ledger import TransientError

__all__ = [
    "STOP_SIGNALS",
    "Stopped",
    "raise_if_stopped",
    "request_stop",
    "stop_on_signals",
    "stop_requested",
    "stops",
    "wait",
]

F = TypeVar("F", bound=Callable[..., Any])
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_log = logging.getLogger("gemini_ledger.stop")


class _State:
    requested = False
    signum: int | None = None
    reason: str | None = None


class Stopped(TransientError):
    """The tick stopped on a signal between rows: what it began is recorded, what it had
    not sent is given back; the next tick carries on."""

    def __init__(self, signum: int | None, reason: str | None = None) -> None:
        name = signal.Signals(signum).name if signum else (reason or "a stop request")
        super().__init__(
            f"stopped by {name} between rows: the side effect in hand was recorded, what was"
            " sent is bound, what was not sent was given back; the next tick carries on"
        )
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """What the command exits with: ``128 + signal``, as a shell reports a signal."""
        return 128 + (self.signum or signal.SIGTERM)


def stop_requested() -> bool:
    """True once a stop was asked for: finish the row in hand, take no other."""
    return _State.requested


def request_stop(signum: int | None = None, *, reason: str | None = None) -> None:
    """Ask the running tick to stop between rows (what the first signal does)."""
    _State.signum = _State.signum or signum
    _State.reason = _State.reason or reason
    _State.requested = True


def raise_if_stopped() -> None:
    """Between a tick's steps: end the tick if a stop was asked for."""
    if _State.requested:
        raise Stopped(_State.signum, _State.reason)


def wait(seconds: float) -> bool:
    """Sleep up to ``seconds``, cut short by a stop; True when a stop was asked for."""
    deadline = time.monotonic() + seconds
    while not _State.requested:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(left, 0.2))
    return True


def _clear() -> None:
    _State.requested = False
    _State.signum = None
    _State.reason = None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """For one run: the first SIGTERM or SIGINT asks for a stop, a second stops at once.

    Only the main thread can install handlers; elsewhere (a flow called from a thread) the
    signals keep their handlers and this does nothing."""
    _clear()
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        # A second *signal* stops at once. A stop the cancel watcher asked for is not one:
        # the worker's SIGTERM for that same cancellation follows it, and must stop gently.
        if _State.signum is not None:
            # A second signal: the handler that was there before gets it, at once.
            for sig, old in previous.items():
                signal.signal(sig, old)
            signal.raise_signal(signum)
            return
        request_stop(signum)
        os.write(
            2,
            f"gemini-ledger: {signal.Signals(signum).name}: stopping after the row in hand"
            " (send it again to stop at once)\n".encode(),
        )

    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, handler)
    else:
        _log.debug("not the main thread: no stop handlers installed")
    try:
        yield
    finally:
        for signum, old in previous.items():
            if signal.getsignal(signum) is handler:
                signal.signal(signum, old)
        _clear()


def stops(func: F) -> F:
    """Decorate a flow function: its run listens for a stop (:func:`stop_on_signals`) and,
    when one ends it (:class:`Stopped`), ends Cancelled with the one line (calling the flow
    raises :class:`Stopped` again)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from prefect.states import Cancelled

        with stop_on_signals(), _watch_cancellation():
            try:
                return func(*args, **kwargs)
            except Stopped as exc:
                _run_log().warning("%s", exc)
                # Kept in case the server's answer to Cancelled loses it (flows.run._ending).
                return Cancelled(message=str(exc), data=ended_with(exc))

    return cast(F, wrapper)


def _run_log() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return _log


_WATCH_EVERY_S = 2.0


@contextlib.contextmanager
def _watch_cancellation(every_s: float = _WATCH_EVERY_S) -> Iterator[None]:
    """While the flow runs: a run set Cancelling in Prefect (the UI, ``prefect flow-run
    cancel``) asks for a stop, as SIGTERM does, also when no worker is there to send it."""
    from prefect.context import FlowRunContext

    run = FlowRunContext.get()
    run_id = run.flow_run.id if run is not None and run.flow_run is not None else None
    if run_id is None:
        yield
        return
    over = threading.Event()  # set by this thread's owner, never by a signal handler

    def watch() -> None:
        from prefect.client.orchestration import get_client

        try:
            with get_client(sync_client=True) as client:
                while not over.wait(every_s):
                    try:
                        state = client.read_flow_run(run_id).state
                    except Exception:  # the API unreachable for a moment: look again later
                        continue
                    if state is not None and state.is_cancelling() and not over.is_set():
                        # Not after the run ended: the flag is the process's, and a later
                        # flow in it (the demo, replay) would stop before delivering anything.
                        request_stop(reason="its cancellation in Prefect")
                        return
        except Exception as exc:  # no client: the run goes on, SIGTERM still stops it
            _log.warning("cannot watch the run for its cancellation: %s", exc)

    # The run's settings (its Prefect API) live in context variables: the thread gets them.
    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run, args=(watch,), name="gemini-ledger-cancel-watch", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        over.set()
        thread.join(timeout=10)
