"""Delivering results, the same on every channel: done -> on_result -> consumed.

A pass claims rows a small group at a time under its own token (``Ledger.claim_done``)
and holds them while it works: a :class:`flows.run._renewal.Renewal` renews its claims every
quarter of the stale age (``older_than``), and before each side effect the pass renews the
row in hand and checks it is still its own (``Ledger.renew_delivery``, a compare-and-set on
the token; for the rows after the first of a group, in the transaction that consumed the row
before it, ``Ledger.consume_and_renew``: one write a row, not two). Another pass takes over
only a claim left unrenewed for ``older_than`` seconds: its pass died. ``consume`` records
only rows still claimed under the token, so a pass whose claim was taken over (its process
stalled past the age) records nothing more, stops, and says so (``Delivery.taken_over``).

A side effect that raises (or a stored result that no longer validates against the output
schema) is logged (redacted) and its row goes back to plain ``done`` for the next tick, until
it has failed ``GEMINI_LEDGER_DELIVERY_CAP`` times (default 5): then it is parked as
``delivery:<ExceptionName>`` with the message, result kept, so a replay delivers it again
without calling the API. ``consumed`` is written right after each side effect, one row at a
time: a kill between the two re-runs only the (idempotent) side effect in hand. A stop
(``flows.run._stop``: SIGTERM) is honoured between rows: the row in hand is recorded, the rest of
the group's claims are given back for the next tick.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson

from flows.crash import crash_point
from flows.pipeline import Pipeline, Prompt, Run
from flows.run._progress import note
from flows.run._renewal import Renewal
from flows.run._stop import stop_requested
from ledger import (
    DELIVERY_CLASS_PREFIX,
    PROMPT_CLASS_PREFIX,
    Channel,
    Enrollment,
    Ledger,
    NewJob,
    ParkedJob,
    Status,
    TakenOver,
    fingerprint_of,
    key_problem,
    redact,
    shown_key,
)

__all__ = [
    "DELIVERY_CAP_ENV",
    "Delivery",
    "DeliveryPoints",
    "deliver_done",
    "enroll_day",
]

DELIVERY_CAP_ENV = "GEMINI_LEDGER_DELIVERY_CAP"


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
    # The pass found a claim of its own taken over by another pass and stopped there.
    lost_claim: bool = False
    # Side effects it ran whose claim was taken over before it could record them (the
    # other pass may run them again; only a pass stalled past the stale age gets here).
    taken_over: int = 0
    # Rows a dead pass held (claims unrenewed past the stale age) that this one took over.
    took_over: TakenOver = field(default_factory=TakenOver)


def _crash(name: str | None) -> None:
    if name is not None:
        crash_point(name)


class _Claims:
    """One pass's delivery claims: taken a group at a time, kept while it works, and
    recorded only while they are still its own."""

    def __init__(
        self, ledger: Ledger, p: Pipeline[Any], token: str, group: int, renewal: Renewal
    ) -> None:
        self.ledger, self.p, self.token, self.group = ledger, p, token, group
        self.renewal = renewal
        self.failed: set[str] = set()
        self.renewed_at = ledger.clock()
        self.took_over = TakenOver()
        # The row the last consume renewed in its own transaction (Ledger.consume_and_renew):
        # the pass runs it next, already kept.
        self.kept_ahead: str | None = None

    def claim(self) -> list[tuple[str, str]]:
        """The next group: fresh claims (or stale ones of a dead pass) under the token."""
        with self.renewal.exclusive():
            held = self.ledger.claim_done(
                pipeline=self.p.name, token=self.token, limit=self.group, older_than=self.age
            )
            self.renewed_at = self.ledger.clock()
        self.took_over += held.taken_over
        # The claim also returns rows this token already holds: the ones whose side
        # effect failed earlier in this pass, which wait for the next tick.
        return [(key, result) for key, result in held if key not in self.failed]

    @property
    def age(self) -> float:
        return self.renewal.age_s

    def keep(self, key: str) -> bool:
        """Renew the claim on the row in hand (and, every quarter of the age, all the pass
        holds: rows whose side effect ran but is not consumed yet, failed ones); False when
        the row is no longer this pass's. The row the last :meth:`consume` renewed is kept
        already."""
        if key == self.kept_ahead:
            self.kept_ahead = None
            return True
        with self.renewal.exclusive():
            self._renew_all_when_due()
            return self.ledger.renew_delivery(self.token, key=key) == 1

    def _renew_all_when_due(self) -> None:
        now = self.ledger.clock()
        if now - self.renewed_at >= self.renewal.every:
            self.ledger.renew_delivery(self.token)
            self.renewed_at = now

    def consume(self, key: str, following: str | None) -> int:
        """Record the side effect that ran on ``key`` (only a row still claimed by this pass
        moves; the rows moved) and, in the same transaction, do what :meth:`keep` does for
        the row the pass runs next, ``following`` (one write a row, not two)."""
        self.kept_ahead = None
        with self.renewal.exclusive():
            if following is None:
                return self.ledger.consume([key], token=self.token)
            self._renew_all_when_due()
            moved, renewed = self.ledger.consume_and_renew(
                key, token=self.token, next_key=following
            )
        if renewed == 1:
            self.kept_ahead = following
        return moved

    def release(self, keys: list[str]) -> None:
        """Give back claims this pass will not deliver (it is stopping)."""
        with self.renewal.exclusive():
            self.ledger.release_done(keys, token=self.token)


def deliver_done(
    ledger: Ledger,
    p: Pipeline[Any],
    *,
    token: str,
    older_than: float,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    points: DeliveryPoints,
    group: int = 20,
    cap: int,
) -> Delivery:
    """Claim the pipeline's done rows ``group`` at a time under ``token``, run
    ``on_result``, mark them consumed; a claim unrenewed for ``older_than`` seconds is a
    dead pass's. ``cap``: failed deliveries after which a row is parked (the run's
    ``GEMINI_LEDGER_DELIVERY_CAP``)."""
    out = Delivery()
    why: dict[str, tuple[str, str]] = {}
    renewal = Renewal(
        lambda: ledger.renew_delivery(token) >= 0,  # a live pass never loses by renewing
        age_s=older_than,
        what=f"delivery claims {token}",
        log=log,
    )
    with renewal:
        claims = _Claims(ledger, p, token, group, renewal)
        try:
            _deliver_claimed(claims, out, why, log=log, points=points)
        finally:
            out.took_over = claims.took_over
            if out.took_over:
                log.warning("%s: %s", p.name, out.took_over.describe("delivery claims"))
            # Failed rows stay claimed during the pass (so a group is never claimed twice),
            # then go back to plain done for the next tick, or are parked at the cap.
            for key in out.failed:
                name, message = why[key]
                with renewal.exclusive():
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


def _deliver_claimed(
    claims: _Claims,
    out: Delivery,
    why: dict[str, tuple[str, str]],
    *,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    points: DeliveryPoints,
) -> None:
    """The pass's loop: group by group, row by row, each recorded right after its side
    effect; it stops where a claim was taken over, or between rows on a stop (SIGTERM)."""
    p = claims.p
    while claimed := claims.claim():
        out.claimed += len(claimed)
        for n, (key, result) in enumerate(claimed):
            if stop_requested():
                # Between rows: the claims not yet delivered go back for the next tick.
                claims.release([k for k, _ in claimed[n:]])
                return
            if not claims.keep(key):
                out.lost_claim = True
                log.warning(
                    "%s: the delivery claim on %s was taken over by another pass (this one"
                    " went unrenewed for %ss): stopping, the rest is that pass's",
                    p.name,
                    key,
                    claims.age,
                )
                claims.release([k for k, _ in claimed[n + 1 :]])  # still ours: not held idle
                return
            try:
                value = p.output.model_validate_json(result)
                kept = _kept(claims.ledger, key) if p.wants_kept else None
                _crash(points.before_effect)
                p.deliver(key, value, kept)
                _crash(points.after_effect)
            except Exception as exc:
                out.failed.append(key)
                claims.failed.add(key)
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
            following = claimed[n + 1][0] if n + 1 < len(claimed) else None
            if not _record(claims, key, following, out, log):
                claims.release([k for k, _ in claimed[n + 1 :]])
                return


def _kept(ledger: Ledger, key: str) -> Any:
    """What the item kept (``Prompt.keep``), read from its stored request; None if nothing."""
    payload = ledger.get(key).payload
    return orjson.loads(payload).get("keep") if payload else None


def _record(
    claims: _Claims,
    done: str,
    following: str | None,
    out: Delivery,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> bool:
    """Consume the row whose side effect ran, renewing the claim on the ``following`` one;
    False (and said) when the row was no longer this pass's: it stops."""
    moved = claims.consume(done, following)
    out.consumed += moved
    note(delivered=moved)  # the tick's progress artifact (flows.run._progress)
    if moved == 1:
        return True
    out.taken_over += 1 - moved
    out.lost_claim = True
    log.error(
        "%s: %d side effects ran after another pass took their claims over (this one went"
        " unrenewed for %ss; they may run again there): stopping",
        claims.p.name,
        1 - moved,
        claims.age,
    )
    return False


