"""Worked example on the batch channel: label app-store reviews overnight.

Each review in ``data/reviews.jsonl`` (several languages, some emoji-only) becomes one job
keyed ``reviews:<day>:<review id>:v1``; the answer must validate against :class:`ReviewLabel`
(category, sentiment, confidence); ``on_result`` overwrites the review's label in the
``review_labels`` table, keyed by the review id (the item's own id, not the idempotency
key): calling it twice for a key (a resumed side effect) changes nothing, and a new key
version (``v2``, to regenerate) replaces the review's label instead of adding a second row.

The results table belongs to this example, not to the ledger: it lives in its own SQLModel
metadata (never in the ledger's migrations) and is created here on first use, in the
database named by ``REVIEWS_RESULTS_URL`` (default: the ledger's own database).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, MetaData
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from flows.pipeline import Pipeline, Prompt
from flows.settings import load_settings
from ledger import Channel, database_url, make_engine

__all__ = [
    "DATA_FILE",
    "RESULTS_URL_ENV",
    "ReviewLabel",
    "ReviewLabelRow",
    "build_prompt",
    "load_reviews",
    "pipeline",
    "results_engine",
    "review_id_of",
    "write_label",
]

DATA_FILE = Path(__file__).with_name("data") / "reviews.jsonl"
RESULTS_URL_ENV = "REVIEWS_RESULTS_URL"
MODEL = "gemini-2.5-flash"

SYSTEM = (
    "You label app-store reviews for a product team. Read the review (any language, possibly"
    " only emoji) and answer with JSON only: its category (bug, performance, feature_request,"
    " usability, pricing, account, praise or other), its sentiment (positive, neutral or"
    " negative) and your confidence between 0 and 1."
)

Category = Literal[
    "bug", "performance", "feature_request", "usability", "pricing", "account", "praise", "other"
]


class ReviewLabel(BaseModel):
    """The structured answer for one review."""

    model_config = ConfigDict(extra="forbid")

    category: Category
    sentiment: Literal["positive", "neutral", "negative"]
    confidence: float = Field(ge=0.0, le=1.0)


# -- input ---------------------------------------------------------------------------------


def load_reviews(day: date) -> Iterator[dict[str, Any]]:
    """Today's pile of reviews: the sample file stands for whatever arrived on ``day``."""
    with DATA_FILE.open("rb") as fh:
        for line in fh:
            if line.strip():
                yield orjson.loads(line)


def review_key(item: dict[str, Any], day: date) -> str:
    return f"reviews:{day.isoformat()}:{item['id']}:v1"


def build_prompt(item: dict[str, Any]) -> Prompt:
    # The review text alone is the user turn (instructions go in the system instruction),
    # so an emoji-only review really is one: the model may answer it with nothing, which the
    # classifier parks as ``schema``.
    # The review id is kept with the job and handed to write_label: no parsing it out of keys.
    return Prompt(
        text=item["text"], system=SYSTEM, temperature=0.0, keep={"review_id": str(item["id"])}
    )


# -- the side effect -------------------------------------------------------------------------


class _ResultsModel(SQLModel):
    # Own metadata: the ledger's migrations and create_all calls never see this table.
    metadata = MetaData()


class ReviewLabelRow(_ResultsModel, table=True):
    """One review's latest label (overwritten by review id; ``key`` is the job it came from)."""

    __tablename__ = "review_labels"

    review_id: str = SQLField(primary_key=True, max_length=512)
    key: str = SQLField(max_length=512)
    category: str = SQLField(max_length=32)
    sentiment: str = SQLField(max_length=16)
    confidence: float
    labelled_at: float


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def results_engine() -> Engine:
    """The engine for the results database, with ``review_labels`` created on first use."""
    # The example's own setting; unset, the results go into the ledger's database.
    url = database_url(os.environ.get(RESULTS_URL_ENV) or load_settings().database_url)
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = make_engine(url, create_dir=True)  # our own results table: ours to create
            _ResultsModel.metadata.create_all(engine)
            _check_keyed_by_review(engine)
            _engines[url] = engine
        return engine


def _check_keyed_by_review(engine: Engine) -> None:
    """A ``review_labels`` table from before labels were keyed by review id (one row per
    key, so a regeneration added rows) cannot take these upserts: say so, once."""
    from sqlalchemy import inspect

    pk = inspect(engine).get_pk_constraint("review_labels")["constrained_columns"]
    if pk != ["review_id"]:
        raise RuntimeError(
            f"review_labels in {engine.url.render_as_string(hide_password=True)} is keyed by"
            f" {', '.join(pk) or 'nothing'}, not review_id: rename it (ALTER TABLE"
            " review_labels RENAME TO review_labels_by_key) and the next delivery creates the"
            " table keyed by review"
        )


def review_id_of(key: str) -> str:
    """The review id in a key (``<pipeline>:<day>:<review id>:<version>``)."""
    parts = key.split(":")
    return parts[2] if len(parts) >= 4 else key


def write_label(
    key: str, result: ReviewLabel | dict[str, Any], kept: dict[str, Any] | None = None
) -> None:
    """Upsert one review's label by its review id (what ``build_prompt`` kept; read from the
    key for rows enrolled before it kept anything): idempotent, so a resumed side effect is
    harmless, and a regenerated key (``v2``) replaces the review's earlier label."""
    label = result if isinstance(result, ReviewLabel) else ReviewLabel.model_validate(result)
    engine = results_engine()
    table = ReviewLabelRow.__table__  # type: ignore[attr-defined]
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    row = {
        "review_id": str(kept["review_id"]) if kept else review_id_of(key),
        "key": key,
        "category": label.category,
        "sentiment": label.sentiment,
        "confidence": label.confidence,
        "labelled_at": time.time(),
    }
    stmt = dialect.insert(table).values(row)
    stmt = stmt.on_conflict_do_update(
        index_elements=["review_id"],
        set_={k: stmt.excluded[k] for k in row if k != "review_id"},
    )
    with engine.begin() as conn:
        conn.execute(stmt)


pipeline: Pipeline[dict[str, Any]] = Pipeline(
    name="reviews",
    model=MODEL,
    channel=Channel.BATCH,
    output=ReviewLabel,
    load_items=load_reviews,
    key_of=review_key,
    build_prompt=build_prompt,
    on_result=write_label,
    attempt_cap=4,
    unknown_cap=2,
    batch_size_limit=50_000,
    description="Label app-store reviews (category, sentiment, confidence) overnight.",
)
