"""Embedding calls on the direct channel through a real tick: rows grouped per call, each
its own ledger row; one refused input parks alone."""

from __future__ import annotations

from datetime import date
from typing import Any

from flows import EmbeddingSettings, Pipeline, Prompt
from ledger import Channel, Status, Vector

DAY = date(2026, 12, 6)
DELIVERED: dict[str, Vector] = {}

pipeline: Pipeline[str] = Pipeline(
    name="emb-direct",
    model="gemini-embedding-001",
    channel=Channel.DIRECT,
    embedding=EmbeddingSettings(
        task_type="RETRIEVAL_DOCUMENT", output_dimensionality=8, group_size=4
    ),
    load_items=lambda day: [f"text {i}" for i in range(10)],
    key_of=lambda item, day: f"emb-direct:{item.split()[1]}",
    build_prompt=lambda item: Prompt(text=item),
    on_result=lambda key, result: DELIVERED.__setitem__(key, result),
)


def _tick(emulator: Any, sqlite_url: str, monkeypatch: Any) -> Any:
    from flows.testing import open_ledger
    from flows.tick import tick

    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("GEMINI_LEDGER_DIRECT_BACKOFF_S", "0.01")
    DELIVERED.clear()
    tick(pipeline="tests.embeddings.test_direct:pipeline", day=DAY)
    return open_ledger(sqlite_url)


def test_rows_go_in_groups_and_each_is_its_own_row(
    emulator, prefect_api, sqlite_url, monkeypatch
) -> None:
    """Ten rows in calls of at most four: three calls, each row delivered its own 8-value
    vector (the same text, the same vector), attempts one each, as the emulator counted."""
    ledger = _tick(emulator, sqlite_url, monkeypatch)
    jobs = ledger.jobs(pipeline="emb-direct")
    assert {j.status for j in jobs} == {Status.CONSUMED.value}
    stats = emulator.stats()
    calls = [n for route, n in stats["requests"].items() if "batchEmbedContents" in route]
    assert calls == [3]
    assert {j.key: j.attempts for j in jobs} == {
        k: n for k, n in stats["submissions"].items() if k.startswith("emb-direct:")
    }
    assert set(DELIVERED) == {j.key for j in jobs}
    assert all(len(v.values) == 8 for v in DELIVERED.values())
    assert len({tuple(v.values) for v in DELIVERED.values()}) == 10
    # Each call's tokens are shared out among its rows: the ledger holds what was billed.
    assert ledger.counts(pipeline="emb-direct").total_tokens == stats["billed"]["total_tokens"]
    assert stats["billed"]["total_tokens"] > 0 and stats["billed"]["embed_calls"] == 3


def test_one_refused_input_parks_alone(emulator, prefect_api, sqlite_url, monkeypatch) -> None:
    """An input the API always refuses (400) fails its whole call; its rows are sent again
    one by one: it alone is parked `permanent:400`, the others of its group are delivered;
    once the API takes it, replay calls embed_content for it and delivers its vector."""
    emulator.set_scenario(
        {"name": "one-bad", "scripts": [{"match": "emb-direct:5", "steps": ["400"]}]}
    )
    ledger = _tick(emulator, sqlite_url, monkeypatch)
    bad = ledger.get("emb-direct:5")
    assert (bad.status, bad.error_class) == (Status.PARKED.value, "permanent:400")
    others = [j for j in ledger.jobs(pipeline="emb-direct") if j.key != "emb-direct:5"]
    assert {j.status for j in others} == {Status.CONSUMED.value}
    assert set(DELIVERED) == {j.key for j in others}
    stats = emulator.stats()["submissions"]
    assert {j.key: j.attempts for j in [*others, bad]} == {
        k: n for k, n in stats.items() if k.startswith("emb-direct:")
    }

    from flows.ops.replay import replay

    emulator.set_scenario("clean")
    report = replay(execute=True, pipeline="emb-direct", rate_per_second=100)
    assert report["recovered_direct"] == 1
    assert ledger.get("emb-direct:5").status == Status.CONSUMED.value
    assert len(DELIVERED["emb-direct:5"].values) == 8
