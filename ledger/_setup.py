"""Faults of the setup: failures about the project or the machine, never about a row.

A refused or missing API key, a project without permission or billing, an API that cannot
be reached, an upload type the Files API refuses, a ledger that cannot be reached: the same
request would fail for every row, so no row is parked for it. :func:`setup_fault` recognises
one (an SDK or transport exception, or an already raised :class:`SetupFault`); the channel
that meets it gives its reservations back and halts the tick with the fault's one line.

Domain core: no SDK, HTTP client or Prefect import. An SDK or transport exception is
recognised only through the ``describe`` function the caller passes
(``flows._gemini_errors.describe``), as in the classifier; the fault is decided from its
neutral :class:`~ledger.ApiFailure`.
"""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from ledger._api_failure import ApiFailure, Transport
from ledger._classify import Describe
from ledger._errors import GeminiLedgerError, LedgerBusy
from ledger._redact import redact

__all__ = ["SetupFault", "SetupKind", "setup_fault"]


class SetupKind(enum.StrEnum):
    """What about the setup is wrong."""

    NO_KEY = "no_key"
    KEY_REFUSED = "key_refused"
    PERMISSION = "permission"
    PRECONDITION = "precondition"
    UNREACHABLE = "unreachable"
    UPLOAD_REFUSED = "upload_refused"
    LEDGER_UNREACHABLE = "ledger_unreachable"
    LEDGER_BUSY = "ledger_busy"
    # The API refused every batch submission (upload or batches.create) for several ticks
    # in a row: an outage or a quota that retrying alone has not cleared.
    SUBMISSION_REFUSED = "submission_refused"


_FIXES = {
    SetupKind.NO_KEY: "set GEMINI_API_KEY (any value works against the emulator)",
    SetupKind.KEY_REFUSED: "set GEMINI_API_KEY to a valid key of this project",
    SetupKind.PERMISSION: (
        "give the key's project access to the Gemini API (or use a key of a project that has it)"
    ),
    SetupKind.PRECONDITION: (
        "enable billing for the key's project, or use it from a region the API serves"
    ),
    SetupKind.UNREACHABLE: (
        "check the network, DNS and proxy (and GOOGLE_GEMINI_BASE_URL if set); the next tick"
        " tries again"
    ),
    SetupKind.UPLOAD_REFUSED: (
        "the Files API refused the request file's MIME type; upgrade gemini-ledger or report it"
    ),
    SetupKind.LEDGER_UNREACHABLE: "check LEDGER_DATABASE_URL and that the database is up",
    SetupKind.SUBMISSION_REFUSED: (
        "check the Gemini API status page and the project's batch quota; the rows wait, pending"
        " and unbilled, and the next tick tries again (GEMINI_LEDGER_BATCH_REFUSED_HALT sets"
        " after how many refusals a tick halts)"
    ),
    SetupKind.LEDGER_BUSY: (
        "nothing to fix unless it repeats: another process held the ledger's lock; the next tick"
        " retries"
    ),
}


class SetupFault(GeminiLedgerError):
    """A fault of the setup: the channel halts for this tick and parks nothing.

    ``cause`` says what went wrong (redacted), ``fix`` what to do; ``str()`` is the one line
    the flow run's Failed state and ``gemini-ledger tick`` show.
    """

    def __init__(self, kind: SetupKind | str, cause: str, fix: str | None = None) -> None:
        self.kind = SetupKind(kind)
        self.cause = redact(" ".join(str(cause).split()))[:300]
        self.fix = fix or _FIXES[self.kind]
        super().__init__(f"{self.cause}. Fix: {self.fix}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Prefect may pickle a run's exception: rebuild it from its parts.
        return (type(self), (self.kind.value, self.cause, self.fix))


# --- recognising one ---------------------------------------------------------------------


def setup_fault(
    error: BaseException | ApiFailure, describe: Describe | None = None
) -> SetupFault | None:
    """The :class:`SetupFault` ``error`` stands for, or None when it is about the row.

    ``describe`` (``flows._gemini_errors.describe``) recognises SDK and transport exceptions
    on ``error`` and along its chain of causes.
    """
    if isinstance(error, ApiFailure):
        return _from_api_failure(error)
    seen: set[int] = set()
    exc: BaseException | None = error
    while exc is not None and id(exc) not in seen and len(seen) < 8:
        seen.add(id(exc))
        found = _one(exc, describe)
        if found is not None:
            return found
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return None


def _one(exc: BaseException, describe: Describe | None) -> SetupFault | None:
    if isinstance(exc, SetupFault):
        return exc
    if type(exc).__name__ == "GatewayConfigError":  # flows.gateway: no key found
        return SetupFault(SetupKind.NO_KEY, f"no Gemini API key ({exc})")
    if isinstance(exc, LedgerBusy):  # a lock or deadlock: transient, not the configuration
        return SetupFault(SetupKind.LEDGER_BUSY, str(exc))
    if isinstance(exc, (OperationalError, InterfaceError)):
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return SetupFault(SetupKind.LEDGER_UNREACHABLE, f"cannot reach the ledger: {detail}")
    described = describe(exc) if describe is not None else None
    return _from_api_failure(described) if described is not None else None


def _from_api_failure(api: ApiFailure) -> SetupFault | None:
    if api.transport is Transport.CONNECT:
        # Could not connect at all (refused, DNS, no route): nothing was sent, nothing billed.
        # A connection dropped mid-request is not this: the request may have been billed, and
        # the classifier keeps it a retryable ``connection`` failure of the row.
        return SetupFault(SetupKind.UNREACHABLE, f"cannot reach the Gemini API ({api.message})")
    if api.transport is not None or api.http_code is None:
        return None
    code, message = api.http_code, api.message
    status = (api.status or "").upper()
    head = f"{code} {status}".strip()
    said = f"{head}: {message}" if message else head
    if api.reason == "API_KEY_INVALID":
        return SetupFault(
            SetupKind.KEY_REFUSED,
            f"the Gemini API refused the API key ({head} API_KEY_INVALID: {message})",
        )
    if code == 401 or status == "UNAUTHENTICATED":
        return SetupFault(SetupKind.KEY_REFUSED, f"the Gemini API refused the API key ({said})")
    if code == 403 or status == "PERMISSION_DENIED":
        return SetupFault(SetupKind.PERMISSION, f"the Gemini API denied permission ({said})")
    if status == "FAILED_PRECONDITION":
        return SetupFault(SetupKind.PRECONDITION, f"the project cannot use the Gemini API ({said})")
    if code == 400 and "mime type" in message.lower():
        return SetupFault(SetupKind.UPLOAD_REFUSED, f"the Files API refused the upload ({said})")
    return None
