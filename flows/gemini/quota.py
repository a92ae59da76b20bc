"""One Gemini quota for every worker: per-model limits kept on the Prefect server.

Each worker has its own thread pools and semaphores; three of them on three machines would
each spend the whole project quota. The limits therefore live where every worker already
looks, the Prefect server, as two global concurrency limits per model:

* ``gemini-ledger:<model>:rpm``: a rate limit (``prefect.concurrency.sync.rate_limit``). A
  global concurrency limit with a slot decay is a token bucket: ``limit`` slots (the burst)
  that free themselves at ``slot_decay_per_second``. In any window of T seconds it lets at
  most ``burst + decay * T`` requests through, so for ``--rpm N`` the burst is one second's
  worth and the decay ``(N - 2 * burst) / 60``: at most ``N - burst`` a minute at the server,
  and one burst of margin for the time between taking a slot and the request arriving.
* ``gemini-ledger:<model>:inflight``: a plain concurrency limit, held during the request.

:func:`request_slot` (threads) and :func:`arequest_slot` (asyncio) take one slot of each
around every request that the per-model quota counts: ``generate_content`` (direct),
``interactions.create`` (background) and ``batches.create`` (batch, one per job). Polls
(``interactions.get``, ``batches.get``/``list``) and file transfers are not generation
requests and take none.

A 429 slows every worker: :func:`note_failure` writes the time before
which no request for that model should leave into a Prefect Variable
(``gemini-ledger-not-before-<model>``), and every slot first waits until then. A Variable
because it is the simplest thing every worker can read: one small value, last writer wins
(two workers that got a 429 at the same moment write nearly the same time), and a read
costs one request, made at most once a second per process (:data:`PAUSE_READ_EVERY_S`).
A limit's slot decay cannot express "nobody until 12:00:07". A 429 without a RetryInfo
(some carry only a ``google.rpc.Help`` link) pauses the model for :data:`DEFAULT_PAUSE_S`.

When a model has no limit on the server (or no Prefect API is configured), requests go out
unlimited, as without this module, and the process says so once in its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from flows import _caches
from flows._prefect_api import api_available
from ledger import Failure

__all__ = [
    "DEFAULT_PAUSE_S",
    "LIMITS_TTL_S",
    "PAUSE_READ_EVERY_S",
    "AppliedLimit",
    "ModelLimits",
    "apply_limits",
    "arequest_slot",
    "burst_of",
    "inflight_name",
    "limits_for",
    "not_before",
    "note_failure",
    "pause_variable",
    "rate_name",
    "request_slot",
    "reset_cache",
]

_PREFIX = "gemini-ledger"
LIMITS_TTL_S = 60.0  # how long a process trusts what it read about a model's limits
PAUSE_READ_EVERY_S = 1.0  # how often a process re-reads a model's shared "not before"
# The pause after a 429 that names no delay: per-minute quotas clear within a minute, and
# the RetryInfo delays the API sends with them are mostly tens of seconds.
DEFAULT_PAUSE_S = 30.0

_log = logging.getLogger("gemini_ledger.quota")


def _bare(model: str) -> str:
    return model.removeprefix("models/")


def rate_name(model: str) -> str:
    """The rate limit's name: ``gemini-ledger:<model>:rpm``."""
    return f"{_PREFIX}:{_bare(model)}:rpm"


def inflight_name(model: str) -> str:
    """The concurrency limit's name: ``gemini-ledger:<model>:inflight``."""
    return f"{_PREFIX}:{_bare(model)}:inflight"


def pause_variable(model: str) -> str:
    """The Variable holding the model's shared "not before" (names allow ``[a-z0-9_-]``)."""
    return f"{_PREFIX}-not-before-" + re.sub(r"[^a-z0-9]+", "-", _bare(model).lower()).strip("-")


