"""Generation settings (flows/generation.py) and what the hooks get (flows/pipeline.py Run,
Prompt.keep): checked when a pipeline is defined, rendered the same on every channel's wire,
honoured by the emulator, part of a pipeline's revision."""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from flows import GenerationSettings, Pipeline, Prompt, Run, SafetySetting
from flows.identity import schema_fingerprint
from flows.settings import Settings
from ledger import Channel, Ledger, ResultRow, fingerprint_of

DAY = date(2026, 12, 6)


class Label(BaseModel):
    label: str = Field(min_length=1)


def _pipeline(**kw: Any) -> Pipeline[Any]:
    defaults: dict[str, Any] = {
        "name": "gen-test",
        "model": "gemini-2.5-flash",
        "channel": Channel.BATCH,
        "output": Label,
        "load_items": lambda day: [],
        "key_of": lambda item, day: f"gen-test:{item}",
        "build_prompt": lambda item: Prompt(text=f"classify {item}"),
        "on_result": lambda key, result: None,
    }
    return Pipeline(**{**defaults, **kw})


SETTINGS = GenerationSettings(
    temperature=0.3,
    top_p=0.9,
    seed=11,
    max_output_tokens=200,
    stop_sequences=("<END>",),
    thinking_level="low",
    safety_settings=(SafetySetting(category="harassment", threshold="block_only_high"),),
)
# What the emulator records for SETTINGS, whatever the channel (emulator/_settings.py).
RECEIVED = {
    "temperature": 0.3,
    "top_p": 0.9,
    "seed": 11,
    "max_output_tokens": 200,
    "stop_sequences": ["<END>"],
    "thinking_level": "low",
    "safety": [{"category": "harassment", "threshold": "block_only_high"}],
}


# --- checked when the pipeline is defined ----------------------------------------------------


@pytest.mark.parametrize(
    ("model", "channel", "settings", "words"),
    [
        ("gemini-2.5-flash", Channel.BATCH, {"thinking_level": "low"}, "takes thinking_budget"),
        (
            "gemini-3-flash-preview",
            Channel.DIRECT,
            {"thinking_budget": 512},
            "takes thinking_level",
        ),
        ("gemini-3-flash-preview", Channel.BACKGROUND, {"top_k": 4}, "cannot send top_k"),
        ("gemini-2.5-flash", Channel.BACKGROUND, {"thinking_budget": 9}, "thinking_budget"),
    ],
)
def test_a_setting_the_model_or_channel_cannot_take_is_refused_at_definition(
    model: str, channel: Channel, settings: dict[str, Any], words: str
) -> None:
    """A level on a 2.x model, a budget on a 3.x model, or a setting the interactions API
    has no field for is one clear line when the pipeline is defined, not a night of 400s."""
    with pytest.raises(ValueError, match=words):
        _pipeline(model=model, channel=channel, generation=GenerationSettings(**settings))


def test_the_issue_example_is_written_as_settings() -> None:
    """'A thinking budget of 512 and at most 200 output tokens' on a 2.5 batch pipeline."""
    p = _pipeline(generation=GenerationSettings(thinking_budget=512, max_output_tokens=200))
    assert p.settings_for(Prompt(text="x")).given() == {
        "thinking_budget": 512,
        "max_output_tokens": 200,
    }


def test_item_settings_override_the_pipeline_field_by_field() -> None:
    """An item's settings replace only the fields it gives; a thinking knob it gives
    replaces the pipeline's; its legacy temperature wins last."""
    p = _pipeline(
        model="gemini-flash-latest",  # an alias: the family is not known, both knobs pass
        generation=GenerationSettings(max_output_tokens=100, thinking_budget=64, seed=1),
    )
    prompt = Prompt(
        text="x",
        temperature=0.5,
        settings=GenerationSettings(thinking_level="high", seed=2, temperature=0.1),
    )
    assert p.settings_for(prompt).given() == {
        "max_output_tokens": 100,
        "thinking_level": "high",
        "seed": 2,
        "temperature": 0.5,
    }


def test_settings_are_part_of_the_revision_and_leave_old_pipelines_alone(sqlite_url) -> None:
    """A settings change is a new revision (as a schema change is); a pipeline without
    settings keeps the fingerprint it had before settings existed."""
    import hashlib

    import orjson

    bare = _pipeline()
    schema_only = hashlib.sha256(
        orjson.dumps(Label.model_json_schema(), option=orjson.OPT_SORT_KEYS)
    ).hexdigest()[:32]
    assert schema_fingerprint(bare) == schema_only

    ledger = Ledger(sqlite_url)
    fields = {"spec": "m:p", "channel": "batch", "model": bare.model}
    ledger.record_pipeline("gen-test", schema_fingerprint=schema_fingerprint(bare), **fields)
    limited = _pipeline(generation=GenerationSettings(max_output_tokens=50))
    change = ledger.record_pipeline(
        "gen-test", schema_fingerprint=schema_fingerprint(limited), **fields
    )
    assert (change.outcome, change.record.revision) == ("changed", 2)
    again = ledger.record_pipeline(
        "gen-test", schema_fingerprint=schema_fingerprint(limited), **fields
    )
    assert again.outcome == "same"


