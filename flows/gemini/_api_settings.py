"""Which Gemini API this process talks to, and whether it is the one the workers use.

A batch job exists only at the API (base URL and project, i.e. key) that created it. A webhook
receiver that reconciles in process with another ``GOOGLE_GEMINI_BASE_URL`` or another key
polls jobs its API does not know: every poll is a 404 (issue #25: 150 attempts for 50 rows,
0 delivered, before "lost" needed evidence). So a tick that binds a batch job records, per
pipeline, the API it used (``Ledger.record_api_settings``): the base URL without
credentials, query or fragment, and a digest of the key, never the key itself. The receiver
compares its own at start and refuses with one line naming the difference; ``doctor`` runs
the same comparison as a check.

Only records of the last ``GEMINI_LEDGER_BATCH_SUBMITTED_S`` (72 h) count: older jobs can no
longer finish and fire a webhook, so an abandoned pipeline's old key never blocks a receiver.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

from flows.gemini.gateway import find_api_key
from flows.settings import Settings
from ledger import ApiSettingsRecord, ConfigurationError, Ledger

__all__ = [
    "DEFAULT_BASE_URL",
    "ApiSettings",
    "ApiSettingsMismatch",
    "current_api_settings",
    "key_digest",
    "mismatch",
    "normalized_base_url",
    "record_api_settings",
    "refuse_if_mismatched",
]

# What the SDK calls when GOOGLE_GEMINI_BASE_URL is unset (google/genai/_api_client.py).
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"

_RECEIVER_FIX = (
    "start the receiver with the workers' GOOGLE_GEMINI_BASE_URL and Gemini API key (the"
    " Prefect Secret block or GEMINI_API_KEY they use), or set LEDGER_RECONCILE_DEPLOYMENT so"
    " that the workers reconcile"
)


class ApiSettingsMismatch(ConfigurationError, RuntimeError):
    """This process would talk to another Gemini API (base URL or key) than the workers."""


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """The API this process calls: its base URL and the digest of its key (and, for the
    message only, where the key was found)."""

    base_url: str
    key_digest: str
    key_source: str = ""


def normalized_base_url(raw: str | None) -> str:
    """``scheme://host[:port][/path]``, lower-cased, without credentials, query, fragment or
    a trailing slash: the same API compares equal, and the URL may be shown and stored."""
    if not raw or not raw.strip():
        return DEFAULT_BASE_URL
    parts = urlsplit(raw.strip())
    host = (parts.hostname or "").lower()
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), "", ""))


def key_digest(key: str) -> str:
    """A short, salted digest of an API key: tells two keys apart, never gives one back."""
    return hashlib.sha256(b"gemini-ledger api key\x00" + key.encode()).hexdigest()[:16]


def current_api_settings(settings: Settings) -> ApiSettings | None:
    """This process's API, or None when it has no key (a tick fails on that by itself)."""
    found = find_api_key(settings)
    if found is None:
        return None
    return ApiSettings(
        normalized_base_url(settings.gemini_base_url), key_digest(found.value), found.source
    )


def record_api_settings(ledger: Ledger, pipeline: str, settings: Settings) -> None:
    """Note in the ledger the API ``pipeline``'s batch job was just bound at."""
    own = current_api_settings(settings)
    if own is not None:
        ledger.record_api_settings(pipeline, base_url=own.base_url, key_digest=own.key_digest)


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _difference(own: ApiSettings | None, rec: ApiSettingsRecord) -> str | None:
    if own is None:
        return "this process has no Gemini API key"
    if own.base_url != rec.base_url:
        return f"base URL {own.base_url} here, {rec.base_url} for the workers"
    if own.key_digest != rec.key_digest:
        return f"the API key here, from {own.key_source}, is not the one the workers use"
    return None


def mismatch(ledger: Ledger, own: ApiSettings | None, settings: Settings) -> str | None:
    """One line naming how ``own`` differs from the API the workers recently bound batch
    jobs at (the first pipeline that differs, and how many more), or None when it does not."""
    since = ledger.clock() - settings.batch_submitted_s
    differing = [
        (rec, diff)
        for rec in ledger.api_settings(since=since)
        if (diff := _difference(own, rec)) is not None
    ]
    if not differing:
        return None
    rec, diff = differing[0]
    more = f" (and {len(differing) - 1} more pipelines)" if len(differing) > 1 else ""
    return (
        f"the Gemini API differs from the workers' of pipeline {rec.pipeline!r}{more}: {diff}"
        f" (their last batch job bound {_when(rec.recorded_at)})"
    )


def refuse_if_mismatched(ledger: Ledger, settings: Settings) -> None:
    """Raise :class:`ApiSettingsMismatch` (one line, with the fix) when this process's API
    differs from the workers': a receiver that reconciles in process must not start so."""
    found = mismatch(ledger, current_api_settings(settings), settings)
    if found is not None:
        raise ApiSettingsMismatch(
            f"webhook receiver refused: {found}; it would poll batch jobs its API does not"
            f" know. Fix: {_RECEIVER_FIX}"
        )
