"""Generation settings: how the model answers, per pipeline with per-item overrides.

:class:`GenerationSettings` is what a user writes (``Pipeline(generation=...)``, and
``Prompt(settings=...)`` for one item). A field left ``None`` is not sent: the API's default
applies. Item settings override the pipeline's field by field (:meth:`merged`).

Each of the three wire shapes has one rendering here, used by its channel:

- :func:`rest_config`: the REST JSON of a ``GenerateContentRequest`` in camelCase, as a
  batch input line carries it (``generationConfig``, its ``thinkingConfig``, the top-level
  ``safetySettings``; google-genai ``models.py`` ``_GenerateContentConfig_to_mldev`` and
  ``_SafetySetting_to_mldev`` write the same names);
- :func:`sdk_config`: the arguments of ``types.GenerateContentConfig`` for
  ``models.generate_content`` (direct channel);
- :func:`interaction_config`: ``generation_config`` and ``safety_settings`` of
  ``interactions.create`` (background channel; google-genai
  ``_gaos/types/interactions/generationconfig.py`` and ``safetysetting.py``: snake_case,
  lowercase enum values, a safety setting names its category ``type``).

Thinking is controlled by a budget on Gemini 2.x and a level on Gemini 3 and later
(https://ai.google.dev/gemini-api/docs/thinking: "If you use the thinking_level parameter
with a model earlier than Gemini 3, the model returns an error"; a budget on Gemini 3 "is
accepted for backwards compatibility" but may perform worse, and both in one request is a
400). We translate neither: :func:`check_settings` refuses a level on a 2.x model and a
budget on a 3.x model when the pipeline is defined, with the knob to use instead, so every
channel sends the same thing (the interactions API has no budget at all). Models whose
family the name does not tell (``gemini-flash-latest``, another vendor's) get what was
written. Settings the interactions API cannot carry (``top_k``, ``thinking_budget``,
``media_resolution``: it sets resolution per media part) are refused on the background
channel for the same reason.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "GenerationSettings",
    "HarmCategory",
    "HarmThreshold",
    "MediaResolution",
    "SafetySetting",
    "ThinkingLevel",
    "check_settings",
    "interaction_config",
    "rest_config",
    "sdk_config",
    "thinking_family",
]


class ThinkingLevel(StrEnum):
    """Gemini 3's thinking levels (google-genai ``types.ThinkingLevel``; the interactions
    API spells them in lowercase)."""

    MINIMAL = "minimal"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    XHIGH = "xhigh"


class HarmCategory(StrEnum):
    """The harm categories the Gemini API takes (google-genai ``types.HarmCategory``, REST
    ``HARM_CATEGORY_<NAME>``; the interactions API's ``HarmCategory`` is the lowercase name)."""

    HARASSMENT = "harassment"
    HATE_SPEECH = "hate_speech"
    SEXUALLY_EXPLICIT = "sexually_explicit"
    DANGEROUS_CONTENT = "dangerous_content"
    CIVIC_INTEGRITY = "civic_integrity"


class HarmThreshold(StrEnum):
    """Block thresholds (google-genai ``types.HarmBlockThreshold``, lowercase in the
    interactions API)."""

    BLOCK_LOW_AND_ABOVE = "block_low_and_above"
    BLOCK_MEDIUM_AND_ABOVE = "block_medium_and_above"
    BLOCK_ONLY_HIGH = "block_only_high"
    BLOCK_NONE = "block_none"
    OFF = "off"


class MediaResolution(StrEnum):
    """The resolution media parts are read at (google-genai ``types.MediaResolution``, REST
    ``MEDIA_RESOLUTION_<NAME>``)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class SafetySetting(BaseModel):
    """One harm category and the threshold to block it at."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    category: HarmCategory
    threshold: HarmThreshold


class GenerationSettings(BaseModel):
    """How the model answers. ``None`` leaves a setting to the API's default.

    ``max_output_tokens`` is the pipeline's own limit: an answer cut there finishes
    ``MAX_TOKENS`` and its row is parked ``truncated`` (raise the limit, then replay).
    Some models count thinking tokens against it too (python-genai #782, #2062).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)
    seed: int | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    # The API takes up to 5 stop sequences (GenerationConfig.stop_sequences).
    stop_sequences: tuple[str, ...] | None = Field(default=None, max_length=5)
    # Tokens (Gemini 2.x): 0 turns thinking off where the model allows it, -1 is dynamic.
    thinking_budget: int | None = Field(default=None, ge=-1)
    thinking_level: ThinkingLevel | None = None  # Gemini 3 and later
    safety_settings: tuple[SafetySetting, ...] | None = None
    media_resolution: MediaResolution | None = None

    @model_validator(mode="after")
    def _one_thinking_knob(self) -> GenerationSettings:
        if self.thinking_budget is not None and self.thinking_level is not None:
            # Both in one request is a 400 (https://ai.google.dev/gemini-api/docs/gemini-3).
            raise ValueError("give thinking_budget or thinking_level, not both")
        if self.stop_sequences is not None and not all(self.stop_sequences):
            raise ValueError("a stop sequence must not be empty")
        if self.safety_settings is not None:
            seen = [s.category for s in self.safety_settings]
            if len(seen) != len(set(seen)):
                raise ValueError("each harm category may be given once in safety_settings")
        return self

    def given(self) -> dict[str, Any]:
        """The settings set (JSON-ready, ``None`` left out): what a revision records."""
        return self.model_dump(mode="json", exclude_none=True)

    def merged(self, over: GenerationSettings | None) -> GenerationSettings:
        """These settings with ``over``'s given fields in their place (an item's override).

        A thinking knob given by ``over`` replaces the other one too: an item that asks for
        a level does not inherit the pipeline's budget.
        """
        if over is None:
            return self
        mine = self.given()
        theirs = over.given()
        if "thinking_budget" in theirs or "thinking_level" in theirs:
            mine.pop("thinking_budget", None)
            mine.pop("thinking_level", None)
        return GenerationSettings.model_validate({**mine, **theirs})


# --- which thinking knob a model takes ------------------------------------------------------

_GEMINI_VERSION = re.compile(r"^(?:models/)?gemini-(\d+)(?:\.\d+)?-")


def thinking_family(model: str) -> str | None:
    """``"budget"`` for Gemini 2.x, ``"level"`` for Gemini 3 and later, None when the name
    does not tell (an alias such as ``gemini-flash-latest``)."""
    found = _GEMINI_VERSION.match(model)
    if found is None:
        return None
    return "budget" if int(found.group(1)) < 3 else "level"


# Settings the interactions API has no field for (google-genai 3.6.1
# _gaos/types/interactions/generationconfig.py: no top_k, no thinking_budget; media
# resolution is set per image, video or document part there).
_NOT_IN_INTERACTIONS = ("top_k", "thinking_budget", "media_resolution")


def check_settings(settings: GenerationSettings, *, model: str, channel: str) -> None:
    """Refuse settings the model or channel cannot take, with one line saying what to use
    instead (raises ``ValueError``). See the module docstring for the thinking rule."""
    family = thinking_family(model)
    if family == "budget" and settings.thinking_level is not None:
        raise ValueError(
            f"{model} takes thinking_budget (tokens), not thinking_level: the API refuses a"
            " thinking level on models before Gemini 3"
        )
    if family == "level" and settings.thinking_budget is not None:
        raise ValueError(
            f"{model} takes thinking_level ({', '.join(v.value for v in ThinkingLevel)}),"
            " not thinking_budget: Gemini 3 models are steered by a level (a budget is only"
            " kept for backwards compatibility, and the interactions API has none)"
        )
    if channel == "background":
        given = [name for name in _NOT_IN_INTERACTIONS if getattr(settings, name) is not None]
        if given:
            raise ValueError(
                f"the background channel (interactions API) cannot send {', '.join(given)}:"
                " use the batch or direct channel for them"
            )


# --- the three wire shapes ------------------------------------------------------------------


def _upper(prefix: str, value: StrEnum) -> str:
    return f"{prefix}{value.value.upper()}"


def rest_config(settings: GenerationSettings) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``generationConfig`` fields and ``safetySettings`` of a REST GenerateContentRequest
    (camelCase, as google-genai's ``_GenerateContentConfig_to_mldev`` writes them)."""
    config: dict[str, Any] = {}
    s = settings
    for name, camel in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("seed", "seed"),
        ("max_output_tokens", "maxOutputTokens"),
    ):
        value = getattr(s, name)
        if value is not None:
            config[camel] = value
    if s.stop_sequences is not None:
        config["stopSequences"] = list(s.stop_sequences)
    if s.thinking_budget is not None:
        config["thinkingConfig"] = {"thinkingBudget": s.thinking_budget}
    elif s.thinking_level is not None:
        config["thinkingConfig"] = {"thinkingLevel": s.thinking_level.value.upper()}
    if s.media_resolution is not None:
        config["mediaResolution"] = _upper("MEDIA_RESOLUTION_", s.media_resolution)
    safety = [
        {
            "category": _upper("HARM_CATEGORY_", one.category),
            "threshold": one.threshold.value.upper(),
        }
        for one in s.safety_settings or ()
    ]
    return config, safety


