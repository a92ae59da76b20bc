"""The tick flow on the background channel: real Prefect runs, the emulator, the real SDK."""

from __future__ import annotations

from typing import Any

from ledger import Ledger

from .conftest import DAY, Bench, key_of


def _status(ledger: Ledger, item: str) -> tuple[str, str | None, int]:
    view = ledger.get(key_of(item))
    return view.status, view.error_class, view.attempts


def _assert_billing_matches(bench: Bench) -> None:
    """Every submission the emulator saw is an attempt the ledger counted or a flagged orphan
    re-send (no hidden retries, no duplicates without a flag); an ambiguous create is both an
    attempt and a flag, so the submissions lie between the attempts and their sum."""
    subs = bench.submissions()
    for job in bench.ledger().jobs(pipeline="bgtest"):
        sent = subs.get(job.key, 0)
        assert job.attempts <= sent <= job.attempts + job.possible_duplicates, job.key


def _artifact(bench: Bench) -> Any:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read() -> Any:
        async with get_client() as client:
            return await client.read_latest_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["tick-bgtest"]))
            )

    return asyncio.run(read())


def test_tick_submits_then_next_tick_reclaims_and_delivers(bench: Bench, monkeypatch) -> None:
    """A tick submits today's items; the next reclaims, validates, delivers once and consumes."""
    bench.set_items(["alpha", "beta", "gamma"], monkeypatch)
    first = bench.tick()
    assert first.submit.reserved == 3 and first.submitted == 3
    assert first.collect.polled == 0
    ledger = bench.ledger()
    assert {j.status for j in ledger.jobs(pipeline="bgtest")} == {"submitted"}
    assert all(j.handle and j.handle.startswith("v1_") for j in ledger.jobs(pipeline="bgtest"))

    second = bench.tick()
    assert second.collect.completed == 3
    assert second.delivered == 3 and second.submitted == 0
    assert second.tokens.total_tokens > 0
    assert {j.status for j in ledger.jobs(pipeline="bgtest")} == {"consumed"}
    assert ledger.counts(pipeline="bgtest").total_tokens == second.tokens.total_tokens
    assert bench.completions() == {key_of(i): 1 for i in ("alpha", "beta", "gamma")}
    assert len(list((bench.tmp / "out").glob("*.json"))) == 3
    _assert_billing_matches(bench)
    stats = bench.emulator.stats()
    assert stats["requests"]["GET /v1/interactions/{id}"] == 3
    # The interaction carries the key in its labels (label-safe form) and the exact key header.
    assert set(stats["submissions"]) == {key_of(i) for i in ("alpha", "beta", "gamma")}

    third = bench.tick()
    assert third.collect.polled == 0 and third.delivered == 0
    assert third.submitted == 0 and third.enrolled == 0
    artifacts = _artifact(bench)
    assert artifacts and artifacts[0].key == "tick-bgtest"


def test_classifier_verdicts_are_applied(bench: Bench, monkeypatch) -> None:
    """Failed interactions and failed creates get the classifier's verdict: retry under the
    cap, park permanent failures at once, cancel what runs too long."""
    scripts = {
        "failed-then-ok": ["failed", "ok"],  # interaction failed (INTERNAL): retryable, then ok
        # create answered 503 (ambiguous: it may exist): sent again flagged, then ok
        "create503-then-ok": ["503", "ok"],
        "create400": ["400"],  # create answered 400: parked permanent:400 after one attempt
        "always-failed": ["failed"],  # retryable every time: exhausted at the attempt cap (3)
        "incomplete": ["incomplete"],  # cut at MAX_TOKENS: parked as truncated at once
        "hang-then-ok": ["hang", "ok"],  # never finishes: cancelled, retried, then ok
        "safety": ["safety"],  # blocked answer: parked as safety at once
    }
    bench.emulator.set_scenario(
        {
            "name": "verdicts",
            "retry_delay_s": 0,
            "scripts": [{"match": key_of(i), "steps": s} for i, s in scripts.items()],
        }
    )
    bench.set_items(list(scripts), monkeypatch)
    ledger = bench.ledger()

    t1 = bench.tick(running_limit_s=0)
    assert t1.submit.refused == {"parked permanent:400": 1}
    assert t1.submit.ambiguous == 1
    assert _status(ledger, "create400") == ("parked", "permanent:400", 1)
    assert _status(ledger, "create503-then-ok") == ("retryable", "ambiguous:503", 1)

    t2 = bench.tick(running_limit_s=0)
    rec = t2.collect
    assert rec.retryable == {
        "retryable:500": 2,
        "retryable:timeout": 1,
    }
    assert rec.parked == {"safety": 1, "truncated": 1}
    assert rec.cancelled == 1
    assert bench.emulator.stats()["requests"]["POST /v1/interactions/{id}/cancel"] == 1

    for _ in range(4):
        bench.tick(running_limit_s=0)
    assert _status(ledger, "failed-then-ok") == ("consumed", None, 2)
    assert _status(ledger, "create503-then-ok") == ("consumed", None, 2)
    assert ledger.get(key_of("create503-then-ok")).possible_duplicates == 1
    assert _status(ledger, "hang-then-ok") == ("consumed", None, 2)
    assert _status(ledger, "create400") == ("parked", "permanent:400", 1)
    assert _status(ledger, "always-failed") == ("parked", "exhausted:500", 3)
    assert _status(ledger, "incomplete") == ("parked", "truncated", 1)
    assert _status(ledger, "safety") == ("parked", "safety", 1)
    assert bench.completions() == {
        key_of(i): 1 for i in ("failed-then-ok", "create503-then-ok", "hang-then-ok")
    }
    _assert_billing_matches(bench)


