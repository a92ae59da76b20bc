"""Embedding pipelines on the batch channel: one JSONL of embed requests, an embeddings batch
job (``batches.create_embeddings``), each answer line's vector checked by the core."""

from __future__ import annotations

import math
from collections import Counter
from datetime import date
from typing import Any

import pytest

from flows import EmbeddingSettings, Pipeline, Prompt
from ledger import (
    Channel,
    LineFailure,
    LineSuccess,
    Status,
    Vector,
    Verdict,
    parse_embedding_line,
)
from tests.batch.conftest import attempts_by_key, submissions, tick_until_settled
from tests.ledgers import run_ledger

DAY = date(2026, 12, 6)
SPEC = "tests.embeddings.test_batch:pipeline"
NAME = "emb-batch"
DIMENSION = 8
TASK = "CLUSTERING"
DELIVERIES: Counter[str] = Counter()
DELIVERED: dict[str, Vector] = {}


def _deliver(key: str, result: Vector) -> None:
    DELIVERIES[key] += 1
    DELIVERED[key] = result


pipeline: Pipeline[str] = Pipeline(
    name=NAME,
    model="gemini-embedding-001",
    channel=Channel.BATCH,
    embedding=EmbeddingSettings(task_type=TASK, output_dimensionality=DIMENSION),
    load_items=lambda day: [f"review text number {i}" for i in range(24)],
    key_of=lambda item, day: f"{NAME}:{item.split()[-1]}",
    build_prompt=lambda item: Prompt(text=item),
    on_result=_deliver,
)

# What a row may be parked as under the default scenario: a refused row (400), a transient
# fault past the attempt cap (rows of failed jobs and rows missing from outputs included).
PARKED_UNDER_DEFAULT = {
    "permanent:400",
    "exhausted:429",
    "exhausted:500",
    "exhausted:503",
    "exhausted:missing_from_output",
    "exhausted:batch_failed",
    "exhausted:batch_expired",
    "exhausted:malformed_output",
    "empty",
}


