"""One bad item harms only itself: a prompt or key that cannot be made, a key the rules
refuse, a key given twice. The rest of the day is enrolled and goes out (issue 25, item 4)."""

from __future__ import annotations

import dataclasses
import logging
from datetime import date
from typing import Any

import pytest

from flows.examples.reviews import ReviewLabel
from flows.pipeline import Pipeline, Prompt
from flows.settings import Settings
from flows.testing import enroll_day
from ledger import KEY_MAX, PIPELINE_NAME_MAX, Channel, Ledger, NewJob, Status

from . import pipelines

DAY = date(2026, 11, 22)


@pytest.fixture
def tick_env(emulator, prefect_api, ledger_url, monkeypatch) -> str:
    """The emulator, a Prefect API and a fresh ledger (also the results database)."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", ledger_url)
    monkeypatch.delenv("REVIEWS_RESULTS_URL", raising=False)
    monkeypatch.delenv("GEMINI_LEDGER_CRASH_AT", raising=False)
    emulator.set_scenario({"batch_polls_to_complete": 1})
    return ledger_url


def _settle(spec: str, name: str, ledger: Ledger, *, ticks: int = 6) -> dict[str, Any]:
    from flows.tick import tick

    for _ in range(ticks):
        tick(pipeline=spec, day=DAY)
        by_status = ledger.counts(pipeline=name).by_status
        if set(by_status) <= {Status.CONSUMED, Status.PARKED}:
            break
    return {j.key.split(":")[2]: (j.status, j.error_class, j.attempts) for j in ledger.jobs()}


def test_a_prompt_that_raises_parks_its_item_and_the_others_go_out(tick_env: str) -> None:
    """build_prompt raising for 1 item of 6: that item is parked prompt:ValueError (nothing
    sent, no attempt), the other 5 are enrolled, sent and delivered."""
    from flows.tick import tick

    first = tick(pipeline="tests.poison.pipelines:prompt_raises", day=DAY)
    assert (first.enrolled, first.submitted) == (5, 5)
    assert first.parked == {"prompt": 1}
    enroll = first.as_dict()["steps"]["enroll"]
    assert enroll["prompt_parked"] == 1
    assert "text too odd" in enroll["prompt_parked_examples"][0]
    ledger = Ledger(tick_env)
    state = _settle("tests.poison.pipelines:prompt_raises", "promptfail", ledger)
    assert state == {
        **{i: ("consumed", None, 1) for i in pipelines.IDS if i != "k-3"},
        "k-3": ("parked", "prompt:ValueError", 0),
    }
    message = ledger.get(f"promptfail:{DAY}:k-3:v1").error_message or ""
    assert message.startswith("ValueError: cannot build a prompt for k-3")


def test_a_fixed_prompt_is_rebuilt_by_a_tick_of_its_day_and_replay_leaves_it(
    ledger_url: str,
) -> None:
    """A row parked prompt:<Error> holds no request: replay never sends it; once build_prompt
    works, enrolling its day again makes it pending with the request."""
    ledger = Ledger(ledger_url)
    broken = pipelines.prompt_raises
    enroll_day(ledger, broken, DAY)
    key = f"promptfail:{DAY}:k-3:v1"
    assert ledger.replay([key]) == 0
    assert ledger.get(key).status == Status.PARKED
    again = enroll_day(ledger, broken, DAY)  # still broken: nothing changes
    assert (again.enrolled, again.prompt_parked, again.prompt_rebuilt) == (0, 0, 0)
    assert again.already_known == 6
    fixed = dataclasses.replace(broken, build_prompt=pipelines._prompt)
    out = enroll_day(ledger, fixed, DAY)
    assert (out.enrolled, out.prompt_rebuilt, out.already_known) == (0, 1, 5)
    job = ledger.get(key)
    assert (job.status, job.error_class, job.attempts) == (Status.PENDING, None, 0)
    assert Prompt.model_validate_json(job.payload).text.startswith("Review k-3")


def test_key_of_raising_refuses_only_that_item(
    ledger_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """key_of raising for one item: it is refused (counted, one line with the item's place
    and the error, logged); the other five are enrolled."""
    ledger = Ledger(ledger_url)
    with caplog.at_level(logging.WARNING):
        out = enroll_day(ledger, pipelines.key_raises, DAY)
    assert (out.enrolled, out.refused) == (5, 1)
    assert out.as_dict()["refused_examples"] == ["item 2: key_of raised KeyError: 'review_id'"]
    assert any("1 items refused" in r.getMessage() for r in caplog.records)
    assert len(ledger.jobs(pipeline="keyfail")) == 5


def _keyed(keys: list[Any]) -> Pipeline[Any]:
    """A pipeline whose n-th item's key is ``keys[n]``."""
    return Pipeline(
        name="keys",
        model="gemini-2.5-flash",
        channel=Channel.BATCH,
        output=ReviewLabel,
        load_items=lambda day: list(range(len(keys))),
        key_of=lambda i, day: keys[i],
        build_prompt=lambda i: Prompt(text=f"item {i}"),
        on_result=lambda key, result: None,
    )