def burst_of(rpm: int) -> int:
    """The bucket's size for ``rpm`` requests a minute: one second's worth, at least 1."""
    return max(1, rpm // 60)


def _decay_of(rpm: int) -> float:
    burst = burst_of(rpm)
    return max(rpm - 2 * burst, 1) / 60.0


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run's logger inside a flow or task run (it reaches the Prefect UI), else ours."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return _log


# --- reading the limits ---------------------------------------------------------------------


@dataclass(frozen=True)
class ModelLimits:
    """What the server holds for one model; ``None``: no such limit (unlimited)."""

    rpm: int | None  # the rate limit's bucket (burst); the minute's ceiling is in the log
    inflight: int | None
    per_minute: float | None = None

    @property
    def any(self) -> bool:
        return self.rpm is not None or self.inflight is not None


_NONE = ModelLimits(None, None)
# What this process read from the server lives with the other process caches
# (flows._caches, whose reset() forgets it).
_lock = _caches.lock
_limits: dict[str, tuple[float, ModelLimits]] = _caches.quota_limits
_said: set[str] = _caches.quota_said
_pauses: dict[str, tuple[float, float]] = _caches.quota_pauses


def reset_cache() -> None:
    """Forget the limits and pauses this process read (after ``apply_limits``; a process
    otherwise re-reads on its own). ``flows._caches.reset`` forgets them with the rest."""
    with _lock:
        _limits.clear()
        _said.clear()
        _pauses.clear()


def _read_limit(client: Any, name: str) -> Any | None:
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        return None


def limits_for(model: str) -> ModelLimits:
    """The model's limits on the Prefect server, read at most once a minute per process."""
    model = _bare(model)
    now = time.monotonic()
    with _lock:
        cached = _limits.get(model)
        if cached is not None and now - cached[0] < LIMITS_TTL_S:
            return cached[1]
    found = _NONE
    if api_available():
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            rate = _read_limit(client, rate_name(model))
            inflight = _read_limit(client, inflight_name(model))
        if rate is None or not rate.active:
            burst, per_minute = None, None
        else:
            # The most a sliding minute lets through (see the module doc).
            burst = int(rate.limit)
            per_minute = burst + (rate.slot_decay_per_second or 0.0) * 60
        found = ModelLimits(
            burst,
            int(inflight.limit) if inflight is not None and inflight.active else None,
            per_minute,
        )
    with _lock:
        _limits[model] = (now, found)
        first = model not in _said
        _said.add(model)
    if first:
        log = _logger()
        if found.any:
            log.info(
                "%s: Gemini quota shared through Prefect: at most %s requests a minute,"
                " %s in flight",
                model,
                f"{found.per_minute:.0f}" if found.per_minute is not None else "unlimited",
                found.inflight if found.inflight is not None else "unlimited",
            )
        else:
            log.info(
                "%s: no Prefect concurrency limits for this model: requests are not limited"
                " across workers (gemini-ledger limits apply sets them)",
                model,
            )
    return found


# --- the shared pause after a 429 ----------------------------------------------------------


def _as_time(value: Any) -> float:
    """A stored "not before" (epoch seconds); anything else reads as none."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def not_before(model: str, *, fresh: bool = False) -> float:
    """The wall-clock time before which no request for ``model`` should leave (0: none)."""
    model = _bare(model)
    now = time.monotonic()
    with _lock:
        cached = _pauses.get(model)
        if not fresh and cached is not None and now - cached[0] < PAUSE_READ_EVERY_S:
            return cached[1]
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        variable = client.read_variable_by_name(pause_variable(model))
    value = _as_time(variable.value if variable is not None else None)
    with _lock:
        _pauses[model] = (now, value)
    return value


def note_failure(model: str, failure: Failure) -> None:
    """After a 429, make every worker wait out its retry delay, or :data:`DEFAULT_PAUSE_S`
    when it names none (models with limits)."""
    if failure.code != "429" or not limits_for(model).any:
        return
    delay = failure.retry_delay or DEFAULT_PAUSE_S
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate
    from prefect.exceptions import ObjectAlreadyExists

    model = _bare(model)
    until = time.time() + delay
    name = pause_variable(model)
    with get_client(sync_client=True) as client:
        current = client.read_variable_by_name(name)
        if current is None:
            try:
                client.create_variable(VariableCreate(name=name, value=until))
            except ObjectAlreadyExists:
                # Another worker's 429 created it a moment ago: both times are about now +
                # delay, so overwriting with ours is as good as keeping theirs.
                client.update_variable(VariableUpdate(name=name, value=until))
        elif _as_time(current.value) < until:
            client.update_variable(VariableUpdate(name=name, value=until))
    with _lock:
        _pauses[model] = (time.monotonic(), until)
    _logger().warning("%s: 429, every worker pauses this model for %.1f s", model, delay)


def _pause_left(model: str) -> float:
    return max(0.0, not_before(model) - time.time())


# --- taking a slot ------------------------------------------------------------------------


@contextlib.contextmanager
def request_slot(model: str) -> Iterator[None]:
    """Around one request that the model's quota counts (threads)."""
    limits = limits_for(model)
    if not limits.any:
        yield
        return
    from prefect.concurrency.sync import concurrency, rate_limit

    while (left := _pause_left(model)) > 0:
        time.sleep(left)
    if limits.rpm is not None:
        rate_limit(rate_name(model), occupy=1)
    if limits.inflight is None:
        yield
        return
    with concurrency(inflight_name(model), occupy=1):
        yield


@contextlib.asynccontextmanager
async def arequest_slot(model: str) -> AsyncIterator[None]:
    """Around one request that the model's quota counts (asyncio)."""
    limits = await asyncio.to_thread(limits_for, model)
    if not limits.any:
        yield
        return
    from prefect.concurrency.asyncio import concurrency, rate_limit

    while (left := await asyncio.to_thread(_pause_left, model)) > 0:
        await asyncio.sleep(left)
    if limits.rpm is not None:
        await rate_limit(rate_name(model), occupy=1)
    if limits.inflight is None:
        yield
        return
    async with concurrency(inflight_name(model), occupy=1):
        yield


# --- creating the limits (gemini-ledger limits apply) -------------------------------------


@dataclass(frozen=True)
class AppliedLimit:
    """One limit ``apply_limits`` looked at: what it is now and what was done."""

    name: str
    limit: int
    slot_decay_per_second: float
    action: str  # created, updated, unchanged

    def describe(self) -> str:
        what = (
            f"bucket of {self.limit}, {self.slot_decay_per_second:.3f} slots/s"
            if self.slot_decay_per_second
            else f"{self.limit} at a time"
        )
        return f"{self.action}: {self.name} ({what})"


def apply_limits(
    models: Sequence[str], *, rpm: int | None, concurrency: int | None
) -> list[AppliedLimit]:
    """Create or update each model's limits on the Prefect server; idempotent."""
    if rpm is not None and rpm < 1:
        raise ValueError("--rpm must be at least 1")
    if concurrency is not None and concurrency < 1:
        raise ValueError("--concurrency must be at least 1")
    if not api_available():
        raise ValueError("no Prefect API configured: set PREFECT_API_URL to the shared server")
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    from flows._prefect_api import check_api

    if url := get_current_settings().api.url:
        check_api(url)
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )

    wanted: list[tuple[str, int, float]] = []
    for model in dict.fromkeys(_bare(m) for m in models):
        if rpm is not None:
            wanted.append((rate_name(model), burst_of(rpm), round(_decay_of(rpm), 6)))
        if concurrency is not None:
            wanted.append((inflight_name(model), concurrency, 0.0))
    done: list[AppliedLimit] = []
    with get_client(sync_client=True) as client:
        for name, limit, decay in wanted:
            existing = _read_limit(client, name)
            if existing is None:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(
                        name=name, limit=limit, slot_decay_per_second=decay, active=True
                    )
                )
                action = "created"
            elif (
                existing.limit == limit
                and math.isclose(existing.slot_decay_per_second or 0.0, decay, abs_tol=1e-9)
                and existing.active
            ):
                action = "unchanged"
            else:
                client.update_global_concurrency_limit(
                    name,
                    GlobalConcurrencyLimitUpdate(
                        limit=limit, slot_decay_per_second=decay, active=True
                    ),
                )
                action = "updated"
            done.append(AppliedLimit(name, limit, decay, action))
    reset_cache()
    return done