@pytest.fixture
def env(emulator: Any, prefect_api: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The emulator, a Prefect API and a fresh SQLite ledger; nothing delivered yet."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    monkeypatch.delenv("GEMINI_LEDGER_CRASH_AT", raising=False)
    DELIVERIES.clear()
    DELIVERED.clear()
    return emulator


def _direct_vector(emulator: Any, text: str) -> list[float]:
    """What ``models.embed_content`` answers for ``text`` with the pipeline's settings."""
    from google.genai import types

    client = emulator.client()  # held: a collected client closes its connection
    answer = client.models.embed_content(
        model="gemini-embedding-001",
        contents=[text],
        config=types.EmbedContentConfig(task_type=TASK, output_dimensionality=DIMENSION),
    )
    assert answer.embeddings is not None
    return list(answer.embeddings[0].values or [])


@pytest.mark.system  # a whole night of batch ticks under the default scenario's faults
def test_a_batch_embedding_night_settles_against_the_default_scenario(env: Any) -> None:
    """Ticks until settled under `default`: every row consumed (delivered once, a vector of
    8 finite values, the one embed_content answers for its text) or parked with a class the
    scenario explains; attempts equal the emulator's submissions; the ledger holds the
    tokens billed, priced at the batch rate; every input and responses file is deleted."""
    from flows.testing import UsageLine, estimate_cost, load_prices

    env.set_scenario("default", seed=20261206)
    tick_until_settled(SPEC, NAME, day=DAY)
    ledger = run_ledger()
    jobs = ledger.jobs(pipeline=NAME)
    assert len(jobs) == 24
    consumed = {j.key for j in jobs if j.status == Status.CONSUMED.value}
    parked = [j for j in jobs if j.status == Status.PARKED.value]
    assert len(consumed) + len(parked) == 24 and consumed
    assert {j.error_class for j in parked} <= PARKED_UNDER_DEFAULT
    assert Counter(dict.fromkeys(consumed, 1)) == DELIVERIES
    assert attempts_by_key(ledger, NAME) == submissions(env, f"{NAME}:")
    assert max(attempts_by_key(ledger, NAME).values()) > 1  # the scenario's faults were met

    stats = env.stats()
    created = sum(n for route, n in stats["requests"].items() if "asyncBatchEmbedContent" in route)
    assert created == stats["batches_created"] >= 1
    assert not any("batchGenerateContent" in route for route in stats["requests"])
    assert stats["files"]["stored"] == 0 and stats["files"]["deleted"] >= 2

    counts = ledger.counts(pipeline=NAME)
    assert counts.total_tokens == stats["billed"]["total_tokens"] > 0
    usage = [UsageLine.of(u) for u in ledger.usage_by_model(pipeline=NAME)]
    prompt = sum(u.prompt_tokens for u in usage)
    assert prompt == counts.total_tokens  # embeddings bill prompt tokens only
    cost = estimate_cost(usage, load_prices(None))
    assert cost.usd == pytest.approx(prompt * 0.15 / 1_000_000 * 0.5)  # the batch rate

    for key in sorted(consumed)[:3]:
        values = DELIVERED[key].values
        assert len(values) == DIMENSION and all(math.isfinite(v) for v in values)
        text = f"review text number {key.rsplit(':', 1)[1]}"
        assert values == pytest.approx(_direct_vector(env, text))


def test_a_wrong_dimension_parks_with_the_cores_class(env: Any) -> None:
    """A vector one value short (read from `embeddings` answer lines) is the core's
    permanent `schema` failure: parked after its one attempt, never delivered; the other
    rows are delivered."""
    env.set_scenario(
        {
            "name": "short",
            "embed_line_style": "embeddings",
            "scripts": [{"match": f"{NAME}:3", "steps": ["bad_vector"]}],
        }
    )
    tick_until_settled(SPEC, NAME, day=DAY)
    ledger = run_ledger()
    bad = ledger.get(f"{NAME}:3")
    assert (bad.status, bad.error_class, bad.attempts) == (Status.PARKED.value, "schema", 1)
    assert f"{NAME}:3" not in DELIVERIES
    others = [j for j in ledger.jobs(pipeline=NAME) if j.key != f"{NAME}:3"]
    assert {j.status for j in others} == {Status.CONSUMED.value}
    assert all(len(DELIVERED[j.key].values) == DIMENSION for j in others)
    assert ledger.counts(pipeline=NAME).total_tokens == env.stats()["billed"]["total_tokens"]


def test_an_error_line_retries_or_parks_as_a_generate_error_would(env: Any) -> None:
    """Per-row error lines (gRPC codes): a 503 then an answer is delivered on its second
    attempt; a 400 is parked `permanent:400` after one; a 429 every time is parked
    `exhausted:429` at the attempt cap; attempts equal what the emulator received."""
    env.set_scenario(
        {
            "name": "row-errors",
            "scripts": [
                {"match": f"{NAME}:4", "steps": ["503", "ok"]},
                {"match": f"{NAME}:5", "steps": ["400"]},
                {"match": f"{NAME}:6", "steps": ["429"]},
            ],
        }
    )
    tick_until_settled(SPEC, NAME, day=DAY)
    ledger = run_ledger()
    row = {k: ledger.get(f"{NAME}:{k}") for k in (4, 5, 6)}
    assert (row[4].status, row[4].attempts) == (Status.CONSUMED.value, 2)
    assert (row[5].status, row[5].error_class, row[5].attempts) == (
        Status.PARKED.value,
        "permanent:400",
        1,
    )
    assert (row[6].status, row[6].error_class, row[6].attempts) == (
        Status.PARKED.value,
        "exhausted:429",
        pipeline.attempt_cap,
    )
    assert DELIVERIES[f"{NAME}:4"] == 1 and f"{NAME}:5" not in DELIVERIES
    assert attempts_by_key(ledger, NAME) == submissions(env, f"{NAME}:")


@pytest.mark.parametrize(
    "response",
    [
        {"embedding": {"values": [0.5, -1, 2]}, "tokenCount": 7},
        {"embeddings": [{"values": [0.5, -1, 2]}], "usageMetadata": {"promptTokenCount": 7}},
    ],
)
def test_both_readings_of_an_answer_line_give_the_vector(response: dict[str, Any]) -> None:
    """An answer line's `embedding` (one) and `embeddings` (a list of one) are both read:
    the vector checked against the dimension, its prompt tokens counted."""
    import orjson

    out = parse_embedding_line(orjson.dumps({"key": "k", "response": response}), 3)
    assert isinstance(out, LineSuccess)
    assert (out.key, out.result) == ("k", Vector(values=[0.5, -1.0, 2.0]))
    assert (out.usage.prompt_tokens, out.usage.candidates_tokens, out.usage.total_tokens) == (
        7,
        0,
        7,
    )
    short = parse_embedding_line(orjson.dumps({"key": "k", "response": response}), 4)
    assert isinstance(short, LineFailure)
    assert (short.failure.verdict, short.failure.code) == (Verdict.PERMANENT, "schema")


@pytest.mark.parametrize(
    ("line", "verdict", "code"),
    [
        ({"key": "k", "error": {"code": 8, "message": "quota"}}, Verdict.RETRYABLE, "429"),
        ({"error": {"code": 3, "message": "bad"}, "key": "k"}, Verdict.PERMANENT, "400"),
        ({"key": "k", "response": {"embedding": {"values": []}}}, Verdict.UNKNOWN, "empty"),
        ({"key": "k", "response": {}}, Verdict.UNKNOWN, "empty"),
        ({"key": "k"}, Verdict.RETRYABLE, "malformed_output"),
    ],
)
def test_an_embedding_line_that_is_no_vector_is_classified(
    line: dict[str, Any], verdict: Verdict, code: str
) -> None:
    """Error lines are classified as generate lines are (gRPC codes); no vector is `empty`;
    a line with neither response nor error is malformed."""
    import orjson

    out = parse_embedding_line(orjson.dumps(line), 3)
    assert isinstance(out, LineFailure) and out.key == "k"
    assert (out.failure.verdict, out.failure.code) == (verdict, code)


def test_a_line_without_its_key_is_never_given_to_a_row() -> None:
    """A keyless answer line cannot be matched to a row: it has no key (its row stays
    submitted and comes back missing_from_output), whatever vector it carries."""
    out = parse_embedding_line(b'{"response": {"embeddings": [{"values": [1, 2, 3]}]}}', 3)
    assert isinstance(out, LineFailure) and out.key is None
    assert out.failure.code == "malformed_output"
