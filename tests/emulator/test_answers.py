"""The schema-conforming answer generator, in process, over many seeds."""

from __future__ import annotations

from typing import Any, Literal

import orjson
import pytest
from pydantic import BaseModel, Field

from emulator.testing import answer_text, generate_value, rng_for

from .models import Article, Reading, ReviewLabel


class Node(BaseModel):
    name: str
    kind: Literal[1, 2, 3]
    children: list[Node] = Field(default_factory=list, max_length=2)
    parent: Node | None = None


class Tagged(BaseModel):
    kind: Literal["tagged"] = "tagged"
    code: str = Field(min_length=5, max_length=8)
    ratio: float = Field(multiple_of=None, ge=0.5, le=0.75)
    items: list[int] = Field(min_length=3, max_length=3)
    maybe: int | str | None
    mapping: dict[str, int] = Field(default_factory=dict)


@pytest.mark.parametrize("model", [ReviewLabel, Reading, Article, Node, Tagged])
def test_pydantic_schemas_validate_for_many_seeds(model: type[BaseModel]) -> None:
    """For 200 seeds the JSON answer to a pydantic model's schema validates against the model."""
    schema = model.model_json_schema()
    for seed in range(200):
        model.model_validate_json(answer_text(schema, seed, "key", 1))


def test_gemini_style_schema() -> None:
    """Gemini responseSchema style (uppercase types, nullable, propertyOrdering) is honoured."""
    schema: dict[str, Any] = {
        "type": "OBJECT",
        "properties": {
            "b": {"type": "INTEGER", "minimum": 3, "maximum": 4},
            "a": {"type": "STRING", "enum": ["x", "y"], "nullable": True},
            "c": {"type": "ARRAY", "items": {"type": "BOOLEAN"}, "minItems": 2, "maxItems": 2},
        },
        "required": ["a", "b", "c"],
        "propertyOrdering": ["a", "b", "c"],
    }
    for seed in range(50):
        value = generate_value(schema, rng_for(seed))
        assert list(value) == ["a", "b", "c"]
        assert value["a"] in ("x", "y") and value["b"] in (3, 4)
        assert len(value["c"]) == 2 and all(isinstance(v, bool) for v in value["c"])


def test_answers_are_deterministic() -> None:
    """Same (seed, key, n) gives the same text; a different key or seed a different one."""
    schema = ReviewLabel.model_json_schema()
    one = answer_text(schema, 1, "k", 1)
    assert answer_text(schema, 1, "k", 1) == one
    assert answer_text(schema, 2, "k", 1) != one
    assert answer_text(schema, 1, "k2", 1) != one
    assert orjson.loads(one)
    assert answer_text(None, 1, "k", 1).startswith("Emulated answer")
