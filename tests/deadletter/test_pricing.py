"""The price table: defaults, longest-prefix model match, overrides from LEDGER_PRICES_FILE."""

from __future__ import annotations

import json

import pytest

from flows.settings import Settings
from flows.testing import UsageLine, estimate_cost, load_prices


def test_longest_priced_prefix_wins():
    """A versioned name uses its family's price; flash-lite is not priced as flash."""
    prices = load_prices(None)
    assert prices.price_of("models/gemini-2.5-flash-001") == prices.models["gemini-2.5-flash"]
    assert prices.price_of("gemini-2.5-flash-lite") == prices.models["gemini-2.5-flash-lite"]
    assert prices.price_of("my-own-model") is None


def test_cost_counts_thoughts_at_the_output_rate_and_discounts_batch(tmp_path):
    """Cost = prompt x input price + (answer + thinking) x output price; batch x multiplier."""
    file = tmp_path / "prices.json"
    file.write_text(
        json.dumps(
            {
                "replace": True,
                "batch_multiplier": 0.5,
                "models": {"m": {"prompt": 2.0, "candidates": 8.0}},
            }
        )
    )
    prices = load_prices(Settings.given(LEDGER_PRICES_FILE=str(file)).prices_file)
    assert list(prices.models) == ["m"]
    cost = estimate_cost(
        [
            UsageLine("m", "direct", 1_000_000, 500_000, 1_600_000),  # 100k thinking
            UsageLine("m", "batch", 1_000_000, 0, 1_000_000),
            UsageLine("unknown", "direct", 10, 10, 20),
        ],
        prices,
    )
    assert cost.usd == pytest.approx(2.0 + 0.6 * 8.0 + 0.5 * 2.0)
    assert cost.unpriced_models == ["unknown"]


def test_a_broken_price_file_is_an_error_not_the_defaults(tmp_path):
    """A malformed or missing price file raises ValueError naming the file."""
    bad = tmp_path / "bad.json"
    bad.write_text('{"models": {"m": {"prompt": -1, "candidates": 1}}}')
    with pytest.raises(ValueError, match=r"bad\.json"):
        load_prices(bad)
    with pytest.raises(ValueError, match=r"missing\.json"):
        load_prices(tmp_path / "missing.json")


def _table(tmp_path, models: dict, multiplier: float = 0.5):
    file = tmp_path / "prices.json"
    file.write_text(json.dumps({"replace": True, "batch_multiplier": multiplier, "models": models}))
    return load_prices(Settings.given(LEDGER_PRICES_FILE=str(file)).prices_file)


def test_thoughts_cached_and_audio_tokens_have_their_own_rates(tmp_path):
    """Recorded thoughts are billed at the output rate, cached prompt tokens at the cache
    rate, audio prompt tokens at the audio rate; the rest of the prompt at the input rate."""
    prices = _table(
        tmp_path,
        {"m": {"prompt": 1.0, "candidates": 10.0, "cached": 0.1, "audio_prompt": 3.0}},
    )
    line = UsageLine(
        "m",
        "direct",
        prompt_tokens=1_000_000,
        candidates_tokens=100_000,
        total_tokens=1_300_000,  # 200k of thinking, counted in the total
        thoughts_tokens=200_000,
        cached_tokens=400_000,
        audio_tokens=100_000,
    )
    cost = estimate_cost([line], prices)
    assert cost.usd == pytest.approx(0.5 * 1.0 + 0.1 * 3.0 + 0.3 * 10.0 + 0.4 * 0.1)


def test_batch_pays_the_non_batch_rate_for_cached_tokens(tmp_path):
    """In batch, everything is discounted except cached tokens (the batch docs, Caching)."""
    prices = _table(tmp_path, {"m": {"prompt": 1.0, "candidates": 10.0, "cached": 0.2}})
    line = UsageLine("m", "batch", 1_000_000, 100_000, 1_100_000, cached_tokens=500_000)
    cost = estimate_cost([line], prices)
    assert cost.usd == pytest.approx(0.5 * (0.5 * 1.0 + 0.1 * 10.0) + 0.5 * 0.2)


def test_a_row_is_priced_by_the_model_version_that_answered(tmp_path):
    """An alias is priced by the model version its answers named, when that has a price."""
    prices = _table(
        tmp_path,
        {
            "alias-latest": {"prompt": 1.0, "candidates": 1.0},
            "real-model": {"prompt": 5.0, "candidates": 5.0},
        },
    )
    cost = estimate_cost(
        [
            UsageLine(
                "alias-latest", "direct", 1_000_000, 0, 1_000_000, model_version="real-model"
            ),
            UsageLine("alias-latest", "direct", 1_000_000, 0, 1_000_000, model_version="nope-9"),
        ],
        prices,
    )
    assert cost.usd == pytest.approx(5.0 + 1.0)
    assert cost.unpriced_models == []


def test_unpriced_models_are_named_with_their_rows():
    """A model without a price is never a silent $0: it is listed with its rows."""
    cost = estimate_cost(
        [
            UsageLine("my-model", "direct", 10, 10, 20, rows=3),
            UsageLine("my-model", "batch", 10, 10, 20, rows=2),
        ],
        load_prices(None),
    )
    assert cost.unpriced_rows == {"my-model": 5}
    assert cost.unpriced_text() == (
        "unpriced: model my-model, 5 rows (add it to LEDGER_PRICES_FILE)"
    )


@pytest.mark.parametrize(
    "model",
    [
        "gemini-flash-latest",
        "gemini-pro-latest",
        "gemini-flash-lite-latest",
        "gemini-3.8-flash",
        "gemini-3.6-flash",
        "gemini-3.5-flash",
        "gemini-3.5-flash-lite",
        "gemini-3.1-pro-preview",
        "gemini-3.1-flash-lite-preview",
        "gemini-3-flash-preview",
        "gemini-3-pro-preview",
    ],
)
def test_the_3x_models_and_the_latest_aliases_are_priced(model):
    """The 3.x models and the -latest aliases have a price, with a cache rate below the input
    rate."""
    price = load_prices(None).price_of(model)
    assert price is not None and price.prompt > 0 and price.candidates > 0
    assert price.cached is not None and price.cached < price.prompt
    # flash-lite is not priced as flash (longest prefix).
    if "lite" in model:
        assert price.candidates <= 2.5
