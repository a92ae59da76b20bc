"""A deadline is a local time in a time zone, checked when it is given (a pipeline, the tick's
parameter, its deployment schema), and a row is due by the first time the clock shows it
after the row was enrolled."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import BaseModel

from flows import Deadline, Pipeline, Prompt
from flows.errors import UsageError
from flows.testing import TickOptions
from ledger import Channel

PARIS = ZoneInfo("Europe/Paris")


def _epoch(text: str, zone: ZoneInfo = PARIS) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


class _Out(BaseModel):
    label: str


def _pipeline(channel: Channel = Channel.BATCH, **extra: object) -> Pipeline[str]:
    return Pipeline(
        name="dl",
        model="gemini-2.5-flash",
        channel=channel,
        output=_Out,
        load_items=lambda day: [],
        key_of=lambda item, day: item,
        build_prompt=lambda item: Prompt(text=item),
        on_result=lambda key, result: None,
        **extra,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("enrolled", "due"),
    [
        ("2026-12-05T22:00:00", "2026-12-06T07:00:00"),  # at night: the next morning
        ("2026-12-06T06:59:59", "2026-12-06T07:00:00"),  # a second before
        ("2026-12-06T07:00:00", "2026-12-06T07:00:00"),  # at the deadline: due now
        ("2026-12-06T07:00:01", "2026-12-07T07:00:00"),  # just after: tomorrow's
        # The night clocks go back (Paris, 2026-10-25 03:00 -> 02:00): still 07:00 local.
        ("2026-10-24T22:00:00", "2026-10-25T07:00:00"),
        # The night clocks go forward (2026-03-29 02:00 -> 03:00).
        ("2026-03-28T22:00:00", "2026-03-29T07:00:00"),
    ],
)
def test_a_row_is_due_by_the_first_deadline_after_it_was_enrolled(enrolled: str, due: str):
    """first_after gives the first 07:00 Paris time at or after the instant, across days
    and daylight-saving changes (a night of 8 or 10 hours)."""
    assert Deadline("07:00", "Europe/Paris").first_after(_epoch(enrolled)) == _epoch(due)


def test_a_deadline_reads_from_its_string_with_seconds_and_utc_by_default():
    """'07:00:30 Asia/Tokyo' and '23:15' (UTC) are read as given and print back the same."""
    assert Deadline.of("07:00:30 Asia/Tokyo") == Deadline("07:00:30", "Asia/Tokyo")
    assert str(Deadline.of("23:15")) == "23:15 UTC"


@pytest.mark.parametrize(
    ("text", "says"),
    [("7am Europe/Paris", "HH:MM"), ("24:00 UTC", "HH:MM"), ("07:00 Mars/Olympus", "IANA")],
)
def test_a_bad_deadline_is_refused_where_it_is_given(text: str, says: str):
    """A time that is not HH:MM(:SS) or an unknown zone is one clear line: from a pipeline
    (ValueError when it is defined) and from the tick's options (UsageError)."""
    with pytest.raises(ValueError, match=says):
        _pipeline(deadline=text)
    with pytest.raises(UsageError, match=says):
        TickOptions(deadline=text)


def test_only_a_batch_pipeline_falls_back_and_only_to_direct():
    """A deadline on the direct or background channel, a fallback other than direct, or a
    fallback without a deadline is refused; a batch deadline falls back to direct."""
    assert _pipeline(deadline="07:00 Europe/Paris").fallback is Channel.DIRECT
    assert _pipeline(deadline="07:00 Europe/Paris").deadline == Deadline("07:00", "Europe/Paris")
    with pytest.raises(ValueError, match="batch"):
        _pipeline(Channel.BACKGROUND, deadline="07:00 UTC")
    with pytest.raises(ValueError, match="direct, not background"):
        _pipeline(deadline="07:00 UTC", fallback=Channel.BACKGROUND)
    with pytest.raises(ValueError, match="give deadline"):
        _pipeline(fallback=Channel.DIRECT)


def test_the_tick_deployment_schema_checks_the_deadline_pattern():
    """The tick flow's parameter schema (what an enforced deployment checks) carries the
    deadline's pattern: a good value matches, '7am' does not."""
    from prefect.utilities.callables import parameter_schema

    from flows.tick import tick

    schema = parameter_schema(tick.fn).model_dump_for_openapi()
    prop = schema["properties"]["deadline"]
    pattern = next(p["pattern"] for p in prop.get("anyOf", [prop]) if "pattern" in p)
    assert re.match(pattern, "07:00 Europe/Paris")
    assert re.match(pattern, "23:59:59 UTC")
    assert not re.match(pattern, "7am Europe/Paris")
    assert "Europe/Paris" in prop.get("description", "")