# Examples of each kind of bad item kept in the tick's report (the counts are exact).
_EXAMPLES = 5


@dataclass(slots=True)
class _Intake:
    """The day's items turned into jobs, each item's own mistake kept to that item.

    ``key_of`` raising, or giving a key the rules refuse (``ledger.key_problem``: not a str,
    empty, over 512 characters, anything but printable ASCII), refuses the item: there is no
    key to park it under, so it is counted and reported (``refused``). ``build_prompt``
    raising (or returning settings the model or channel cannot take, or keeping a secret)
    parks the item under its key as ``prompt:<Error>``. A key given by an earlier item of
    the day is a duplicate: the first item keeps it, the later ones are counted.
    """

    p: Pipeline[Any]
    run: Run
    out: Enrollment
    rebuildable: set[str]
    parked: list[ParkedJob] = field(default_factory=list)
    rebuilt: list[NewJob] = field(default_factory=list)
    # 8-byte digests, not the keys: a day of a million keys costs tens of MB, not hundreds.
    seen: set[bytes] = field(default_factory=set)

    def jobs(self) -> Iterator[NewJob]:
        for n, item in enumerate(self.p.items_of(self.run), 1):
            try:
                key = self.p.key_for(item, self.run)
            except Exception as exc:
                self._refuse(f"item {n}: key_of raised {_error(exc)}")
                continue
            if (problem := key_problem(key)) is not None:
                self._refuse(f"item {n}: {problem}: {shown_key(key)}")
                continue
            digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
            if digest in self.seen:
                self.out.duplicates += 1
                if len(self.out.duplicate_examples) < _EXAMPLES:
                    self.out.duplicate_examples.append(f"item {n}: {key}")
                continue
            self.seen.add(digest)
            try:
                job = _job(key, self.p.prompt_for(item, self.run))
            except Exception as exc:
                self._park(key, exc)
                continue
            if key in self.rebuildable:
                self.rebuilt.append(job)
                continue
            yield job

    def _refuse(self, line: str) -> None:
        self.out.refused += 1
        if len(self.out.refused_examples) < _EXAMPLES:
            self.out.refused_examples.append(redact(line)[:300])

    def _park(self, key: str, exc: Exception) -> None:
        name = type(exc).__name__
        message = redact(_error(exc))
        self.parked.append(ParkedJob(key, f"{PROMPT_CLASS_PREFIX}{name}", message))
        if len(self.out.prompt_parked_examples) < _EXAMPLES:
            self.out.prompt_parked_examples.append(f"{key}: {message[:200]}")


