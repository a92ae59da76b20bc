"""Small batch pipelines for the tests (loaded by spec, e.g. ``tests.batch.pipelines:scripted``)."""

from __future__ import annotations

from datetime import date
from itertools import islice
from typing import Any

from flows.examples.reviews import ReviewLabel, build_prompt, load_reviews, write_label
from flows.pipeline import Pipeline, Prompt
from ledger import Channel

__all__ = [
    "SCRIPTED_IDS",
    "chunked_reviews",
    "daily_reviews",
    "flaky_sink",
    "night_reviews",
    "oversized_reviews",
    "scripted",
    "sink_failures",
    "small_reviews",
    "split_reviews",
]


def _first(n: int) -> Any:
    def load(day: date) -> list[dict[str, Any]]:
        return list(islice(load_reviews(day), n))

    return load


def _reviews(name: str, n: int, **settings: Any) -> Pipeline[dict[str, Any]]:
    return Pipeline(
        name=name,
        model="gemini-2.5-flash",
        channel=Channel.BATCH,
        output=ReviewLabel,
        load_items=_first(n),
        key_of=lambda item, day: f"{name}:{day.isoformat()}:{item['id']}:v1",
        build_prompt=build_prompt,
        on_result=write_label,
        **settings,
    )


# A few hundred sample reviews (emoji-only ones included) for the night test.
night_reviews = _reviews("night", 300)
# A small pile for the crash and idempotency tests.
small_reviews = _reviews("small", 40)
# A backlog larger than one batch job may carry.
chunked_reviews = _reviews("chunked", 40, batch_size_limit=15)
# Both of the API's limits set low: 15 requests per job, and input files of 8,000 bytes
# (each request line of these reviews is 1,067 to 1,179 bytes: 6 or 7 lines per file).
split_reviews = _reviews("split", 40, batch_size_limit=15, batch_bytes_limit=8_000)
# A file limit only two of the requests fit in (with these keys, lines of 1,071 and 1,073
# bytes; the next is 1,081).
oversized_reviews = _reviews("oversized", 40, batch_size_limit=15, batch_bytes_limit=1_075)

# Eight reviews a day, under keys of that day: a night after night of small batch jobs.
daily_reviews = _reviews("daily", 8)

SCRIPTED_IDS = ["k-ok", "k-flaky", "k-bad", "k-unsafe", "k-lost", "k-always503"]


def _scripted_items(day: date) -> list[dict[str, Any]]:
    return [
        {"id": i, "text": f"Review {i}: the app crashes when I upload a photo."}
        for i in SCRIPTED_IDS
    ]


scripted: Pipeline[dict[str, Any]] = Pipeline(
    name="scripted",
    model="gemini-2.5-flash",
    channel=Channel.BATCH,
    output=ReviewLabel,
    load_items=_scripted_items,
    key_of=lambda item, day: f"scripted:{day.isoformat()}:{item['id']}:v1",
    build_prompt=lambda item: Prompt(text=item["text"], system="Label the review.", temperature=0),
    on_result=write_label,
)

# Keys whose side effect raises (once per listed occurrence), to prove a failing on_result
# leaves its row done for the next tick.
sink_failures: dict[str, int] = {}


def _flaky_sink(key: str, result: Any) -> None:
    left = sink_failures.get(key, 0)
    if left:
        sink_failures[key] = left - 1
        raise RuntimeError(f"results store unavailable for {key}")
    write_label(key, result)


flaky_sink: Pipeline[dict[str, Any]] = Pipeline(
    name="flaky-sink",
    model="gemini-2.5-flash",
    channel=Channel.BATCH,
    output=ReviewLabel,
    load_items=_first(5),
    key_of=lambda item, day: f"flaky-sink:{day.isoformat()}:{item['id']}:v1",
    build_prompt=build_prompt,
    on_result=_flaky_sink,
)
