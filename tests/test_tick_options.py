"""A tick's options are checked before any work, and a channel says which ones it ignores."""

from __future__ import annotations

import logging
import math

import pytest

from flows.errors import UsageError
from flows.settings import load_settings
from flows.testing import TickOptions


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"stale_s": -1.0}, "stale_s"),
        ({"stale_s": math.nan}, "stale_s"),
        ({"running_limit_s": math.inf}, "running_limit_s"),
        ({"max_concurrency": 0}, "max_concurrency"),
    ],
)
def test_a_bad_option_is_one_clear_usage_error(options, says):
    """A negative, non-finite or zero knob is refused with its name, before a channel opens."""
    with pytest.raises(UsageError, match=says):
        TickOptions(**options)


def test_zero_stale_age_is_allowed_and_given_options_are_named():
    """stale_s=0 (take over at once, as tests and recoveries use) is valid; given() names
    only the options that were set."""
    assert TickOptions(stale_s=0.0, max_concurrency=4).given() == {"stale_s", "max_concurrency"}
    assert TickOptions().given() == set()


def test_an_option_the_channel_does_not_use_is_warned_about(sqlite_url, monkeypatch):
    """running_limit_s on a batch pipeline is logged as ignored, not silently dropped."""
    from flows.tick import open_channel, start_run

    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    ctx = start_run("reviews", load_settings())
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("gemini_ledger.batch")  # outside a run: the plain logger
    logger.addHandler(handler)
    try:
        open_channel(ctx, TickOptions(running_limit_s=60.0))
    finally:
        logger.removeHandler(handler)
    assert any("does not use running_limit_s: ignored" in m for m in seen), seen