def _job(key: str, prompt: Prompt) -> NewJob:
    """The job as the ledger stores it: the prompt (settings not given left out), with what
    the item keeps; its fingerprint is the request's alone, so the same poison input under
    many keys is still one."""
    payload = prompt.model_dump_json(exclude_none=True)
    if prompt.keep is None:
        return NewJob(key, payload)
    kept = orjson.dumps(prompt.keep).decode()
    if redact(kept) != kept:
        # Kept data lives in the ledger with the row: a secret must never get there.
        raise ValueError("keep carries a secret: keep ids, never credentials")
    request = prompt.model_dump_json(exclude_none=True, exclude={"keep"})
    return NewJob(key, payload, fingerprint_of(request))


def _error(exc: BaseException) -> str:
    """``Name: message`` on one line."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def enroll_day(
    ledger: Ledger,
    p: Pipeline[Any],
    day: date,
    *,
    params: Mapping[str, Any] | None = None,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
) -> Enrollment:
    """Enroll the day's items (an existing key is never changed): new, already known, and
    keys another pipeline owns, which are left to it and reported, never taken. The hooks
    that take a :class:`flows.pipeline.Run` get ``day`` and the run's ``params``.

    One item's mistake is that item's own failure and the rest of the day goes on (see
    :class:`_Intake`): refused items, items parked ``prompt:<Error>`` and duplicate keys are
    counted in the report with examples and logged. A row parked ``prompt:<Error>`` earlier
    whose item builds its prompt now is sent back to pending with that request.
    """
    logger = log or logging.getLogger(__name__)
    channel, name = Channel(p.channel).value, p.name
    run = Run(day, params or {})
    intake = _Intake(p, run, Enrollment(), ledger.prompt_parked(pipeline=name))
    out = ledger.enroll_counted(intake.jobs(), pipeline=name, channel=channel, model=p.model)
    # The intake's counters live on its own record; the ledger's counts join them.
    out.refused, out.refused_examples = intake.out.refused, intake.out.refused_examples
    out.duplicates, out.duplicate_examples = intake.out.duplicates, intake.out.duplicate_examples
    out.prompt_parked = ledger.enroll_parked(
        intake.parked, pipeline=name, channel=channel, model=p.model
    )
    out.prompt_parked_examples = intake.out.prompt_parked_examples
    out.already_known += len(intake.parked) - out.prompt_parked
    out.prompt_rebuilt = ledger.rebuild_prompts(intake.rebuilt, pipeline=name)
    out.already_known += len(intake.rebuilt) - out.prompt_rebuilt
    _log_enrollment(logger, name, out)
    return out


def _log_enrollment(
    log: logging.Logger | logging.LoggerAdapter[logging.Logger], name: str, out: Enrollment
) -> None:
    """One line per kind of bad item (with examples), so a morning's log shows them."""
    if out.foreign:
        log.warning(
            "%s: %d keys already belong to another pipeline and were left to it (e.g. %s):"
            " make key_of start with this pipeline's own name",
            name,
            out.foreign,
            ", ".join(f"{key} ({owner})" for key, owner in out.foreign_examples),
        )
    if out.refused:
        log.warning(
            "%s: %d items refused, their key could not be made (key rules: README,"
            " 'Keys and names'; e.g. %s)",
            name,
            out.refused,
            "; ".join(out.refused_examples),
        )
    if out.prompt_parked:
        log.warning(
            "%s: %d items parked as prompt:<Error>, build_prompt raised (e.g. %s)",
            name,
            out.prompt_parked,
            "; ".join(out.prompt_parked_examples),
        )
    if out.duplicates:
        log.warning(
            "%s: %d items gave a key an earlier item of the day already gave; each key is"
            " sent once, for its first item (e.g. %s): make key_of unique per item",
            name,
            out.duplicates,
            "; ".join(out.duplicate_examples),
        )
    if out.prompt_rebuilt:
        log.info("%s: %d rows parked prompt:<Error> rebuilt and pending", name, out.prompt_rebuilt)
