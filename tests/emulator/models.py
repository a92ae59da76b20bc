"""Pydantic models used as output schemas in the emulator tests."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field


class Sentiment(StrEnum):
    positive = "positive"
    negative = "negative"
    mixed = "mixed"


class Aspect(BaseModel):
    name: str = Field(min_length=2, max_length=40)
    weight: float = Field(ge=0, le=1)


class ReviewLabel(BaseModel):
    sentiment: Sentiment
    stars: int = Field(ge=1, le=5)
    language: Literal["en", "fr", "de"]
    aspects: list[Aspect] = Field(min_length=1, max_length=3)
    spam: bool
    summary: str | None = None
    score: float = Field(ge=-1, le=1)


class Article(BaseModel):
    title: str
    paragraphs: list[str] = Field(min_length=2, max_length=4)


class Reading(BaseModel):
    """Exclusive bounds and nesting: only usable as response_json_schema (the SDK's
    response_schema conversion refuses exclusiveMinimum)."""

    value: float = Field(gt=0, lt=10)
    count: int = Field(gt=0, lt=3)
    label: ReviewLabel
    extra: list[Aspect] | None = None
