"""The price table: defaults, longest-prefix model match, overrides from LEDGER_PRICES_FILE."""

from __future__ import annotations

import json

import pytest

from flows._pricing import UsageLine, estimate_cost, load_prices


def test_longest_priced_prefix_wins(monkeypatch):
    """A versioned name uses its family's price; flash-lite is not priced as flash."""
    monkeypatch.delenv("LEDGER_PRICES_FILE", raising=False)
    prices = load_prices()
    assert prices.price_of("models/gemini-2.5-flash-001") == prices.models["gemini-2.5-flash"]
    assert prices.price_of("gemini-2.5-flash-lite") == prices.models["gemini-2.5-flash-lite"]
    assert prices.price_of("my-own-model") is None


def test_cost_counts_thoughts_at_the_output_rate_and_discounts_batch(tmp_path, monkeypatch):
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
    monkeypatch.setenv("LEDGER_PRICES_FILE", str(file))
    prices = load_prices()
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
