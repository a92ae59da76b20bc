"""The vector rule of the core and the embedding pipeline's declaration."""

from __future__ import annotations

import math

import pytest
from pydantic import BaseModel

from flows import EmbeddingSettings, GenerationSettings, Pipeline
from ledger import Channel, Failure, Vector, Verdict, validate_vector, vector_values


@pytest.mark.parametrize(
    ("values", "dimension", "verdict", "code"),
    [
        (None, None, Verdict.UNKNOWN, "empty"),
        ([], 3, Verdict.UNKNOWN, "empty"),
        ([0.1, math.nan, 0.2], 3, Verdict.PERMANENT, "schema"),
        ([0.1, math.inf, 0.2], 3, Verdict.PERMANENT, "schema"),
        ([0.1, None, 0.2], 3, Verdict.PERMANENT, "schema"),
        ([0.1, "0.2", 0.3], 3, Verdict.PERMANENT, "schema"),
        ([True, 0.2, 0.3], 3, Verdict.PERMANENT, "schema"),
        ([0.1, 0.2], 3, Verdict.PERMANENT, "schema"),
        ({"values": [0.1]}, None, Verdict.PERMANENT, "schema"),
    ],
)
def test_a_vector_that_is_not_one_is_a_failure(values, dimension, verdict, code) -> None:
    """No vector or an empty one is `empty` (retried to the unknown cap); a non-finite or
    non-number value or a wrong length is a permanent `schema` failure."""
    checked = validate_vector(values, dimension)
    assert isinstance(checked, Failure)
    assert (checked.verdict, checked.code) == (verdict, code)


def test_a_good_vector_is_stored_as_values() -> None:
    """Finite numbers of the asked length become a Vector; the API's shape is read too."""
    checked = validate_vector(vector_values({"values": [1, 0.5, -2]}), 3)
    assert checked == Vector(values=[1.0, 0.5, -2.0])
    assert Vector.model_validate_json(checked.model_dump_json()) == checked


def test_a_vector_is_checked_the_same_whatever_its_path() -> None:
    """Floats whose sum overflows are still a vector; ints are read as floats; a NaN or an
    infinity anywhere is refused, with the position of the first bad value."""
    assert validate_vector([1e308, 1e308], 2) == Vector(values=[1e308, 1e308])
    assert validate_vector([1, 2.5], 2) == Vector(values=[1.0, 2.5])
    for bad, first in (([0.5, -math.inf, math.inf], 1), ([0.5, 0.25, math.nan], 2)):
        checked = validate_vector(bad, 3)
        assert isinstance(checked, Failure) and checked.code == "schema"
        assert f"embedding value {first} is" in checked.message


def test_a_vector_is_stored_as_the_model_would_write_it() -> None:
    """The stored text of a vector is the model's own JSON of it."""
    vector = Vector(values=[0.1, -2.0, 1e-07, 123456789.125, 1e20])
    assert vector.to_json() == vector.model_dump_json()


def _pipeline(**over):
    base = {
        "name": "emb",
        "model": "gemini-embedding-001",
        "channel": Channel.DIRECT,
        "embedding": {"task_type": "CLUSTERING", "output_dimensionality": 8},
        "load_items": lambda day: [],
        "key_of": lambda item, day: str(item),
        "build_prompt": lambda item: None,
        "on_result": lambda key, result: None,
    }
    return Pipeline(**{**base, **over})


class _Answer(BaseModel):
    text: str


def test_an_embedding_pipeline_declares_vectors_once() -> None:
    """`embedding=` makes the results vectors (output is Vector); an output model, another
    channel or generation settings with it are refused when the pipeline is defined, and a
    pipeline with neither is refused too."""
    p = _pipeline()
    assert p.is_embedding and p.output is Vector
    assert p.embedding == EmbeddingSettings(task_type="CLUSTERING", output_dimensionality=8)
    with pytest.raises(ValueError, match="leave output out"):
        _pipeline(output=_Answer)
    with pytest.raises(ValueError, match="the Interactions API has no embeddings"):
        _pipeline(channel=Channel.BACKGROUND)
    assert _pipeline(channel=Channel.BATCH).is_embedding
    with pytest.raises(ValueError, match="generation settings"):
        _pipeline(generation=GenerationSettings(temperature=0.1))
    with pytest.raises(ValueError, match="output is required"):
        _pipeline(embedding=None)


def test_embedding_settings_are_part_of_the_revision() -> None:
    """A change of task type or dimension changes the pipeline's fingerprint."""
    from flows.identity import schema_fingerprint

    a = schema_fingerprint(_pipeline())
    b = schema_fingerprint(_pipeline(embedding={"output_dimensionality": 16}))
    assert a != b


def test_an_item_of_an_embedding_pipeline_takes_no_generation_settings() -> None:
    """An item's Prompt.settings on an embedding pipeline is refused (its key is parked
    prompt:ValueError by the enroll step), never sent."""
    from datetime import date

    from flows import Prompt, Run

    p = _pipeline(
        build_prompt=lambda item: Prompt(text=item, settings=GenerationSettings(temperature=0))
    )
    with pytest.raises(ValueError, match="generation settings"):
        p.prompt_for("a text", Run(day=date(2026, 12, 6)))
