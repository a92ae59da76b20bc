"""A configurable price table, to turn the ledger's token counts into an estimated cost.

Prices are USD per one million tokens, per model: ``prompt`` (input), ``candidates``
(output), and optionally ``cached`` (prompt tokens served from a context cache) and
``audio_prompt`` (prompt tokens of the audio modality). How each counted token is priced:

* thinking tokens (``thoughtsTokenCount``; for rows recorded before it was kept,
  ``total - prompt - candidates`` when positive) at the output rate, as Gemini bills them;
* cached tokens (``cachedContentTokenCount``, inside the prompt count) at the ``cached``
  rate (the prompt rate when a row has none: an upper bound, never a guess below it);
* audio prompt tokens (``promptTokensDetails``) at ``audio_prompt`` (else the prompt rate);
* the batch channel pays ``batch_multiplier`` (half price by default) of everything except
  cached tokens, which the batch docs price as non-batch traffic ("Context caching":
  "cached tokens are priced the same as for non-batch mode traffic").

A row is priced by the model version its answer named (``modelVersion``) when that has a
price, else by the pipeline's model: a pipeline on ``gemini-flash-latest`` is priced by what
actually ran.

The defaults are the paid-tier list prices for prompts up to 200k tokens, from the Gemini
Developer API pricing page (https://ai.google.dev/gemini-api/docs/pricing, as read
2026-10-07). Where that page lists no context-caching price for a model, ``cached`` is a
tenth of the input price: the caching discount the optimization page states ("90%
discount", https://ai.google.dev/gemini-api/docs/optimization). The ``-latest`` aliases
carry the price of the model each pointed at then (the newest Flash, Flash-Lite and Pro
on that page); an alias moves without notice, which is why the model version is preferred.
Prices go stale (the page already lists gemini-3.8-flash at twice its price from
2027-01-01), so a deployment points ``LEDGER_PRICES_FILE`` at a JSON file that overrides or
extends them::

    {
      "batch_multiplier": 0.5,
      "replace": false,
      "models": {"gemini-2.5-flash": {"prompt": 0.30, "candidates": 2.50, "cached": 0.03}}
    }

``replace: true`` drops the defaults. A model name is matched by its longest priced
prefix after dropping ``models/`` (``gemini-2.5-flash-001`` uses ``gemini-2.5-flash``,
``gemini-2.5-flash-lite`` its own row). A model with no price is reported as unpriced
(with how many rows it has), never counted as $0 silently.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flows.errors import UsageError
from ledger import Channel, ModelUsage

__all__ = [
    "DEFAULT_PRICES",
    "PRICES_FILE_ENV",
    "CostEstimate",
    "ModelPrice",
    "PriceTable",
    "UsageLine",
    "direct_surcharge",
    "estimate_cost",
    "line_cost",
    "load_prices",
    "unpriced_models",
]

PRICES_FILE_ENV = "LEDGER_PRICES_FILE"
_PER = 1_000_000


class ModelPrice(BaseModel):
    """USD per one million prompt, candidate (and thinking), cached and audio prompt tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: float = Field(ge=0)
    candidates: float = Field(ge=0)
    cached: float | None = Field(None, ge=0)  # None: the prompt rate
    audio_prompt: float | None = Field(None, ge=0)  # None: the prompt rate


def _price(
    prompt: float, candidates: float, cached: float | None = None, audio: float | None = None
) -> ModelPrice:
    # A tenth of the input price where the page lists no caching price (module docstring).
    cache = round(prompt / 10, 6) if cached is None else cached
    return ModelPrice(prompt=prompt, candidates=candidates, cached=cache, audio_prompt=audio)


