"""A configurable price table, to turn the ledger's token counts into an estimated cost.

Prices are USD per one million tokens, per model, for prompt (input) and candidate
(output) tokens. Thinking tokens (``total - prompt - candidates`` when positive) are billed
at the output rate, as Gemini bills them. The batch channel pays a fraction of
the price (``batch_multiplier``: half price by default).

The defaults are list prices for a few Gemini models (paid tier, prompts up to 200k
tokens, November 2026); they go stale, so a deployment points ``LEDGER_PRICES_FILE`` at a
JSON file that overrides or extends them::

    {
      "batch_multiplier": 0.5,
      "replace": false,
      "models": {"gemini-2.5-flash": {"prompt": 0.30, "candidates": 2.50}}
    }

``replace: true`` drops the defaults. A model name is matched by its longest priced
prefix after dropping ``models/`` (``gemini-2.5-flash-001`` uses ``gemini-2.5-flash``,
``gemini-2.5-flash-lite`` its own row). A model with no price is reported as unpriced,
never guessed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flows.errors import UsageError

__all__ = [
    "DEFAULT_PRICES",
    "PRICES_FILE_ENV",
    "CostEstimate",
    "ModelPrice",
    "PriceTable",
    "UsageLine",
    "estimate_cost",
    "load_prices",
]

PRICES_FILE_ENV = "LEDGER_PRICES_FILE"
_PER = 1_000_000


class ModelPrice(BaseModel):
    """USD per one million prompt and candidate tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: float = Field(ge=0)
    candidates: float = Field(ge=0)


DEFAULT_PRICES: dict[str, ModelPrice] = {
    "gemini-2.5-pro": ModelPrice(prompt=1.25, candidates=10.00),
    "gemini-2.5-flash": ModelPrice(prompt=0.30, candidates=2.50),
    "gemini-2.5-flash-lite": ModelPrice(prompt=0.10, candidates=0.40),
    "gemini-2.0-flash": ModelPrice(prompt=0.10, candidates=0.40),
    "gemini-2.0-flash-lite": ModelPrice(prompt=0.075, candidates=0.30),
}
DEFAULT_BATCH_MULTIPLIER = 0.5


class _PriceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_multiplier: float = Field(DEFAULT_BATCH_MULTIPLIER, ge=0, le=1)
    replace: bool = False
    models: dict[str, ModelPrice] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Prices by model name, and the fraction of the price the batch channel pays."""

    models: Mapping[str, ModelPrice]
    batch_multiplier: float = DEFAULT_BATCH_MULTIPLIER
    source: str = "defaults"

    def price_of(self, model: str) -> ModelPrice | None:
        """The price of ``model`` by its longest priced prefix; None when unpriced."""
        name = model.removeprefix("models/")
        best: str | None = None
        for known in self.models:
            if name.startswith(known) and (best is None or len(known) > len(best)):
                best = known
        return None if best is None else self.models[best]


@dataclass(frozen=True, slots=True)
class UsageLine:
    """Tokens billed on one model through one channel."""

    model: str
    channel: str
    prompt_tokens: int
    candidates_tokens: int
    total_tokens: int


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """Estimated spend: total, per model, and the models with no price."""

    usd: float
    by_model: dict[str, float] = field(default_factory=dict)
    unpriced_models: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "usd": round(self.usd, 6),
            "by_model": {m: round(v, 6) for m, v in sorted(self.by_model.items())},
            "unpriced_models": sorted(self.unpriced_models),
        }


def load_prices(path: str | os.PathLike[str] | None = None) -> PriceTable:
    """The default table, overridden by the JSON file at ``path`` or ``LEDGER_PRICES_FILE``.

    Raises ValueError with the file name when the file is missing or malformed: a wrong
    price file must not silently fall back to the defaults.
    """
    chosen = path if path is not None else os.environ.get(PRICES_FILE_ENV) or None
    if chosen is None:
        return PriceTable(dict(DEFAULT_PRICES))
    file = Path(chosen)
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
        parsed = _PriceFile.model_validate(raw)
    except OSError as exc:
        raise UsageError(f"price file {file}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"price file {file} is not valid JSON: {exc}") from None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise UsageError(f"price file {file}: {loc}: {first['msg']}") from None
    models = {} if parsed.replace else dict(DEFAULT_PRICES)
    models.update(parsed.models)
    return PriceTable(models, batch_multiplier=parsed.batch_multiplier, source=str(file))


def estimate_cost(usage: Iterable[UsageLine], prices: PriceTable) -> CostEstimate:
    """Estimated USD for the token usage, per model (batch rows times batch_multiplier)."""
    by_model: dict[str, float] = {}
    unpriced: set[str] = set()
    for line in usage:
        if not (line.prompt_tokens or line.candidates_tokens or line.total_tokens):
            continue
        price = prices.price_of(line.model)
        if price is None:
            unpriced.add(line.model)
            continue
        thoughts = max(line.total_tokens - line.prompt_tokens - line.candidates_tokens, 0)
        usd = (
            line.prompt_tokens * price.prompt
            + (line.candidates_tokens + thoughts) * price.candidates
        ) / _PER
        if line.channel == "batch":
            usd *= prices.batch_multiplier
        by_model[line.model] = by_model.get(line.model, 0.0) + usd
    return CostEstimate(sum(by_model.values()), by_model, sorted(unpriced))
