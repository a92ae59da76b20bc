"""``models.get`` and refused API keys: what ``gemini-ledger doctor --live`` checks first.

Shapes from the Gemini API reference (ai.google.dev/api/models, ``Model`` resource) and its
troubleshooting page: an API key the API does not accept is ``400 INVALID_ARGUMENT`` with a
``google.rpc.ErrorInfo`` detail whose reason is ``API_KEY_INVALID`` (not 401 or 403).
"""

from __future__ import annotations

from typing import Any

from ._errors import key_invalid

__all__ = ["REFUSED_KEY_PREFIX", "key_refused", "model_resource"]

#: Any API key starting with this is refused, as the real API refuses a revoked or mistyped key.
REFUSED_KEY_PREFIX = "refused-"


def key_refused(api_key: str) -> dict[str, Any] | None:
    """The real API's error body for a refused key, or None when the key is accepted."""
    return key_invalid() if api_key.startswith(REFUSED_KEY_PREFIX) else None


def model_resource(model: str) -> dict[str, Any] | None:
    """A ``Model`` for any ``gemini-*`` name (every model the emulator answers for), else None."""
    name = model.removeprefix("models/")
    if not name.startswith("gemini-"):
        return None
    return {
        "name": f"models/{name}",
        "version": "001",
        "displayName": name.replace("-", " ").title(),
        "description": f"Emulated {name}.",
        "inputTokenLimit": 1048576,
        "outputTokenLimit": 65536,
        "supportedGenerationMethods": [
            "generateContent",
            "countTokens",
            "createCachedContent",
            "batchGenerateContent",
        ],
        "temperature": 1,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2,
        "thinking": True,
    }