def sdk_config(settings: GenerationSettings) -> dict[str, Any]:
    """Keyword arguments of google-genai ``types.GenerateContentConfig`` for the settings."""
    from google.genai import types

    s = settings
    out: dict[str, Any] = {
        name: getattr(s, name)
        for name in ("temperature", "top_p", "top_k", "seed", "max_output_tokens")
        if getattr(s, name) is not None
    }
    if s.stop_sequences is not None:
        out["stop_sequences"] = list(s.stop_sequences)
    if s.thinking_budget is not None:
        out["thinking_config"] = types.ThinkingConfig(thinking_budget=s.thinking_budget)
    elif s.thinking_level is not None:
        out["thinking_config"] = types.ThinkingConfig(
            thinking_level=types.ThinkingLevel(s.thinking_level.value.upper())
        )
    if s.media_resolution is not None:
        out["media_resolution"] = types.MediaResolution(
            _upper("MEDIA_RESOLUTION_", s.media_resolution)
        )
    if s.safety_settings:
        out["safety_settings"] = [
            types.SafetySetting(
                category=types.HarmCategory(_upper("HARM_CATEGORY_", one.category)),
                threshold=types.HarmBlockThreshold(one.threshold.value.upper()),
            )
            for one in s.safety_settings
        ]
    return out


def interaction_config(settings: GenerationSettings) -> dict[str, Any]:
    """``generation_config`` and ``safety_settings`` arguments of ``interactions.create``
    (only those given). ``check_settings`` has refused what the interactions API lacks."""
    s = settings
    config: dict[str, Any] = {
        name: getattr(s, name)
        for name in ("temperature", "top_p", "seed", "max_output_tokens")
        if getattr(s, name) is not None
    }
    if s.stop_sequences is not None:
        config["stop_sequences"] = list(s.stop_sequences)
    if s.thinking_level is not None:
        config["thinking_level"] = s.thinking_level.value
    out: dict[str, Any] = {}
    if config:
        out["generation_config"] = config
    if s.safety_settings:
        out["safety_settings"] = [
            {"type": one.category.value, "threshold": one.threshold.value}
            for one in s.safety_settings
        ]
    return out
