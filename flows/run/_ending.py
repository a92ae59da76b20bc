"""A flow's own ending, kept for the command that called it.

:func:`flows.run._halt.halts` ends a flow Failed with the setup fault as the state's data, and
:func:`flows.run._stop.stops` ends it Cancelled with the :class:`~flows.run._stop.Stopped`;
calling the flow raises that exception again, which the CLI prints as one line (exit 1, or
143). Prefect loses the data in one case. When the answer to the run's final state proposal
is lost (a read timeout on a busy server, a dropped connection), its client sends the same
proposal again, and the server's ``PreventDuplicateTransitions`` rule rejects the repeat by
returning the state it stored, which carries no data (``prefect.server.orchestration.
core_policy``). Calling the flow then raises Prefect's wrapper, ``FailedRun`` or
``CancelledRun``, with the message alone: a command took that for a bug of ours (exit 2).

So each decorator keeps the exception it ended its flow with (:func:`ended_with`), and
:func:`own_endings`, around the flow calls of a command, raises it again in place of
Prefect's wrapper. The wrapper's message is the state's, which is the exception's own line:
that is how the two are matched (a flow of another thread keeps its own).
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import TypeVar

__all__ = ["ended_with", "own_endings"]

E = TypeVar("E", bound=BaseException)
_KEEP = 64  # endings no caller claimed (flows run by a worker) are forgotten past this
_kept: OrderedDict[str, BaseException] = OrderedDict()
_lock = threading.Lock()


def ended_with(exc: E) -> E:
    """Keep ``exc`` as the ending of the flow that returns its state; return it."""
    with _lock:
        _kept[str(exc)] = exc
        while len(_kept) > _KEEP:
            _kept.popitem(last=False)
    return exc


def _claim(line: str) -> BaseException | None:
    with _lock:
        return _kept.pop(line, None)


@contextlib.contextmanager
def own_endings() -> Iterator[None]:
    """Around flow calls: a Failed or Cancelled run whose state came back without its
    exception raises that exception (kept by :func:`ended_with`) instead of Prefect's
    wrapper; any other error passes through unchanged."""
    from prefect.exceptions import CancelledRun, FailedRun

    try:
        yield
    except (CancelledRun, FailedRun) as wrapper:
        own = _claim(str(wrapper))
        if own is None:
            raise
        raise own from wrapper