def test_bad_keys_are_refused_at_enrollment_the_same_on_both_backends(ledger_url: str) -> None:
    """A key too long, with NUL, a newline or another control character, outside ASCII,
    padded, empty or not a string is that item's own refusal on SQLite and PostgreSQL alike;
    the good keys (one exactly at the limit) are enrolled and can be reserved as a batch."""
    longest = "keys:" + "x" * (KEY_MAX - 5)
    bad = [
        "keys:" + "x" * (KEY_MAX - 4),
        "keys:a\x00b",
        "keys:a\nb",
        "keys:a\tb",
        "keys:café",
        " keys:pad",
        "",
        42,
    ]
    ledger = Ledger(ledger_url)
    out = enroll_day(ledger, _keyed(["keys:good", longest, *bad]), DAY)
    assert (out.enrolled, out.refused) == (2, len(bad))
    examples = out.as_dict()["refused_examples"]
    assert examples[0].startswith(
        f"item 3: key is {KEY_MAX + 1} characters long, the limit is {KEY_MAX}: 'keys:xxx"
    )
    assert len(examples[0]) < 120  # the key is shortened in its line
    assert examples[1:4] == [
        "item 4: key holds NUL (U+0000): 'keys:a\\x00b'",
        "item 5: key holds a control character (U+000A): 'keys:a\\nb'",
        "item 6: key holds a control character (U+0009): 'keys:a\\tb'",
    ]
    assert out.refused == 8 and len(examples) == 5  # examples are capped, the count is not
    assert sorted(j.key for j in ledger.jobs()) == sorted(["keys:good", longest])
    assert ledger.reserve(pipeline="keys", limit=10, reservation="gl-keys-0", batch_model="m") == 2


def test_other_bad_keys_name_their_rule() -> None:
    """Each rule has its own line (checked without a ledger)."""
    from ledger import key_problem

    assert key_problem("keys:café") == "key holds a character outside printable ASCII (U+00E9)"
    assert key_problem(" keys:pad") == "key starts or ends with a space"
    assert key_problem("") == "key is empty"
    assert key_problem(42) == "key_of returned a int, not a str"
    assert key_problem("keys:\x7f") == "key holds a control character (U+007F)"
    assert key_problem("reviews:2026-11-22:r-1:v1") is None


def test_duplicate_keys_are_counted_reported_and_logged(
    tick_env: str, caplog: pytest.LogCaptureFixture
) -> None:
    """key_of giving one key to two items: the first item keeps it, the later ones are
    counted in the tick's report (with examples) and logged as a warning, never dropped
    silently."""
    from flows.tick import tick

    with caplog.at_level(logging.WARNING):
        report = tick(pipeline="tests.poison.pipelines:duplicate_keys", day=DAY)
    enroll = report.as_dict()["steps"]["enroll"]
    assert (enroll["enrolled"], enroll["duplicate_keys"]) == (4, 2)
    assert enroll["duplicate_examples"] == [
        f"item 2: dups:{DAY}:k-1:v1",
        f"item 4: dups:{DAY}:k-3:v1",
    ]
    assert any("2 items gave a key an earlier item" in r.getMessage() for r in caplog.records)
    ledger = Ledger(tick_env)
    # The first item's request is the one kept.
    assert "Review k-1:" in ledger.get(f"dups:{DAY}:k-1:v1").payload


@pytest.mark.postgres
def test_a_pipeline_name_too_long_for_the_reservation_token_is_refused_when_defined(
    postgres_url: str,
) -> None:
    """A name over the limit is refused by Pipeline() with one line; one at the limit makes a
    batch reservation token PostgreSQL stores."""
    base = pipelines.prompt_raises
    with pytest.raises(ValueError, match=f"the limit is {PIPELINE_NAME_MAX}"):
        dataclasses.replace(base, name="n" * (PIPELINE_NAME_MAX + 1))
    longest = dataclasses.replace(base, name="n" * PIPELINE_NAME_MAX)
    from flows.testing import reservation_token

    token = reservation_token(longest)
    ledger = Ledger(postgres_url)
    ledger.enroll([NewJob("n:1", {"text": "x"})], pipeline=longest.name, channel="batch", model="m")
    assert ledger.reserve(pipeline=longest.name, limit=1, reservation=token, batch_model="m") == 1


def test_a_module_defining_a_too_long_name_fails_to_load_with_one_line(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The definition error reaches the command line as one line naming the limit."""
    import sys

    from flows.registry import UnknownPipeline, load_pipeline

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "longname.py").write_text(
        "from dataclasses import replace\n"
        "from tests.poison.pipelines import prompt_raises\n"
        f"pipeline = replace(prompt_raises, name='n' * {PIPELINE_NAME_MAX + 1})\n"
    )
    with pytest.raises(UnknownPipeline, match=f"the limit is {PIPELINE_NAME_MAX}") as caught:
        load_pipeline("longname:pipeline", Settings.given())
    assert "\n" not in str(caught.value)


def test_the_tick_command_exits_0_when_one_prompt_raises(tick_env: str) -> None:
    """`gemini-ledger tick` of a day with one item whose prompt raises exits 0 (it exited 2
    on every tick, enrolling nothing) and its JSON report names the parked item."""
    import json

    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(
        app, ["tick", "tests.poison.pipelines:prompt_raises", "--day", str(DAY), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["enrolled"], report["submitted"], report["parked"]) == (5, 5, {"prompt": 1})
    assert report["steps"]["enroll"]["prompt_parked_examples"][0].startswith(
        f"promptfail:{DAY}:k-3:v1: ValueError: cannot build a prompt"
    )
