"""The reconcile core on its own: same outcome whichever writer applies the chunks."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from flows.examples.reviews import ReviewLabel
from flows.settings import Settings
from flows.testing import iter_lines, reconcile_lines, writer_for
from ledger import Ledger, NewJob, Policy

N = 60


def _answer(i: int) -> bytes:
    text = orjson.dumps({"category": "bug", "sentiment": "negative", "confidence": 0.5}).decode()
    response = {
        "candidates": [{"content": {"parts": [{"text": text}]}, "finishReason": "STOP"}],
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": 2,
            "thoughtsTokenCount": 3,
            "cachedContentTokenCount": 4,
            "totalTokenCount": 15,
        },
        "modelVersion": "gemini-2.5-flash-001",
        "responseId": f"resp-{i}",
    }
    return orjson.dumps({"key": f"k:{i:03d}", "response": response}) + b"\n"


def _output(path: Path) -> None:
    lines = []
    for i in range(N):
        if i % 10 == 3:
            lines.append(
                orjson.dumps({"key": f"k:{i:03d}", "error": {"code": 503, "status": "UNAVAILABLE"}})
                + b"\n"
            )
        elif i % 10 == 7:
            continue  # missing from the output
        else:
            lines.append(_answer(i))
    lines += [_answer(0), _answer(1), b'{"key": "k:0\n', _answer(999)]  # 2 repeats, broken, unknown
    path.write_bytes(b"".join(lines))


@pytest.mark.parametrize("writer", ["thread", "inline", "process"])
def test_every_writer_applies_the_same_outcome(
    tmp_path: Path, sqlite_url: str, writer: str
) -> None:
    """thread, inline and process writers apply the same rows and count the same lines, on
    a first pass and on a second pass over the same file; thinking and cached tokens and the
    model version reach the rows."""
    ledger = Ledger(sqlite_url)
    ledger.enroll(
        (NewJob(f"k:{i:03d}", {"text": "t"}) for i in range(N)),
        pipeline="p",
        channel="batch",
        model="m",
    )
    ledger.reserve(pipeline="p", limit=N, reservation="r", batch_model="m")
    ledger.bind_batch("r", name="batches/x")
    out = tmp_path / "out.jsonl"
    _output(out)
    kwargs = dict(
        handle="batches/x",
        reservation="r",
        schema=ReviewLabel,
        policy=Policy(),
        chunk_size=7,
        scratch_dir=str(tmp_path),
        writer=writer,
    )
    first = reconcile_lines(ledger, iter_lines(out), **kwargs)  # type: ignore[arg-type]
    assert (first.succeeded, first.failed) == (48, 6)
    assert (first.duplicate_keys, first.unknown_keys, first.unparseable) == (2, 1, 1)
    assert first.total_tokens == 15 * 48 + 15 * 2 + 15  # every answered line's usage
    assert ledger.counts(pipeline="p").by_status == {"done": 48, "retryable": 6, "submitted": 6}
    usage = ledger.counts(pipeline="p").usage
    assert (usage.thoughts_tokens, usage.cached_tokens) == (3 * 48, 4 * 48)
    done = ledger.get("k:000")
    assert (done.model_version, done.response_id) == ("gemini-2.5-flash-001", "resp-0")
    second = reconcile_lines(ledger, iter_lines(out), **kwargs)  # type: ignore[arg-type]
    assert (second.succeeded, second.failed, second.already_settled) == (0, 0, 54)
    assert (second.duplicate_keys, second.unknown_keys) == (2, 1)
    assert ledger.counts(pipeline="p").total_tokens == 15 * 48
    ledger.dispose()


def test_writer_choice_from_the_setting(sqlite_url: str) -> None:
    """By default (auto) a writer process is used only for large files on SQLite;
    GEMINI_LEDGER_RECONCILE_WRITER overrides it; anything else is refused."""
    ledger = Ledger(sqlite_url)
    auto = Settings.given().reconcile_writer
    assert writer_for(ledger, 1 << 20, auto) == "thread"
    assert writer_for(ledger, 1 << 30, auto) == "process"
    thread = Settings.given(GEMINI_LEDGER_RECONCILE_WRITER="thread").reconcile_writer
    assert writer_for(ledger, 1 << 30, thread) == "thread"
    with pytest.raises(ValueError, match="GEMINI_LEDGER_RECONCILE_WRITER"):
        Settings.given(GEMINI_LEDGER_RECONCILE_WRITER="fork-bomb")
    ledger.dispose()