DEFAULT_PRICES: dict[str, ModelPrice] = {
    # Gemini 3.x (https://ai.google.dev/gemini-api/docs/pricing, read 2026-10-07).
    "gemini-3.8-flash": _price(0.75, 3.75),  # through 2026-12-31; $1.50 / $7.50 after
    "gemini-3.6-flash": _price(1.50, 7.50),  # docs "What's new in Gemini 3.6"
    "gemini-3.5-flash": _price(1.50, 9.00),
    "gemini-3.5-flash-lite": _price(0.30, 2.50),  # text / image / video / audio alike
    "gemini-3.1-pro-preview": _price(2.00, 12.00),
    "gemini-3.1-flash-lite": _price(0.25, 1.50, 0.025, 0.50),  # -preview too (prefix)
    "gemini-3-pro-preview": _price(2.00, 12.00),
    "gemini-3-flash-preview": _price(0.50, 3.00, 0.05, 1.00),
    # Gemini 2.x.
    "gemini-2.5-pro": _price(1.25, 10.00, 0.125),
    "gemini-2.5-flash": _price(0.30, 2.50, 0.03, 1.00),
    "gemini-2.5-flash-lite": _price(0.10, 0.40, 0.01, 0.30),
    "gemini-2.0-flash": _price(0.10, 0.40, 0.025, 0.70),
    "gemini-2.0-flash-lite": _price(0.075, 0.30),
    # Embedding models: input tokens only (the same page's "Gemini Embedding" rows).
    "gemini-embedding-001": _price(0.15, 0.0),
    "gemini-embedding-2": _price(0.20, 0.0),  # text input; -preview too (prefix)
    # The aliases many scripts use, at the price of what each pointed at on that page; a row
    # whose answer named its model version is priced by that version instead.
    "gemini-flash-latest": _price(0.75, 3.75),  # gemini-3.8-flash
    "gemini-flash-lite-latest": _price(0.30, 2.50),  # gemini-3.5-flash-lite
    "gemini-pro-latest": _price(2.00, 12.00),  # gemini-3.1-pro-preview
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
    """Tokens billed on one model (and model version) through one channel, over ``rows``."""

    model: str
    channel: str
    prompt_tokens: int
    candidates_tokens: int
    total_tokens: int
    thoughts_tokens: int = 0
    cached_tokens: int = 0
    audio_tokens: int = 0
    model_version: str | None = None
    rows: int = 0

    @classmethod
    def of(cls, usage: ModelUsage) -> UsageLine:
        """One line of :meth:`ledger.Ledger.usage_by_model`."""
        u = usage.usage
        return cls(
            usage.model,
            usage.channel,
            u.prompt_tokens,
            u.candidates_tokens,
            u.total_tokens,
            u.thoughts_tokens,
            u.cached_tokens,
            u.audio_tokens,
            usage.model_version,
            usage.rows,
        )


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """Estimated spend: total, per model, and the models with no price (with their rows)."""

    usd: float
    by_model: dict[str, float] = field(default_factory=dict)
    unpriced_models: list[str] = field(default_factory=list)
    unpriced_rows: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "usd": round(self.usd, 6),
            "by_model": {m: round(v, 6) for m, v in sorted(self.by_model.items())},
            "unpriced_models": sorted(self.unpriced_models),
            "unpriced_rows": dict(sorted(self.unpriced_rows.items())),
        }

    def unpriced_text(self) -> str | None:
        """``unpriced: model X, N rows; ...`` (None when every model has a price)."""
        if not self.unpriced_models:
            return None
        parts = [
            f"model {m}, {self.unpriced_rows.get(m, 0)} row"
            f"{'' if self.unpriced_rows.get(m, 0) == 1 else 's'}"
            for m in sorted(self.unpriced_models)
        ]
        return "unpriced: " + "; ".join(parts) + f" (add it to {PRICES_FILE_ENV})"


def load_prices(path: str | os.PathLike[str] | None) -> PriceTable:
    """The default table, overridden by the JSON file at ``path`` (the settings'
    ``prices_file``, ``LEDGER_PRICES_FILE``; None: the defaults alone).

    Raises ValueError with the file name when the file is missing or malformed: a wrong
    price file must not silently fall back to the defaults.
    """
    if path is None:
        return PriceTable(dict(DEFAULT_PRICES))
    file = Path(path)
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


def line_cost(line: UsageLine, price: ModelPrice, batch_multiplier: float) -> float:
    """USD for one usage line at one model's price (see the module docstring)."""
    thoughts = line.thoughts_tokens or max(
        line.total_tokens - line.prompt_tokens - line.candidates_tokens, 0
    )
    cached = min(line.cached_tokens, line.prompt_tokens)
    audio = min(line.audio_tokens, line.prompt_tokens - cached)
    text = line.prompt_tokens - cached - audio
    discounted = (
        text * price.prompt
        + audio * (price.prompt if price.audio_prompt is None else price.audio_prompt)
        + (line.candidates_tokens + thoughts) * price.candidates
    )
    cache_rate = price.prompt if price.cached is None else price.cached
    multiplier = batch_multiplier if line.channel == "batch" else 1.0
    return (discounted * multiplier + cached * cache_rate) / _PER


def estimate_cost(usage: Iterable[UsageLine], prices: PriceTable) -> CostEstimate:
    """Estimated USD for the token usage, per model; models without a price are listed with
    their rows (a row is priced by its model version first, else by its model)."""
    by_model: dict[str, float] = {}
    unpriced_rows: dict[str, int] = {}
    for line in usage:
        if not (line.prompt_tokens or line.candidates_tokens or line.total_tokens):
            continue
        price = prices.price_of(line.model_version) if line.model_version else None
        if price is None:
            price = prices.price_of(line.model)
        if price is None:
            unpriced_rows[line.model] = unpriced_rows.get(line.model, 0) + line.rows
            continue
        usd = line_cost(line, price, prices.batch_multiplier)
        by_model[line.model] = by_model.get(line.model, 0.0) + usd
    return CostEstimate(sum(by_model.values()), by_model, sorted(unpriced_rows), unpriced_rows)


def direct_surcharge(sent_direct: Iterable[UsageLine], prices: PriceTable) -> float:
    """What rows sent on the direct channel though their own is another (a deadline's
    fallback: lines under their own channel) cost above the price of their own channel: the
    one rule that prices them as sent, for the budget and the morning summary alike."""
    lines = [u for u in sent_direct if u.channel != Channel.DIRECT.value]
    if not lines:
        return 0.0
    as_own = estimate_cost(lines, prices).usd
    as_sent = estimate_cost([replace(u, channel=Channel.DIRECT.value) for u in lines], prices)
    return as_sent.usd - as_own


def unpriced_models(models: Iterable[tuple[str, int]], prices: PriceTable) -> list[tuple[str, int]]:
    """The (model, rows) of ``models`` the price table has no price for."""
    return [(m, n) for m, n in models if prices.price_of(m) is None]