def test_get_404_sends_the_job_again_and_side_effect_error_stays_done(
    bench: Bench, monkeypatch
) -> None:
    """A get answering 404 (the interaction was deleted) is not the job's fault: it comes back
    as retryable:interaction_lost with its attempt kept, flagged as a possible duplicate, and
    is sent again; an exception inside on_result leaves the row done until a later tick."""
    bench.set_items(["gone", "refused"], monkeypatch)
    bench.tick()
    ledger = bench.ledger()
    client = bench.emulator.client()
    client.interactions.delete(ledger.get(key_of("gone")).handle)
    monkeypatch.setenv("BG_TEST_FAIL_KEYS", key_of("refused"))

    report = bench.tick()
    assert report.collect.retryable == {"retryable:interaction_lost": 1}
    assert report.collect.parked == {}
    assert report.collect.lost == 1
    assert report.delivery_failed == 1
    gone = ledger.get(key_of("gone"))
    # Sent again in the same tick's submit step: a second attempt, the first one kept.
    assert (gone.status, gone.attempts, gone.possible_duplicates) == ("submitted", 2, 1)
    assert gone.error_class == "retryable:interaction_lost"
    assert ledger.get(key_of("refused")).status == "done"
    assert bench.completions() == {}

    monkeypatch.delenv("BG_TEST_FAIL_KEYS")
    again = bench.tick()
    assert again.delivered == 2
    assert _status(ledger, "gone") == ("consumed", None, 2)
    assert ledger.get(key_of("refused")).status == "consumed"
    assert bench.completions() == {key_of("refused"): 1, key_of("gone"): 1}
    # Every request reached the API and is an attempt; the flag says the lost one may have
    # been billed for an answer nobody kept.
    assert bench.submissions()[key_of("gone")] == 2


def test_lost_and_incomplete_interactions_and_model_version(bench: Bench, monkeypatch) -> None:
    """A scripted lost interaction (404 on get) is sent again and delivered; an incomplete one
    (URI-coded errors) is parked as truncated; delivered rows carry the model that answered,
    the interaction id as response id and the thinking tokens."""
    bench.emulator.set_scenario(
        {
            "name": "lost",
            "retry_delay_s": 0,
            "scripts": [
                {"match": key_of("lost"), "steps": ["lost", "ok"]},
                {"match": key_of("cut"), "steps": ["incomplete"]},
            ],
        }
    )
    bench.set_items(["lost", "cut", "fine"], monkeypatch)
    ledger = bench.ledger()
    bench.tick()
    second = bench.tick()
    assert second.collect.parked == {"truncated": 1}
    assert second.collect.retryable == {"retryable:interaction_lost": 1}
    bench.tick()
    lost, fine = ledger.get(key_of("lost")), ledger.get(key_of("fine"))
    assert (lost.status, lost.attempts, lost.possible_duplicates) == ("consumed", 2, 1)
    assert _status(ledger, "cut")[:2] == ("parked", "truncated")
    assert fine.status == "consumed"
    assert fine.model_version == "gemini-2.5-flash"
    assert fine.response_id == fine.handle
    assert fine.thoughts_tokens == 8
    assert fine.total_tokens == fine.prompt_tokens + fine.candidates_tokens + 8


def test_channel_refuses_a_pipeline_of_another_channel(bench: Bench) -> None:
    """The background channel built for a batch pipeline fails with a clear error, touching
    nothing."""
    import pytest

    from flows.channels.background import BackgroundChannel
    from flows.registry import get_pipeline
    from flows.settings import load_settings
    from flows.testing import RunContext

    settings = load_settings()
    ctx = RunContext(
        spec="reviews",
        pipeline=get_pipeline("reviews", settings),
        ledger=bench.ledger,
        settings=settings,
        day=DAY,
    )
    with pytest.raises(ValueError, match="not background"):
        BackgroundChannel(ctx)
    assert bench.emulator.stats()["requests"] == {}


def test_articles_example_end_to_end_through_the_cli(bench: Bench, monkeypatch) -> None:
    """`gemini-ledger tick articles` submits every topic; the next tick writes one article
    file per key, and `status` shows them consumed."""
    import json
    import subprocess
    import sys

    from flows.examples.articles import Article, load_topics, safe_filename, topic_of

    from .conftest import ROOT

    out = bench.tmp / "articles"
    env = bench.sub_env(ARTICLES_DIR=str(out))
    cmd = [sys.executable, "-m", "flows.cli"]
    tick = [*cmd, "tick", "articles", "--day", DAY.isoformat(), "--json"]
    first = subprocess.run(tick, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr[-3000:]
    topics = list(load_topics(DAY))
    assert json.loads(first.stdout)["submitted"] == len(topics)

    monkeypatch.setenv("ARTICLES_DIR", str(out))
    from flows.tick import tick

    report = tick(pipeline="articles", day=DAY)
    assert report.delivered == len(topics)
    files = sorted(out.glob("*.json"))
    assert len(files) == len(topics)
    assert all(not f.name.startswith(".tmp") for f in files)
    key = f"articles:{DAY.isoformat()}:why-the-sky-is-blue:v1"
    Article.model_validate_json((out / safe_filename(topic_of(key))).read_text())

    status = subprocess.run(
        [*cmd, "status", "--pipeline", "articles", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr[-3000:]
    assert json.loads(status.stdout)["by_status"] == {"consumed": len(topics)}
