"""Delivering results, the same on every channel: done -> on_result -> consumed.

Rows are claimed first (``Ledger.claim_done``), so overlapping ticks never run one side
effect twice; a claim left by a dead tick is taken over after ``older_than`` seconds. A
side effect that raises (or a stored result that no longer validates against the output
schema) is logged (redacted) and its row goes back to plain ``done`` for the next tick, until
it has failed ``GEMINI_LEDGER_DELIVERY_CAP`` times (default 5): then it is parked as
``delivery:<ExceptionName>`` with the message, result kept, so a replay delivers it again
without calling the API. ``consumed`` is written right after each side effect, one row at a
time: a kill between the two re-runs only the (idempotent) side effect in hand. A stop
(``flows._stop``: SIGTERM) is honoured between rows: the row in hand is recorded, the rest of
the pass's claims are given back for the next tick.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from flows._stop import stop_requested
from flows.crash import crash_point
from flows.pipeline import Pipeline
from ledger import DELIVERY_CLASS_PREFIX, Channel, Enrollment, Ledger, NewJob, Status, redact

__all__ = [
    "DELIVERY_CAP_ENV",
    "Delivery",
    "DeliveryPoints",
    "deliver_done",
    "delivery_cap",
    "enroll_day",
]

DELIVERY_CAP_ENV = "GEMINI_LEDGER_DELIVERY_CAP"


def delivery_cap() -> int:
    """GEMINI_LEDGER_DELIVERY_CAP: failed deliveries after which a row is parked."""
    from flows.settings import load_settings

    return load_settings().delivery_cap


@dataclass(frozen=True, slots=True)
class DeliveryPoints:
    """The channel's crash point names around a side effect (None: no point there)."""

    before_effect: str | None = None
    after_effect: str | None = None
    before_consume: str | None = None
    after_failure: str | None = None  # a failed delivery counted, the cap not yet reached


@dataclass(slots=True)
class Delivery:
    """What one delivery pass did."""

    claimed: int = 0
    consumed: int = 0
    failed: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    parked: list[str] = field(default_factory=list)


def _crash(name: str | None) -> None:
    if name is not None:
        crash_point(name)


def deliver_done(
    ledger: Ledger,
    p: Pipeline[Any],
    *,
    token: str,
    older_than: float,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    points: DeliveryPoints,
    page: int = 500,
    cap: int | None = None,
) -> Delivery:
    """Claim the pipeline's done rows page by page, run ``on_result``, mark them consumed;
    ``cap``: failed deliveries after which a row is parked (default: the setting)."""
    cap = delivery_cap() if cap is None else cap
    out = Delivery()
    failed_keys: set[str] = set()
    why: dict[str, tuple[str, str]] = {}
    try:
        while True:
            # The claim also returns rows this token already holds: the ones whose side
            # effect failed earlier in this pass, which wait for the next tick.
            claimed = [
                (key, result)
                for key, result in ledger.claim_done(
                    pipeline=p.name, token=token, limit=page, older_than=older_than
                )
                if key not in failed_keys
            ]
            if not claimed:
                break
            out.claimed += len(claimed)
            for n, (key, result) in enumerate(claimed):
                if stop_requested():
                    # Between rows: the claims not yet delivered go back for the next tick.
                    ledger.release_done([k for k, _ in claimed[n:]], token=token)
                    break
                try:
                    value = p.output.model_validate_json(result)
                    _crash(points.before_effect)
                    p.on_result(key, value)
                    _crash(points.after_effect)
                except Exception as exc:
                    out.failed.append(key)
                    failed_keys.add(key)
                    out.errors[type(exc).__name__] += 1
                    why[key] = (type(exc).__name__, f"{type(exc).__name__}: {exc}")
                    log.error(
                        "%s: on_result failed for %s: %s",
                        p.name,
                        key,
                        redact(f"{type(exc).__name__}: {exc}")[:500],
                    )
                    continue
                _crash(points.before_consume)
                out.consumed += ledger.consume([key])
            if stop_requested():
                break
    finally:
        # Failed rows stay claimed during the pass (so a page is never claimed twice), then
        # go back to plain done for the next tick, or are parked at the cap.
        for key in out.failed:
            name, message = why[key]
            status = ledger.fail_delivery(
                key,
                token=token,
                error_class=f"{DELIVERY_CLASS_PREFIX}{name}",
                message=message,
                cap=cap,
            )
            if status == Status.PARKED:
                out.parked.append(key)
                log.error("%s: %s parked after %d failed deliveries", p.name, key, cap)
            else:
                _crash(points.after_failure)
    if out.consumed or out.failed:
        log.info(
            "%s: delivered %d results, %d side effects failed",
            p.name,
            out.consumed,
            len(out.failed),
        )
    return out


def enroll_day(
    ledger: Ledger,
    p: Pipeline[Any],
    day: date,
    *,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
) -> Enrollment:
    """Enroll the day's items (an existing key is never changed): new, already known, and
    keys another pipeline owns, which are left to it and reported, never taken."""
    jobs = (
        NewJob(p.key_of(item, day), p.build_prompt(item).model_dump_json())
        for item in p.load_items(day)
    )
    out = ledger.enroll_counted(
        jobs, pipeline=p.name, channel=Channel(p.channel).value, model=p.model
    )
    if out.foreign:
        (log or logging.getLogger(__name__)).warning(
            "%s: %d keys already belong to another pipeline and were left to it (e.g. %s):"
            " make key_of start with this pipeline's own name",
            p.name,
            out.foreign,
            ", ".join(f"{key} ({owner})" for key, owner in out.foreign_examples),
        )
    return out
