"""The shipped reviews example on the batch channel, and the request rendering it relies on."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import func, select

from flows.examples.reviews import (
    ReviewLabel,
    ReviewLabelRow,
    load_reviews,
    pipeline,
    results_engine,
)
from flows.pipeline import Prompt
from flows.testing import RequestWriter, batch_request, write_requests
from tests.ledgers import run_ledger

from .conftest import DAY, tick_until_settled


def test_request_writer_lines_are_batch_requests() -> None:
    """Each fast JSONL line parses to exactly {"key", "request": batch_request(prompt, schema)}."""
    schema = ReviewLabel.model_json_schema()
    prompts = [
        Prompt(text="App crashes 😡 on “save”\nplease fix", system="Label it.", temperature=0.0),
        Prompt(text="🔥🔥🔥"),
        Prompt(text='quotes " and \\ backslashes', system=None, temperature=1.5),
        Prompt(text="日本語のレビュー", system="Other system", temperature=None),
    ]
    writer = RequestWriter(schema)
    for i, prompt in enumerate(prompts):
        line = writer.line(f"k:{i}", prompt.model_dump_json())
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert orjson.loads(line) == {"key": f"k:{i}", "request": batch_request(prompt, schema)}
    request = batch_request(prompts[0], schema)
    assert request["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
        "temperature": 0.0,
    }
    assert request["systemInstruction"] == {"parts": [{"text": "Label it."}]}
    assert "systemInstruction" not in batch_request(prompts[1], schema)


def test_write_requests_writes_the_request_writer_lines() -> None:
    """The request file holds, row by row, the same line RequestWriter.line renders, also
    when the system instruction or temperature changes from one row to the next."""
    schema = ReviewLabel.model_json_schema()
    prompts = [
        Prompt(text="a", system="Label it.", temperature=0.0),
        Prompt(text="b", system="Label it.", temperature=0.0),
        Prompt(text="c", system="Label it.", temperature=None),
        Prompt(text="d", system=None, temperature=None),
        Prompt(text="e", system="Other", temperature=0.5),
        Prompt(text="f", system="Label it.", temperature=0.0),
    ]
    rows = [(f"k:{i}", p.model_dump_json()) for i, p in enumerate(prompts)]
    out = io.BytesIO()
    assert write_requests(rows, schema, out) == len(rows)
    writer = RequestWriter(schema)
    assert out.getvalue() == b"".join(writer.line(k, p) for k, p in rows)


def test_example_items_keys_and_prompts() -> None:
    """The sample has at least 500 reviews with unique stable ids, several languages and
    emoji-only ones; keys carry day, id and version; the prompt is the review text alone."""
    reviews = list(load_reviews(DAY))
    assert len(reviews) >= 500
    assert len({r["id"] for r in reviews}) == len(reviews)
    assert len({r["lang"] for r in reviews}) >= 8
    emoji_only = [r for r in reviews if not any(ch.isalpha() for ch in r["text"])]
    assert len(emoji_only) >= 10
    first = reviews[0]
    assert pipeline.key_of(first, date(2026, 11, 22)) == f"reviews:2026-11-22:{first['id']}:v1"
    assert pipeline.build_prompt(first).text == first["text"]


def test_shipped_reviews_example_runs_end_to_end(batch_env: dict[str, Any]) -> None:
    """`reviews` labels all 516 sample reviews into review_labels (own table, not the
    ledger's migrations) and publishes a tick-reviews table artifact."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    batch_env["emulator"].set_scenario({"batch_polls_to_complete": 1})
    reports = tick_until_settled("reviews", "reviews", max_ticks=4)
    assert reports[0].enrolled == 516 and reports[0].submitted == 516
    ledger = run_ledger()
    assert ledger.counts(pipeline="reviews").by_status == {"consumed": 516}
    with results_engine().connect() as conn:
        assert conn.execute(select(func.count()).select_from(ReviewLabelRow)).scalar() == 516
    with ledger.engine.connect() as conn:
        tables = set(ledger.engine.dialect.get_table_names(conn))
    assert "review_labels" in tables  # same database by default, created by the example
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["tick-reviews"]))
        )
    assert artifacts and artifacts[-1].type == "table"


def test_on_result_overwrites_by_key_in_its_own_database(tmp_path, monkeypatch) -> None:
    """write_label upserts one row per key (idempotent) in REVIEWS_RESULTS_URL's database,
    and review_labels is no table of the ledger's metadata or migrations."""
    from sqlmodel import SQLModel

    from flows.examples.reviews import write_label

    url = f"sqlite:///{tmp_path / 'results.db'}"
    monkeypatch.setenv("REVIEWS_RESULTS_URL", url)
    key = "reviews:2026-11-22:rv-00007:v1"
    write_label(key, ReviewLabel(category="bug", sentiment="negative", confidence=0.4))
    write_label(key, ReviewLabel(category="bug", sentiment="negative", confidence=0.4))
    write_label(key, {"category": "praise", "sentiment": "positive", "confidence": 0.9})
    with results_engine().connect() as conn:
        rows = conn.execute(
            select(ReviewLabelRow.review_id, ReviewLabelRow.category, ReviewLabelRow.confidence)
        ).all()
    assert [tuple(r) for r in rows] == [("rv-00007", "praise", 0.9)]
    assert "review_labels" not in SQLModel.metadata.tables
    migrations = Path(__file__).resolve().parents[2] / "ledger" / "migrations"
    assert not any("review_labels" in f.read_text() for f in migrations.rglob("*.py"))
