"""Holding what a pass claimed: renew it while the pass is alive.

A pass holds rows by a token and a time: a delivery claim (``jobs.delivery_claim`` /
``claimed_at``), a reservation being sent (``jobs.reservation`` / ``reserved_at``), a batch
reservation (``batch_jobs.leased_at``). Another pass takes them over only once that time is
older than the channel's stale age, which means the holder stopped renewing: it died. A
:class:`Renewal` renews in a daemon thread every quarter of that age, so a live pass keeps
what it holds even inside one long call (an upload, a slow side effect), and a killed one
stops renewing with its process. The pass still checks its hold itself (a compare-and-set
on its token) before each side effect or send; the thread only keeps the hold fresh.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType

from ledger import redact

__all__ = ["LONGEST_BEAT_S", "RENEWALS_PER_AGE", "Renewal"]

# Renewals within one stale age: three may fail in a row (a busy ledger) before the hold
# lapses.
RENEWALS_PER_AGE = 4
# A taker judges a hold by its own stale age, not the holder's: a tick run with a long
# stale_s must still renew as often as a pass with the default ages (120 s) expects, or
# the webhook's reconcile flow or replay would take over a live claim.
LONGEST_BEAT_S = 30.0


class Renewal:
    """Renews a hold every ``age_s / RENEWALS_PER_AGE`` seconds (at most every
    ``LONGEST_BEAT_S``) until the block ends.

    ``renew`` returns False once the hold is lost (taken over): renewing stops and
    :attr:`lost` is set. An error while renewing is logged and tried again at the next
    beat. With ``age_s <= 0`` (every hold is stale at once, as recovery tests ask) nothing
    is renewed. :meth:`exclusive` keeps the pass's own writes on the held rows apart from a
    renewal (on PostgreSQL two statements locking the same rows in another order could
    deadlock).
    """

    def __init__(
        self,
        renew: Callable[[], bool],
        *,
        age_s: float,
        what: str,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self._renew = renew
        self.age_s = age_s
        self.every = min(age_s / RENEWALS_PER_AGE, LONGEST_BEAT_S)
        self._what = what
        self._log = log
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.lost = threading.Event()

    def __enter__(self) -> Renewal:
        if self.every > 0:
            self._thread = threading.Thread(
                target=self._run, name=f"renew {self._what}", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """No renewal runs inside this block."""
        with self._lock:
            yield

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                with self._lock:
                    held = self._renew()
            except Exception as exc:  # a busy or unreachable ledger: try at the next beat
                self._log.warning(
                    "could not renew %s: %s",
                    self._what,
                    redact(f"{type(exc).__name__}: {exc}")[:300],
                )
                continue
            if not held:
                self.lost.set()
                return
