"""The examples' day files: one line per item id, upserted under a lock, shared by the
receipts and review-embeddings examples."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from flows.examples import receipts, review_embeddings
from flows.examples.keyed_jsonl import read_rows, upsert_row
from ledger import Vector


def test_an_upsert_replaces_the_line_of_the_same_id(tmp_path: Path) -> None:
    """A second row with the same id replaces the first; a repeated one changes no byte."""
    path = tmp_path / "day" / "2026-12-06.jsonl"
    upsert_row(path, "id", {"id": "b", "v": 1})
    upsert_row(path, "id", {"id": "a", "v": 1})
    upsert_row(path, "id", {"id": "b", "v": 2})
    assert read_rows(path, "id") == {"a": {"id": "a", "v": 1}, "b": {"id": "b", "v": 2}}
    before = path.read_bytes()
    upsert_row(path, "id", {"id": "b", "v": 2})
    assert path.read_bytes() == before
    assert before.splitlines()[0].startswith(b'{"id":"a"')  # sorted by id


def test_concurrent_upserts_lose_no_line(tmp_path: Path) -> None:
    """Writers at the same time (each its own lock file handle) keep every id's line."""
    path = tmp_path / "day.jsonl"
    start = threading.Barrier(6)

    def write(worker: int) -> None:
        start.wait()
        for n in range(15):
            upsert_row(path, "id", {"id": f"{worker}-{n}"})

    threads = [threading.Thread(target=write, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(read_rows(path, "id")) == 6 * 15


def test_a_missing_file_reads_as_no_rows(tmp_path: Path) -> None:
    """Before the first delivery the day has no lines (and nothing is created)."""
    assert read_rows(tmp_path / "none.jsonl", "id") == {}
    assert not (tmp_path / "none.jsonl").exists()


@pytest.mark.parametrize("kept", [True, False], ids=["kept", "from-key"])
def test_both_examples_write_their_day_file_through_it(
    tmp_path: Path, monkeypatch, kept: bool
) -> None:
    """The receipts' fields and the review vectors land in their day's file by item id,
    named from the row's kept values or, without them, from its key."""
    monkeypatch.setenv(receipts.RECEIPTS_DIR_ENV, str(tmp_path / "receipts"))
    monkeypatch.setenv(review_embeddings.VECTORS_DIR_ENV, str(tmp_path / "vectors"))
    fields = {
        "merchant": "Cafe",
        "date": "2026-12-06",
        "total": 4.5,
        "currency": "EUR",
        "line_items": [{"description": "tea", "quantity": 1, "amount": 4.5}],
    }
    key = "receipts:2026-12-06:r1.png:v1"
    receipts.write_fields(
        key, fields, {"document": "r1.png", "day": "2026-12-06"} if kept else None
    )
    assert receipts.read_fields("2026-12-06")["r1.png"]["key"] == key
    key = "review-embeddings:2026-12-06:17:v1"
    vector = Vector(values=[0.5, 0.25])
    review_embeddings.write_vector(
        key, vector, {"review_id": "17", "day": "2026-12-06"} if kept else None
    )
    assert review_embeddings.read_vectors("2026-12-06")["17"]["values"] == [0.5, 0.25]
