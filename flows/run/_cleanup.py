"""Deleting what the API keeps for a night once no row needs it: the one loop that media
uploads (``flows.run._upload_rows.clean_uploads``) and context caches
(``flows.run._prefix_cache.clean_caches``) share.

Each thing due is deleted at the API, then marked deleted in the ledger (a kill between the
two leaves it marked live: the next tick deletes it again and takes "already gone" as done).
A delete that fails otherwise is counted on its ledger row and retried on a later tick,
never a row's attempt. It is a step like the others for a graceful stop (SIGTERM): the delete
in hand finishes and is marked, the rest wait for the next tick, and the tick ends
(``raise_if_stopped``: 143) rather than run on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from flows.crash import crash_point
from flows.run._stop import raise_if_stopped, stop_requested
from ledger import redact

__all__ = ["delete_due"]

T = TypeVar("T")


def delete_due(
    due: Iterable[T],
    *,
    delete: Callable[[T], Any],
    gone: Callable[[BaseException], bool],
    failed: Callable[[T, str], None],
    deleted: Callable[[T], bool],
    point: str,
    what: Callable[[T], str],
    log: logging.Logger | Any,
    pipeline: str,
) -> int:
    """Delete each of ``due`` (``delete``), mark it (``deleted``); returns how many were
    marked. An error ``gone`` says means it was already gone (as good as deleted); any other
    is recorded with ``failed`` for a later tick. Raises ``Stopped`` once a stop was asked
    for (after the delete in hand)."""
    count = 0
    for rec in due:
        if stop_requested():
            log.info("%s: stopping: %d deleted, the rest left for the next tick", pipeline, count)
            break
        try:
            delete(rec)
        except Exception as exc:
            if not gone(exc):
                failed(rec, redact(str(exc)))
                log.warning("%s: could not delete %s: %s", pipeline, what(rec), redact(str(exc)))
                continue
        crash_point(point)
        if deleted(rec):
            count += 1
    raise_if_stopped()
    return count