# --- the same settings on every channel's wire -----------------------------------------------


def _send_all_three(emulator: Any, settings: GenerationSettings, item: Prompt) -> None:
    """Send ``item`` under ``settings`` the way each channel builds its request."""
    from flows.testing import (
        create_batch_job,
        create_kwargs,
        direct_config,
        upload_requests,
        write_requests,
    )

    client = emulator.client()
    model = "gemini-3-flash-preview"
    direct = _pipeline(model=model, channel=Channel.DIRECT, generation=settings)
    client.models.generate_content(
        model=model, contents=item.text, config=direct_config(direct, item, "wire:direct")
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.jsonl"
        with path.open("wb") as out:
            write_requests(
                [("wire:batch", item.model_dump_json(exclude_none=True))],
                Label.model_json_schema(),
                out,
                base=settings,
            )
        name = upload_requests(client, path, display_name="wire")
        create_batch_job(client, model=model, file_name=name, display_name="wire")
    kwargs = create_kwargs(
        item, key="wire:background", pipeline="gen-test", model=model, schema=Label, base=settings
    )
    client.interactions.create(**kwargs)


def test_the_three_channels_send_the_same_settings(emulator) -> None:
    """One rendering per wire shape: a batch line, a generate_content call and an
    interaction carry the same effective settings (as the emulator reads them)."""
    _send_all_three(emulator, SETTINGS, Prompt(text="classify this"))
    received = emulator.received()
    assert received["wire:batch"] == RECEIVED
    assert received["wire:direct"] == RECEIVED
    assert received["wire:background"] == RECEIVED


def test_an_item_override_reaches_every_channel(emulator) -> None:
    """An item's own settings are merged over the pipeline's the same way on each channel."""
    item = Prompt(text="x", settings=GenerationSettings(max_output_tokens=7, thinking_level="high"))
    _send_all_three(emulator, SETTINGS, item)
    expected = {**RECEIVED, "max_output_tokens": 7, "thinking_level": "high"}
    received = emulator.received()
    assert [received[f"wire:{c}"] for c in ("batch", "direct", "background")] == [expected] * 3


# --- the emulator honours what it can ------------------------------------------------------


def _generate(emulator: Any, settings: GenerationSettings, key: str) -> Any:
    from flows.testing import direct_config

    p = _pipeline(channel=Channel.DIRECT, generation=settings)
    client = emulator.client()  # held: a collected client closes its connections
    return client.models.generate_content(
        model=p.model, contents="classify this", config=direct_config(p, Prompt(text="x"), key)
    )


def test_the_pipelines_own_token_limit_finishes_max_tokens_and_parks_truncated(
    emulator,
) -> None:
    """An answer longer than max_output_tokens is cut with finish MAX_TOKENS, which the
    classifier keeps as `truncated` (the operator's limit, not a retryable fault)."""
    from ledger import Failure, classify_response

    response = _generate(emulator, GenerationSettings(max_output_tokens=1), "honour:max")
    data = response.model_dump(mode="json", exclude_none=True)
    assert data["candidates"][0]["finish_reason"] == "MAX_TOKENS"
    failure = classify_response(data)
    assert isinstance(failure, Failure) and failure.code == "truncated"


def test_thinking_tokens_follow_the_budget(emulator) -> None:
    """The thoughts an answer reports follow the budget sent (0 turns thinking off)."""
    assert (
        _generate(
            emulator, GenerationSettings(thinking_budget=512), "t:512"
        ).usage_metadata.thoughts_token_count
        == 512
    )
    assert not _generate(
        emulator, GenerationSettings(thinking_budget=0), "t:0"
    ).usage_metadata.thoughts_token_count


def test_a_stop_sequence_ends_the_answer_before_it(emulator) -> None:
    """The answer stops before the first stop sequence (finish STOP, sequence left out)."""
    whole = _generate(emulator, GenerationSettings(), "stop:a").text
    cut = _generate(emulator, GenerationSettings(stop_sequences=(":",)), "stop:a").text
    assert cut == whole[: whole.index(":")]


def test_the_emulator_refuses_a_thinking_level_on_a_2_5_model(emulator) -> None:
    """What check_settings refuses at definition, the emulator refuses as the API does."""
    from google.genai import errors, types

    client = emulator.client()
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(
            model="gemini-2.5-flash",
            contents="x",
            config=types.GenerateContentConfig(
                thinking_config=types.ThinkingConfig(thinking_level=types.ThinkingLevel.LOW)
            ),
        )
    assert caught.value.code == 400


# --- the hooks get what they need ----------------------------------------------------------


SEEN: list[Any] = []


def test_hooks_get_the_run_and_on_result_gets_what_the_item_kept(sqlite_url) -> None:
    """load_items, key_of and build_prompt that take a Run get the day and the run's
    params; on_result that takes a third argument gets the item's kept data back from the
    ledger; hooks written the old way still get their usual arguments."""
    from flows.testing import DeliveryPoints, deliver_done, enroll_day

    SEEN.clear()

    def load(day: date, run: Run) -> list[dict[str, Any]]:
        return [{"id": 7, "text": "nice", "lang": run.params["language"], "day": run.day}]

    def build(item: dict[str, Any], run: Run) -> Prompt:
        return Prompt(
            text=f"in {run.params['language']} for {run.day}: {item['text']}",
            keep={"id": item["id"]},
        )

    p = _pipeline(
        load_items=load,
        key_of=lambda item, day, run: f"gen-test:{item['id']}:{run.params['language']}",
        build_prompt=build,
        on_result=lambda key, result, kept: SEEN.append((key, result.label, kept)),
    )
    ledger = Ledger(sqlite_url)
    out = enroll_day(ledger, p, DAY, params={"language": "fr"})
    assert out.enrolled == 1
    key = "gen-test:7:fr"
    row = ledger.get(key)
    assert p.prompt_of(row.payload).text == "in fr for 2026-12-06: nice"
    # The poison-input digest is the request's alone: kept data does not make it unique.
    request = Prompt(text="in fr for 2026-12-06: nice").model_dump_json(exclude_none=True)
    assert row.fingerprint == fingerprint_of(request)

    ledger.reserve(pipeline=p.name, limit=1, reservation="r1")
    ledger.bind_handle(key, reservation="r1", handle="h1")
    ledger.record_result(ResultRow(key, '{"label": "good"}', 1, 1, 2), handle="h1")
    import logging

    deliver_done(
        ledger,
        p,
        token="t",
        older_than=60,
        log=logging.getLogger("t"),
        points=DeliveryPoints(),
        cap=Settings.given().delivery_cap,
    )
    assert [(key, "good", {"id": 7})] == SEEN


def test_an_item_keeping_too_much_is_parked_as_its_own_prompt_failure(sqlite_url) -> None:
    """Kept data rides with every row: an item keeping more than KEEP_MAX_BYTES is parked
    `prompt:ValidationError`, the rest of the day goes on."""
    p = _pipeline(
        load_items=lambda day: ["small", "big"],
        build_prompt=lambda item: Prompt(
            text=item, keep={"blob": "x" * (5000 if item == "big" else 10)}
        ),
    )
    from flows.testing import enroll_day

    ledger = Ledger(sqlite_url)
    out = enroll_day(ledger, p, DAY)
    assert (out.enrolled, out.prompt_parked) == (1, 1)
    assert ledger.get("gen-test:big").error_class == "prompt:ValidationError"


def test_tick_param_options_become_run_params() -> None:
    """`tick --param NAME=VALUE` gives the hooks ``run.params``; a malformed one is refused."""
    from flows.errors import UsageError
    from flows.testing import tick_params

    assert tick_params(["language=French", "tone= dry=ish"]) == {
        "language": "French",
        "tone": " dry=ish",
    }
    with pytest.raises(UsageError, match="NAME=VALUE"):
        tick_params(["language"])


def test_an_item_keeping_a_secret_is_parked_and_the_secret_never_stored(sqlite_url) -> None:
    """Kept data lives in the ledger: an item keeping a registered secret is parked
    `prompt:ValueError` and neither its payload nor its message holds the secret."""
    from flows.testing import enroll_day
    from ledger import register_secret

    secret = "gl-test-secret-0123456789abcdef"
    register_secret(secret)
    p = _pipeline(
        load_items=lambda day: ["a"],
        build_prompt=lambda item: Prompt(text=item, keep={"token": secret}),
    )
    ledger = Ledger(sqlite_url)
    assert enroll_day(ledger, p, DAY).prompt_parked == 1
    row = ledger.get("gen-test:a")
    assert row.error_class == "prompt:ValueError"
    assert secret not in row.payload + (row.error_message or "")
