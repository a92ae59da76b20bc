"""Faults of the setup: failures about the project or the machine, never about a row.

A refused or missing API key, a key blocked for having no API restrictions, a project
without permission or billing, a retired or unknown model, a spent per-day quota (or none at
all), a full Files API storage, an API that cannot be reached, an upload type the Files API
refuses, a ledger that cannot be reached: the same request would fail for every row, so no
row is parked for it.
:func:`setup_fault` recognises one (an SDK or transport exception, or an already raised
:class:`SetupFault`); the channel that meets it gives its reservations back and halts the
tick with the fault's one line.

Domain core: no SDK, HTTP client or Prefect import. An SDK or transport exception is
recognised only through the ``describe`` function the caller passes
(``flows.gemini._errors.describe``), as in the classifier; the fault is decided from its
neutral :class:`~ledger.ApiFailure`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from ledger._api_failure import ApiFailure, Transport
from ledger._errors import GeminiLedgerError, LedgerBusy
from ledger._redact import redact
from ledger._verdicts import Describe, names_cached_content

__all__ = ["KeySource", "SetupFault", "SetupKind", "setup_fault"]


class SetupKind(enum.StrEnum):
    """What about the setup is wrong."""

    NO_KEY = "no_key"
    KEY_REFUSED = "key_refused"
    KEY_UNRESTRICTED = "key_unrestricted"
    PERMISSION = "permission"
    PRECONDITION = "precondition"
    MODEL_NOT_FOUND = "model_not_found"
    DAILY_QUOTA = "daily_quota"
    FILE_STORAGE = "file_storage"
    NO_QUOTA = "no_quota"
    UNREACHABLE = "unreachable"
    UPLOAD_REFUSED = "upload_refused"
    LEDGER_UNREACHABLE = "ledger_unreachable"
    # The Prefect API that holds the key's Secret block (or runs the flow) does not answer.
    PREFECT_UNREACHABLE = "prefect_unreachable"
    LEDGER_BUSY = "ledger_busy"
    # The API refused every batch submission (upload or batches.create) for several ticks
    # in a row: an outage or a quota that retrying alone has not cleared.
    SUBMISSION_REFUSED = "submission_refused"
    # A spending cap applies but the price table has no price for the pipeline's model: the
    # cap cannot be kept (flows.run._budget), so nothing is sent.
    UNPRICED = "unpriced"


_FIXES = {
    SetupKind.NO_KEY: (
        "gemini-ledger secret set api-key, or set GEMINI_API_KEY in the worker's environment"
    ),
    SetupKind.KEY_REFUSED: "replace the key with a valid key of this project where it is kept",
    # The Gemini API refuses requests from standard keys without restrictions since
    # 2026-06-19 (ai.google.dev/gemini-api/docs/api-key; announced on
    # discuss.ai.google.dev, "Action required: restrict Gemini API keys by June 19").
    SetupKind.KEY_UNRESTRICTED: (
        "restrict the API key to the Gemini API (Generative Language API): Google AI Studio,"
        " API keys, Add restrictions, or Cloud Console, Credentials, API restrictions; the"
        " Gemini API refuses unrestricted keys since 2026-06-19"
    ),
    SetupKind.PERMISSION: (
        "give the key's project access to the Gemini API (or use a key of a project that has it)"
    ),
    SetupKind.PRECONDITION: (
        "enable billing for the key's project, or use it from a region the API serves"
    ),
    SetupKind.MODEL_NOT_FOUND: (
        "set the pipeline's model= to a model the API serves (the model may be retired);"
        " `gemini-ledger doctor --live --pipeline P` checks it"
    ),
    SetupKind.DAILY_QUOTA: (
        "wait for the quota to reset (per-day quotas reset at midnight Pacific time), or raise"
        " it (ai.google.dev/gemini-api/docs/rate-limits); the next tick tries again"
    ),
    SetupKind.FILE_STORAGE: (
        "delete Files API files this project no longer needs (client.files.delete; the batch"
        " channel deletes its own once their jobs are over) or wait for them to expire (48 h);"
        " the next tick tries again"
    ),
    SetupKind.NO_QUOTA: (
        "this project has no quota for the model (limit: 0): enable billing for it, or choose"
        " a model its tier includes (ai.google.dev/gemini-api/docs/rate-limits)"
    ),
    SetupKind.UNREACHABLE: (
        "check the network, DNS and proxy (and GOOGLE_GEMINI_BASE_URL if set); the next tick"
        " tries again"
    ),
    SetupKind.UPLOAD_REFUSED: (
        "the Files API refused the request file's MIME type; upgrade gemini-ledger or report it"
    ),
    SetupKind.LEDGER_UNREACHABLE: "check LEDGER_DATABASE_URL and that the database is up",
    SetupKind.PREFECT_UNREACHABLE: (
        "check PREFECT_API_URL and that the Prefect server is up (prefect server start)"
    ),
    SetupKind.SUBMISSION_REFUSED: (
        "check the Gemini API status page and the project's batch quota; the rows wait, pending"
        " and unbilled, and the next tick tries again (GEMINI_LEDGER_BATCH_REFUSED_HALT sets"
        " after how many refusals a tick halts)"
    ),
    SetupKind.UNPRICED: (
        "add the model's price to a JSON price file named by LEDGER_PRICES_FILE (README, Cost"
        " and usage), or run the pipeline without a budget"
    ),
    SetupKind.LEDGER_BUSY: (
        "nothing to fix unless it repeats: another process held the ledger's lock; the next tick"
        " retries"
    ),
}


@dataclass(frozen=True)
class KeySource:
    """Where the API key the requests carried was kept, and how to put another one there.

    ``where`` completes "the key in ...": ``Secret block 'gemini-api-key'`` or
    ``GEMINI_API_KEY (the worker's environment)``. ``replace`` is the fix that puts a valid
    key at that place (``gemini-ledger secret set api-key`` for a block): a fix aimed at
    another place changes nothing, since the block takes precedence over the environment.
    """

    where: str
    replace: str


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
    error: BaseException | ApiFailure,
    describe: Describe | None = None,
    *,
    key: KeySource | None = None,
) -> SetupFault | None:
    """The :class:`SetupFault` ``error`` stands for, or None when it is about the row.

    ``describe`` (``flows.gemini._errors.describe``) recognises SDK and transport exceptions
    on ``error`` and along its chain of causes. ``key`` is where the requests' API key was
    kept: a fault about the key names that place and gives the fix for it.
    """
    if isinstance(error, ApiFailure):
        return _from_api_failure(error, key)
    seen: set[int] = set()
    exc: BaseException | None = error
    while exc is not None and id(exc) not in seen and len(seen) < 8:
        seen.add(id(exc))
        found = _one(exc, describe, key)
        if found is not None:
            return found
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return None


def _one(exc: BaseException, describe: Describe | None, key: KeySource | None) -> SetupFault | None:
    if isinstance(exc, SetupFault):
        return exc
    if type(exc).__name__ == "GatewayConfigError":  # flows.gemini.gateway: no key, or unreadable
        # It says itself where it looked and what to do: taken as is, never wrapped again.
        return SetupFault(
            getattr(exc, "kind", SetupKind.NO_KEY),
            getattr(exc, "cause", str(exc)),
            getattr(exc, "fix", None),
        )
    if isinstance(exc, LedgerBusy):  # a lock or deadlock: transient, not the configuration
        return SetupFault(SetupKind.LEDGER_BUSY, str(exc))
    if isinstance(exc, (OperationalError, InterfaceError)):
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return SetupFault(SetupKind.LEDGER_UNREACHABLE, f"cannot reach the ledger: {detail}")
    described = describe(exc) if describe is not None else None
    return _from_api_failure(described, key) if described is not None else None


def _the_key(key: KeySource | None) -> str:
    return f"the key in {key.where}" if key is not None else "the API key"


def _from_api_failure(api: ApiFailure, key: KeySource | None = None) -> SetupFault | None:
    if api.transport is Transport.CONNECT:
        # Could not connect at all (refused, DNS, no route): nothing was sent, nothing billed.
        # A connection dropped mid-request is not this: the request may have been billed, and
        # the classifier keeps it a retryable ``connection`` failure of the row.
        return SetupFault(SetupKind.UNREACHABLE, f"cannot reach the Gemini API ({api.message})")
    if api.transport is not None or api.http_code is None:
        return None
    code, message = api.http_code, api.message
    if code in (400, 403, 404) and names_cached_content(message):
        # A request's context cache is gone ("403 ... CachedContent not found (or permission
        # denied)"): the row's, sent again with a new cache (ledger._verdicts), not the key's.
        return None
    status = (api.status or "").upper()
    head = f"{code} {status}".strip()
    said = f"{head}: {message}" if message else head
    the_key = _the_key(key)
    if _key_unrestricted(api):
        return SetupFault(
            SetupKind.KEY_UNRESTRICTED,
            f"the Gemini API blocked requests from {the_key} ({_with_reason(api, said)})",
            None
            if key is None
            else _FIXES[SetupKind.KEY_UNRESTRICTED].replace(
                "restrict the API key", f"restrict {the_key}", 1
            ),
        )
    if (model := _missing_model(api)) is not None:
        return SetupFault(
            SetupKind.MODEL_NOT_FOUND,
            f"the Gemini API does not serve model {model} ({said})",
            f"set the pipeline's model= to a model the API serves ({model} may be retired);"
            " `gemini-ledger doctor --live --pipeline P` checks it",
        )
    if (quota := _spent_quota(api, key)) is not None:
        return quota
    refused = _refused_key(key)
    if api.reason == "API_KEY_INVALID":
        return SetupFault(
            SetupKind.KEY_REFUSED,
            f"{the_key} was refused by the Gemini API ({head} API_KEY_INVALID: {message})",
            refused,
        )
    if code == 401 or status == "UNAUTHENTICATED":
        return SetupFault(
            SetupKind.KEY_REFUSED, f"{the_key} was refused by the Gemini API ({said})", refused
        )
    if code == 403 or status == "PERMISSION_DENIED":
        return SetupFault(
            SetupKind.PERMISSION,
            f"the Gemini API denied permission to {the_key} ({said})",
            None
            if key is None
            else "give the key's project access to the Gemini API, or put a key of a project"
            f" that has it in {key.where}",
        )
    if status == "FAILED_PRECONDITION":
        return SetupFault(
            SetupKind.PRECONDITION,
            f"the project of {the_key} cannot use the Gemini API ({said})"
            if key is not None
            else f"the project cannot use the Gemini API ({said})",
        )
    if code == 400 and "mime type" in message.lower():
        return SetupFault(SetupKind.UPLOAD_REFUSED, f"the Files API refused the upload ({said})")
    return None


# --- the real API's setup faults that look like a row's (a 404, a 429) --------------------

# "models/gemini-1.5-pro-002 is not found for API version v1beta, or is not supported for
# generateContent. Call ListModels to see the list of available models and their supported
# methods." (a retired or mistyped model, on generateContent, batchGenerateContent and
# interactions.create alike). A 404 for a batch job, a file or an interaction names no model.
_MISSING_MODEL = re.compile(
    r"(?:models/)?(?P<model>[\w.\-/]+?) is not found for API version"
    r"|is not supported for (?:generateContent|batchGenerateContent)"
    r"|(?:model|models/)\s*(?P<quoted>[\w.\-]+)?\s*(?:was |is )?not found"
    r"|Call ListModels",
    re.IGNORECASE,
)


def _refused_key(key: KeySource | None) -> str | None:
    """The fix for a refused key: put a valid one where the refused one was kept."""
    return key.replace if key is not None else None


def _missing_model(api: ApiFailure) -> str | None:
    """The model a 404 says the API does not serve ("the pipeline's model" when it names
    none), or None when the 404 is about something else (a job, a file, an interaction)."""
    if api.http_code != 404 and (api.status or "").upper() != "NOT_FOUND":
        return None
    found = _MISSING_MODEL.search(api.message or "")
    if found is None:
        return None
    model = found.group("model") or found.group("quoted")
    return model.removeprefix("models/") if model else "the pipeline's model"


# 403 PERMISSION_DENIED with ErrorInfo reason API_KEY_SERVICE_BLOCKED: "Requests to this API
# generativelanguage.googleapis.com method ...GenerateContent are blocked." (reported from
# 2026-06-18 on, continuedev/continue #12781; also what a key restricted to other APIs gets,
# google-gemini/deprecated-generative-ai-dart #219). The exact body of the refusal of an
# unrestricted key is not documented: a refusal that speaks of restrictions, or an
# unrestricted key, is read the same way, whichever its code (403 or 400).
_BLOCKED_KEY_REASONS = frozenset({"API_KEY_SERVICE_BLOCKED"})
_UNRESTRICTED_WORDS = re.compile(
    r"unrestricted|no (?:api )?restrictions|without (?:api )?restrictions"
    r"|restrict(?:ed)? (?:the|your) (?:api )?key"
    r"|generativelanguage\.googleapis\.com method \S+ are blocked",
    re.IGNORECASE,
)


def _key_unrestricted(api: ApiFailure) -> bool:
    if api.http_code not in (400, 401, 403) and (api.status or "").upper() not in (
        "PERMISSION_DENIED",
        "INVALID_ARGUMENT",
        "FAILED_PRECONDITION",
        "UNAUTHENTICATED",
    ):
        return False
    if api.reason in _BLOCKED_KEY_REASONS:
        return True
    return bool(_UNRESTRICTED_WORDS.search(api.message or ""))


def _with_reason(api: ApiFailure, said: str) -> str:
    return f"{said} [{api.reason}]" if api.reason else said


# 429 RESOURCE_EXHAUSTED names the spent quota in its google.rpc.QuotaFailure: a per-minute
# one clears in a minute (the row retries); a per-day one
# (GenerateRequestsPerDayPerProjectPerModel, its -FreeTier variant, the token-per-day ones)
# does not clear tonight, and "limit: 0" in the message means the project has no quota for
# the model at all (ai.google.dev/gemini-api/docs/rate-limits; python-genai issue threads).
_PER_DAY = re.compile(r"per_?day", re.IGNORECASE)
_LIMIT_ZERO = re.compile(r"\blimit:\s*0(?![\d.])", re.IGNORECASE)
# "Quota exceeded for metric: ..., limit: 0, model: gemini-2.5-pro"
_MODEL_IN_QUOTA = re.compile(r"\bmodel:\s*([\w.\-]+)", re.IGNORECASE)


def _spent_quota(api: ApiFailure, key: KeySource | None = None) -> SetupFault | None:
    if api.http_code != 429 and (api.status or "").upper() != "RESOURCE_EXHAUSTED":
        return None
    head = f"{api.http_code or ''} {(api.status or '').upper()}".strip()
    if _storage_full(api):
        return SetupFault(
            SetupKind.FILE_STORAGE,
            "the project's Files API storage is full (FileStorageBytesPerProject, 20 GB):"
            f" no upload can succeed until files are deleted ({head})",
        )
    named = _MODEL_IN_QUOTA.search(api.message or "")
    model = f"model {named.group(1)}" if named else "this model"
    if _LIMIT_ZERO.search(api.message or ""):
        quota = next(iter(api.quota_ids), None)
        which = f" ({quota})" if quota else ""
        project = f"the project of {_the_key(key)}" if key is not None else "the project"
        return SetupFault(
            SetupKind.NO_QUOTA,
            f"{project} has no quota for {model}{which}, limit: 0 ({head})",
        )
    daily = [q for q in api.quota_ids if _PER_DAY.search(q)]
    if not daily:
        return None
    delay = api.retry_delay_s
    when = (
        f"the API says it resets in {_duration_text(delay)}"
        if delay
        else "per-day quotas reset at midnight Pacific time"
    )
    return SetupFault(
        SetupKind.DAILY_QUOTA,
        f"the project's per-day quota {daily[0]} for {model} is spent; no retry tonight can"
        f" succeed ({head})",
        f"wait for it to reset ({when}) or raise it"
        " (ai.google.dev/gemini-api/docs/rate-limits); the next tick tries again",
    )


# The Files API's per-project storage quota (20 GB, files kept 48 h): an upload refused by it
# names quotaId FileStorageBytesPerProject and metric .../file_storage_bytes (the body in
# emulator/_errors.py ``storage_full``: alphaXiv/feedback issue 16, python-genai issue 2132).
# No retry frees storage; only deleting files (or their expiry) does.
_STORAGE_QUOTA = re.compile(r"FileStorageBytes|file_storage_bytes", re.IGNORECASE)


def _storage_full(api: ApiFailure) -> bool:
    if any(_STORAGE_QUOTA.search(q) for q in api.quota_ids):
        return True
    return bool(_STORAGE_QUOTA.search(api.message or ""))


def _duration_text(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"
