"""The background channel's pieces without Prefect: the ledger verbs it relies on, rendering
a prompt into an interaction, reading interactions, the bounded poller, the articles example."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from flows.examples import articles
from flows.gemini.gateway import KEY_HEADER, gemini_client
from flows.pipeline import Prompt
from flows.settings import load_settings
from flows.testing import (
    LABEL_KEY,
    RUNNING,
    Handle,
    create_kwargs,
    judge,
    label_value,
    output_text,
    poll_all,
    usage_of,
)
from ledger import Failure, FailureRow, Ledger, NewJob, Policy, ResultRow, Verdict

from .pipelines import Note


def _submitted(ledger: Ledger, keys: list[str]) -> dict[str, str]:
    ledger.enroll(
        [NewJob(k, {"text": k}) for k in keys], pipeline="p", channel="background", model="m"
    )
    ledger.reserve(pipeline="p", limit=len(keys), reservation="r1")
    handles = {k: f"v1_{i}" for i, k in enumerate(keys)}
    for k, h in handles.items():
        ledger.bind_handle(k, reservation="r1", handle=h)
    return handles


def test_bulk_apply_with_one_handle_per_key(ledger_url: str) -> None:
    """apply_results/apply_failures take a key -> handle mapping: each row is applied only
    under its own interaction, all in one call."""
    ledger = Ledger(ledger_url)
    handles = _submitted(ledger, ["a", "b", "c", "d"])
    wrong = {**handles, "b": "v1_other"}
    applied = ledger.apply_results(
        [ResultRow("a", "{}", 1, 2, 3), ResultRow("b", "{}")], handle=wrong
    )
    assert applied == 1
    assert ledger.get("a").status == "done" and ledger.get("b").status == "submitted"
    failure = Failure(Verdict.PERMANENT, "400", "bad")
    n = ledger.apply_failures(
        [FailureRow("c", failure), FailureRow("d", failure)], handle=handles, policy=Policy()
    )
    assert n == 2 and ledger.get("c").status == ledger.get("d").status == "parked"
    assert ledger.get("a").total_tokens == 3


def test_claim_done_is_exclusive_until_stale(ledger_url: str) -> None:
    """Only one claimant gets a done row; a claim older than older_than can be taken over;
    a released claim is free again; consuming drops the claim."""
    now = [1000.0]
    ledger = Ledger(ledger_url, clock=lambda: now[0])
    handles = _submitted(ledger, ["a", "b"])
    ledger.apply_results([ResultRow("a", "{}"), ResultRow("b", "{}")], handle=handles)
    first = ledger.claim_done(pipeline="p", token="t1", older_than=300)
    assert [k for k, _ in first] == ["a", "b"]
    assert ledger.claim_done(pipeline="p", token="t2", older_than=300) == []
    assert ledger.release_done(["b"], token="t1") == 1
    assert [k for k, _ in ledger.claim_done(pipeline="p", token="t2", older_than=300)] == ["b"]
    now[0] += 301
    assert [k for k, _ in ledger.claim_done(pipeline="p", token="t3", older_than=300)] == [
        "a",
        "b",
    ]
    assert ledger.consume(["a"]) == 1
    assert ledger.get("a").delivery_claim is None and ledger.get("b").delivery_claim == "t3"
    # The claim has its own column: the reservation stays what the submission left.
    assert ledger.get("b").reservation is None


def test_create_kwargs_carry_key_schema_and_prompt() -> None:
    """The interaction is background, labelled with a label-safe key, keyed by header, and
    asks for JSON matching the output schema."""
    prompt = Prompt(text="Write about tea", system="Be brief.", temperature=0.2)
    key = "articles:2026-11-22:The Tea/History:v1"
    kw = create_kwargs(prompt, key=key, pipeline="articles", model="gemini-x", schema=Note)
    assert kw["background"] is True and kw["model"] == "gemini-x"
    assert kw["input"] == "Write about tea" and kw["system_instruction"] == "Be brief."
    assert kw["generation_config"] == {"temperature": 0.2}
    assert kw["extra_headers"] == {KEY_HEADER: key}
    assert kw["response_format"]["schema"] == Note.model_json_schema()
    label = kw["labels"][LABEL_KEY]
    assert len(label) <= 63 and set(label) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-")
    assert label != label_value("articles:2026-11-22:The Tea History:v1")
    assert label_value("plain-key_1") == "plain-key_1"


def test_output_text_and_usage_from_raw_json() -> None:
    """Output text is the trailing model-output text (thoughts skipped); usage is read."""
    raw = {
        "status": "completed",
        "steps": [
            {"type": "user_input", "content": [{"type": "text", "text": "q"}]},
            {"type": "thought", "content": [{"type": "text", "text": "hmm"}]},
            {"type": "model_output", "content": [{"type": "text", "text": '{"a":'}]},
            {"type": "model_output", "content": [{"type": "text", "text": "1}"}]},
        ],
        "usage": {"total_input_tokens": 5, "total_output_tokens": 7, "total_tokens": 12},
    }
    assert output_text(raw) == '{"a":1}'
    assert tuple(usage_of(raw))[:3] == (5, 7, 12)
    assert output_text({"status": "completed"}) is None
    assert tuple(usage_of({})) == (0, 0, 0, 0, 0, 0)


class _CountingAio:
    """A stand-in async client that records how many gets are in flight at once."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0
        self.interactions = self
        self.with_raw_response = self

    async def get(self, handle: str, **_: Any) -> Any:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        body = {"status": "in_progress", "id": handle}

        class _Resp:
            async def read(self) -> bytes:
                return json.dumps(body).encode()

        return _Resp()

    async def aclose(self) -> None:
        return None


