"""Generation settings as the emulator reads, checks and honours them.

A request's settings are read from either wire shape into one plain form, so a test can ask
what each channel really sent (``GET /_emulator/received``) and compare:

- generateContent and batch lines: ``generationConfig`` (camelCase, as google-genai
  ``models.py`` ``_GenerateContentConfig_to_mldev`` writes it; proto JSON also takes the
  snake_case names, so both are read), its ``thinkingConfig``, and the top-level
  ``safetySettings`` (``HARM_CATEGORY_*``, ``BLOCK_*``);
- interactions: ``generation_config`` and ``safety_settings`` (google-genai 3.6.1
  ``_gaos/types/interactions/generationconfig.py``, ``safetysetting.py``: lowercase
  ``thinking_level``, a safety setting's ``type`` and ``threshold`` in lowercase).

What it refuses, as the API does (400 INVALID_ARGUMENT): a thinking budget and level in one
request (https://ai.google.dev/gemini-api/docs/gemini-3), a thinking level on a model
before Gemini 3 ("If you use the thinking_level parameter with a model earlier than Gemini
3, the model returns an error", https://ai.google.dev/gemini-api/docs/thinking), more than
5 stop sequences, an unknown ``thinkingConfig`` field.

What it honours: ``max_output_tokens`` cuts a longer answer and finishes ``MAX_TOKENS`` (an
interaction ends ``incomplete``); whether thinking counts against the limit is reported
both ways (documented apart, observed together: python-genai #782, #2062), so the scenario
chooses (``max_output_tokens_counts_thoughts``); a stop sequence ends the answer before it
(finish ``STOP``, the sequence left out, as the API does); the thinking tokens reported
follow a budget (exactly the budget, 0 turns thinking off, -1 is the scenario's default)
or a level (``LEVEL_THOUGHTS``: the emulator's own scale, the real counts vary).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "LEVEL_THOUGHTS",
    "SettingsRefused",
    "interaction_settings",
    "rest_settings",
    "shape_answer",
    "thoughts_for",
]

LEVEL_THOUGHTS = {"minimal": 0, "low": 128, "medium": 512, "high": 2048, "xhigh": 4096}
_THINKING_FIELDS = {
    "thinkingBudget",
    "thinking_budget",
    "thinkingLevel",
    "thinking_level",
    "includeThoughts",
    "include_thoughts",
}
_GEMINI_VERSION = re.compile(r"^(?:models/)?gemini-(\d+)(?:\.\d+)?-")


class SettingsRefused(ValueError):
    """A request's settings the API refuses (400 INVALID_ARGUMENT)."""


def _get(d: dict[str, Any], camel: str, snake: str) -> Any:
    value = d.get(camel)
    return d.get(snake) if value is None else value


def _lower(value: Any, prefix: str = "") -> str | None:
    if value is None:
        return None
    return str(value).removeprefix(prefix).lower()


def rest_settings(request: dict[str, Any], model: str) -> dict[str, Any]:
    """The settings of a GenerateContentRequest (REST JSON), checked for ``model``."""
    config = _get(request, "generationConfig", "generation_config") or {}
    if not isinstance(config, dict):
        raise SettingsRefused("generationConfig must be an object")
    out: dict[str, Any] = {}
    for camel, snake in (
        ("temperature", "temperature"),
        ("topP", "top_p"),
        ("topK", "top_k"),
        ("seed", "seed"),
        ("maxOutputTokens", "max_output_tokens"),
        ("stopSequences", "stop_sequences"),
    ):
        value = _get(config, camel, snake)
        if value is not None:
            out[snake] = value
    thinking = _get(config, "thinkingConfig", "thinking_config")
    if thinking is not None:
        if not isinstance(thinking, dict):
            raise SettingsRefused("thinkingConfig must be an object")
        unknown = sorted(set(thinking) - _THINKING_FIELDS)
        if unknown:
            # The API's proto JSON parser: 'Invalid JSON payload received. Unknown name ...'.
            raise SettingsRefused(
                f'Invalid JSON payload received. Unknown name "{unknown[0]}" at'
                " 'generation_config.thinking_config': Cannot find field."
            )
        budget = _get(thinking, "thinkingBudget", "thinking_budget")
        level = _get(thinking, "thinkingLevel", "thinking_level")
        if budget is not None:
            out["thinking_budget"] = int(budget)
        if level is not None:
            out["thinking_level"] = _lower(level)
    resolution = _get(config, "mediaResolution", "media_resolution")
    if resolution is not None:
        out["media_resolution"] = _lower(resolution, "MEDIA_RESOLUTION_")
    safety = _get(request, "safetySettings", "safety_settings")
    if safety:
        out["safety"] = [
            {
                "category": _lower(s.get("category"), "HARM_CATEGORY_"),
                "threshold": _lower(s.get("threshold")),
            }
            for s in safety
        ]
    _check(out, model)
    return out


def interaction_settings(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The settings of an ``interactions.create`` body, checked for ``model``."""
    config = body.get("generation_config") or {}
    if not isinstance(config, dict):
        raise SettingsRefused("generation_config must be an object")
    out: dict[str, Any] = {
        name: config[name]
        for name in ("temperature", "top_p", "seed", "max_output_tokens", "stop_sequences")
        if config.get(name) is not None
    }
    if config.get("thinking_level") is not None:
        out["thinking_level"] = _lower(config["thinking_level"])
    safety = body.get("safety_settings")
    if safety:
        out["safety"] = [
            {"category": _lower(s.get("type")), "threshold": _lower(s.get("threshold"))}
            for s in safety
        ]
    _check(out, model)
    return out


def _check(settings: dict[str, Any], model: str) -> None:
    if "thinking_budget" in settings and "thinking_level" in settings:
        raise SettingsRefused("thinking_budget and thinking_level cannot both be set.")
    found = _GEMINI_VERSION.match(model)
    if "thinking_level" in settings and found is not None and int(found.group(1)) < 3:
        raise SettingsRefused("thinking_level is not supported by this model.")
    stops = settings.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or len(stops) > 5):
        raise SettingsRefused("stop_sequences: at most 5 sequences are allowed.")


def thoughts_for(settings: dict[str, Any], default: int) -> int:
    """Thinking tokens an answer reports under these settings (``default``: the scenario's)."""
    budget = settings.get("thinking_budget")
    if budget is not None:
        return default if budget < 0 else int(budget)
    level = settings.get("thinking_level")
    if level is not None:
        return LEVEL_THOUGHTS.get(str(level), default)
    return default


def shape_answer(
    text: str, settings: dict[str, Any], thoughts: int, *, counts_thoughts: bool
) -> tuple[str, bool]:
    """The answer as the settings leave it, and whether ``max_output_tokens`` cut it.

    A stop sequence ends the text before it; then ``max_output_tokens`` (less the thoughts
    when they count against it) cuts what is longer, at four characters a token (the
    emulator's token estimate)."""
    for stop in settings.get("stop_sequences") or ():
        at = text.find(stop) if stop else -1
        if at >= 0:
            text = text[:at]
    limit = settings.get("max_output_tokens")
    if limit is None:
        return text, False
    room = max(int(limit) - (thoughts if counts_thoughts else 0), 0)
    if (len(text) + 3) // 4 <= room:
        return text, False
    return text[: room * 4], True
