"""Keep secrets out of everything the ledger stores or prints.

Error messages end up in the ledger's ``error_message`` column, in Prefect logs and in
artifacts. An SDK error can echo a request URL (``...?key=AIza...``) or a header, so every
message the classifier produces goes through :func:`redact` first. Secrets are registered
where they are loaded (``flows.settings.load_settings``, ``flows.gemini.gateway``,
``flows.webhooks.receiver``); this module reads no environment.
"""

from __future__ import annotations

import re
import threading

__all__ = ["REDACTED", "redact", "register_secret"]

REDACTED = "[redacted]"

# Values shorter than this are not treated as secrets: redacting "a" or "ok" would mangle
# every message and hide nothing worth hiding.
_MIN_SECRET_LEN = 4

# Shapes of secrets we never want to store even if nobody registered them: an API key sent
# as a query parameter, a key in a header echo, a Standard Webhooks secret, a Google API key.
_SHAPES = re.compile(
    r"(?P<param>(?<![A-Za-z0-9_])(?:api[_-]?)?key=)[^&\s\"'#<>]+"
    r"|(?P<header>x-goog-api-key[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"
    r"|whsec_[A-Za-z0-9+/=_\-]+"
    r"|AIza[0-9A-Za-z_\-]{20,}",
    re.IGNORECASE,
)

# Cheap substring tests that rule _SHAPES out for most messages before the regex runs.
_SHAPE_HINTS = ("key", "whsec_", "aiza")

_lock = threading.Lock()
_secrets: set[str] = set()
# Longest first, so a secret that contains another one is replaced whole. Replaced as a
# whole tuple so readers never see a half-updated list.
_ordered: tuple[str, ...] = ()


def register_secret(value: str) -> None:
    """Remember ``value`` so :func:`redact` replaces it wherever it appears."""
    global _ordered
    if not isinstance(value, str) or len(value.strip()) < _MIN_SECRET_LEN:
        return
    value = value.strip()
    if value in REDACTED:
        # Would rewrite its own replacement marker forever.
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        _ordered = tuple(sorted(_secrets, key=len, reverse=True))


def _shape_sub(match: re.Match[str]) -> str:
    prefix = match.group("param") or match.group("header") or ""
    return prefix + REDACTED


def redact(text: str) -> str:
    """Return ``text`` with every registered secret and every key-shaped token replaced."""
    if not isinstance(text, str):
        text = str(text)
    if not text:
        return text
    # Replacing can, in contrived cases, join the text around a secret into a new copy of
    # it; a couple of passes reach a fixed point.
    # (Substring tests and str.replace run in C: far cheaper than one big alternation.)
    for _ in range(3):
        before = text
        for secret in _ordered:
            if secret in text:
                text = text.replace(secret, REDACTED)
        lowered = text.lower()
        if any(hint in lowered for hint in _SHAPE_HINTS):
            text = _SHAPES.sub(_shape_sub, text)
        if text == before:
            break
    return text