def test_poller_bounds_requests_in_flight() -> None:
    """At most max_concurrency gets are in flight, and they do overlap."""
    aio = _CountingAio()

    class _Client:
        def __init__(self) -> None:
            self.aio = aio

    jobs = [Handle(f"k{i}", f"v1_{i}", 0.0) for i in range(40)]
    polled = poll_all(
        jobs, Note, max_concurrency=5, running_limit_s=1e12, now=1.0, client_factory=_Client
    )
    assert aio.peak == 5
    assert [p.outcome for p in polled] == ["running"] * 40


def test_gateway_turns_off_interactions_retries(emulator) -> None:
    """A 503 on interactions.create reaches the caller after one request: no SDK retries."""
    from google.genai._interactions import APIStatusError

    emulator.set_scenario({"name": "overloaded", "rate_503": 1.0, "retry_delay_s": 0})
    client = gemini_client(load_settings())
    with pytest.raises(APIStatusError) as caught:
        client.interactions.create(model="m", input="x", background=True)
    assert caught.value.status_code == 503
    assert emulator.stats()["requests"] == {"POST /v1/interactions": 1}


def test_article_written_atomically_and_idempotently(tmp_path, monkeypatch) -> None:
    """on_result writes one JSON file per key, safe on any file system; a repeat overwrites."""
    monkeypatch.setenv(articles.ARTICLES_DIR_ENV, str(tmp_path))
    key = "articles:2026-11-22:tea/../history:v1"
    article = articles.Article(title="Tea", summary="s", body="b", tags=["tea"])
    articles.on_result(key, article)
    articles.on_result(key, article.model_dump())
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == [articles.article_path(key).name]
    assert "/" not in files[0].name and ":" not in files[0].name
    assert articles.Article.model_validate_json(files[0].read_text()) == article
    assert articles.safe_filename("a:b") != articles.safe_filename("a/b")


def test_articles_pipeline_shape() -> None:
    """The worked example: background channel, dozens of topics, stable keys."""
    from datetime import date

    from ledger import Channel

    p = articles.pipeline
    topics = list(p.load_items(date(2026, 11, 22)))
    assert p.channel == Channel.BACKGROUND and p.output is articles.Article
    assert 24 <= len(topics) <= 60 and len(set(topics)) == len(topics)
    keys = {p.key_of(t, date(2026, 11, 22)) for t in topics}
    assert len(keys) == len(topics)
    assert all(k.startswith("articles:2026-11-22:") and k.endswith(":v1") for k in keys)
    assert set(articles.Article.model_json_schema()["properties"]) == {
        "title",
        "summary",
        "body",
        "tags",
    }


class _BrokenAio(_CountingAio):
    """A stand-in async client whose gets fail at the transport level."""

    async def get(self, handle: str, **_: Any) -> Any:
        raise ConnectionResetError(f"connection reset while fetching {handle}")


def test_transient_get_error_is_not_a_verdict() -> None:
    """A get that fails transiently is classified retryable and reported as get_error, so the
    tick leaves the job submitted instead of failing it."""
    aio = _BrokenAio()

    class _Client:
        def __init__(self) -> None:
            self.aio = aio

    polled = poll_all([Handle("k", "v1_x", 0.0)], Note, now=1.0, client_factory=_Client)
    assert [p.outcome for p in polled] == ["get_error"]
    assert polled[0].failure is not None and polled[0].failure.verdict is Verdict.RETRYABLE


@pytest.mark.parametrize("status", sorted(RUNNING))
def test_a_running_status_is_no_verdict(status: str) -> None:
    """Every status of a working interaction (``idle`` from google-genai 3.4 among them)
    leaves the job submitted for the next poll."""
    polled = judge("k", "v1_x", {"id": "v1_x", "status": status}, Note)
    assert polled.outcome == "running" and polled.failure is None


def test_an_interaction_records_its_model_thoughts_and_cached_tokens() -> None:
    """A completed interaction's usage keeps thoughts, cached and audio input tokens, and its
    model is the row's model version (the interaction id its response id)."""
    raw = {
        "id": "v1_9",
        "status": "completed",
        "model": "gemini-3.8-flash",
        "output_text": '{"title": "hi", "tags": []}',
        "usage": {
            "total_input_tokens": 50,
            "total_output_tokens": 10,
            "total_thought_tokens": 7,
            "total_cached_tokens": 20,
            "total_tokens": 67,
            "input_tokens_by_modality": [
                {"modality": "text", "tokens": 45},
                {"modality": "audio", "tokens": 5},
            ],
        },
    }
    polled = judge("k", "v1_9", raw, Note)
    assert polled.outcome == "done"
    assert tuple(polled.usage) == (50, 10, 67, 7, 20, 5)
    assert (polled.model_version, polled.response_id) == ("gemini-3.8-flash", "v1_9")
