"""Batch output-line parsing: no line raises, well-formed lines round-trip to the right
outcome, and each odd shape a batch output file can hold gets its own explicit case."""

from __future__ import annotations

import random
import sys
import types
from typing import Any, Literal

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from ledger import (
    Failure,
    LineFailure,
    LineSuccess,
    Usage,
    Verdict,
    classify,
    extract_text,
    parse_output_line,
    validate_answer,
)
from ledger.testing import ErrorStatus, GenerateContentResponseLine, OutputLine, parse_output_record

CATEGORIES = ("product", "shipping", "service", "other")
SENTIMENTS = ("positive", "neutral", "negative")


class Review(BaseModel):
    category: Literal["product", "shipping", "service", "other"]
    sentiment: Literal["positive", "neutral", "negative"]
    confidence: float = Field(ge=0, le=1)


class Article(BaseModel):
    title: str
    tags: list[str]


# --- building lines as the Batch API writes them -------------------------------------------


def response(
    text: str | None,
    *,
    finish: str | None = "STOP",
    usage: tuple[int, int, int] | None = (112, 21, 133),
    **extra: Any,
) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"parts": [] if text is None else [{"text": text}], "role": "model"},
        "index": 0,
    }
    if finish is not None:
        candidate["finishReason"] = finish
    out: dict[str, Any] = {"candidates": [candidate], **extra}
    if usage is not None:
        out["usageMetadata"] = {
            "promptTokenCount": usage[0],
            "candidatesTokenCount": usage[1],
            "totalTokenCount": usage[2],
        }
    return out


def line(key: Any, **fields: Any) -> bytes:
    return orjson.dumps({"key": key, **fields})


REVIEW = Review(category="shipping", sentiment="negative", confidence=0.87)
GOOD = line("reviews:2026-11-22:review-1:v1", response=response(REVIEW.model_dump_json()))

# --- strategies ----------------------------------------------------------------------------

keys = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60)
reviews = st.builds(
    Review,
    category=st.sampled_from(CATEGORIES),
    sentiment=st.sampled_from(SENTIMENTS),
    confidence=st.floats(0, 1, allow_nan=False),
)
articles = st.builds(
    Article,
    title=st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
    tags=st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=10), max_size=4),
)
token_counts = st.tuples(*(st.integers(0, 2**31 - 1),) * 3)


@st.composite
def success_lines(draw: st.DrawFn) -> tuple[bytes, str, BaseModel, type[BaseModel], Usage]:
    """A well-formed success line in one of the shapes the API writes, and what it holds."""
    schema: type[BaseModel] = draw(st.sampled_from([Review, Article]))
    result = draw(reviews if schema is Review else articles)
    key = draw(keys)
    counts = draw(st.none() | token_counts)
    text = result.model_dump_json(indent=draw(st.sampled_from([None, 2])))
    resp = response(text, usage=counts, finish=draw(st.sampled_from(["STOP", None])))
    parts = resp["candidates"][0]["content"]["parts"]
    if draw(st.booleans()):  # the answer split over several text parts
        cut = draw(st.integers(0, len(text)))
        parts[:] = [{"text": text[:cut]}, {"text": text[cut:]}]
    if draw(st.booleans()):  # a thought part before the answer
        parts.insert(0, {"text": "Let me think about this review.", "thought": True})
    if draw(st.booleans()):  # fields the models do not name are allowed anywhere
        resp["modelVersion"] = "gemini-2.5-flash"
        resp["responseId"] = draw(st.text(max_size=10))
        resp["candidates"][0]["avgLogprobs"] = -0.05
        resp["candidates"][0]["safetyRatings"] = [
            {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}
        ]
    record: dict[str, Any] = {"key": key, "response": resp}
    if draw(st.booleans()):
        record["someFutureField"] = {"x": 1}
    items = list(record.items())
    if draw(st.booleans()):
        items.reverse()  # the key need not come first
    usage = Usage(*counts) if counts is not None else Usage(0, 0, 0)
    return orjson.dumps(dict(items)), key, result, schema, usage


HTTP_CODES = [400, 401, 403, 404, 408, 409, 422, 429, 499, 500, 502, 503, 504]
STATUSES = [
    None,
    "RESOURCE_EXHAUSTED",
    "UNAVAILABLE",
    "INTERNAL",
    "DEADLINE_EXCEEDED",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "PERMISSION_DENIED",
    "ABORTED",
    "CANCELLED",
]


@st.composite
def error_lines(draw: st.DrawFn) -> tuple[bytes, str, dict[str, Any]]:
    key = draw(keys)
    error: dict[str, Any] = {
        "code": draw(st.sampled_from(HTTP_CODES) | st.integers(0, 999)),
        "message": draw(st.text(max_size=80)),
    }
    status = draw(st.sampled_from(STATUSES))
    if status is not None:
        error["status"] = status
    if draw(st.booleans()):
        error["details"] = [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}
        ]
    field = draw(st.sampled_from(["error", "status"]))
    return orjson.dumps({"key": key, field: error}), key, error


# --- properties ----------------------------------------------------------------------------


def _is_outcome(out: object) -> bool:
    return isinstance(out, LineSuccess | LineFailure)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_no_bytes_raise(data: bytes) -> None:
    """No byte string fed to parse_output_line raises; the outcome is success or failure."""
    assert _is_outcome(parse_output_line(data, Review))


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_no_text_raises(data: str) -> None:
    """No text (surrogates included) fed to parse_output_line raises."""
    assert _is_outcome(parse_output_line(data, Review))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(
        st.sampled_from(
            ["key", "response", "error", "status", "candidates", "content", "parts", "text",
             "thought", "finishReason", "promptFeedback", "blockReason", "usageMetadata",
             "promptTokenCount", "totalTokenCount", "code", "message", "details", "metadata"]
        ),
        children,
        max_size=4,
    ),
    max_leaves=15,
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_no_json_shape_raises(value: Any) -> None:
    """Valid JSON of any shape, with the line format's field names, never raises."""
    data = orjson.dumps(value)
    assert _is_outcome(parse_output_line(data, Review))
    if isinstance(value, dict):
        assert _is_outcome(parse_output_record(value, Review))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(success_lines(), st.data())
def test_mutated_lines_never_raise(case: tuple[Any, ...], data: st.DataObject) -> None:
    """Real lines truncated anywhere or with flipped bytes never raise; a cut keeps the key."""
    raw, key, *_ = case
    cut = data.draw(st.integers(0, len(raw) - 1))
    out = parse_output_line(raw[:cut], Review)
    assert isinstance(out, LineFailure)
    assert out.failure.code == "malformed_output"
    assert out.failure.verdict is Verdict.RETRYABLE
    assert out.key in (None, key)
    key_end = len(b'{"key":' + orjson.dumps(key))
    if raw.startswith(b'{"key":') and cut >= key_end:
        assert out.key == key  # the key was whole in what arrived

    flipped = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        flipped[pos] = data.draw(st.integers(0, 255))
    assert _is_outcome(parse_output_line(bytes(flipped), Review))


@settings(max_examples=150, deadline=None)
@given(success_lines())
def test_success_lines_round_trip(case: tuple[Any, ...]) -> None:
    """A well-formed success line yields its key, an equal validated result and its usage."""
    raw, key, result, schema, usage = case
    for data in (raw, raw.decode()):
        out = parse_output_line(data, schema)
        assert isinstance(out, LineSuccess), out
        assert out.key == key
        assert out.result == result
        assert out.usage == usage


@settings(max_examples=150, deadline=None)
@given(error_lines())
def test_error_lines_round_trip(case: tuple[bytes, str, dict[str, Any]]) -> None:
    """An error line yields its key and the classifier's verdict for its code and status."""
    raw, key, error = case
    out = parse_output_line(raw, Review)
    assert isinstance(out, LineFailure)
    assert out.key == key
    expected = classify(error)
    assert out.failure == expected
    code, status = error["code"], error.get("status")
    if code in (408, 429, 500, 502, 503, 504):
        assert out.failure.verdict is Verdict.RETRYABLE
        assert out.failure.code == str(code)
    elif code in (400, 401, 403, 404, 422):
        assert out.failure.verdict is Verdict.PERMANENT
        assert out.failure.error_class == f"permanent:{code}"
    elif code >= 100 and status in (None, "ABORTED", "CANCELLED"):
        assert out.failure.verdict is Verdict.UNKNOWN
    if "details" in error:
        assert out.failure.retry_delay == 3.0


@settings(max_examples=100, deadline=None)
@given(keys, st.text(max_size=50))
def test_non_conforming_answers_are_schema_failures(key: str, text: str) -> None:
    """An answer that does not validate against the schema is a permanent schema failure; one
    without text is ``empty`` (unknown: a retry may fix it)."""
    out = parse_output_line(line(key, response=response(text)), Review)
    assert isinstance(out, LineFailure)
    assert out.key == key
    expected = (Verdict.UNKNOWN, "empty") if not text.strip() else (Verdict.PERMANENT, "schema")
    assert (out.failure.verdict, out.failure.code) == expected
    assert out.usage == Usage(112, 21, 133)


# --- explicit cases ------------------------------------------------------------------------


def test_success_line() -> None:
    """The common success line gives the validated result and the token usage."""
    out = parse_output_line(GOOD, Review)
    assert out == LineSuccess("reviews:2026-11-22:review-1:v1", REVIEW, Usage(112, 21, 133))


def test_trailing_newline_and_str_input() -> None:
    """A line with its newline, as bytes or str, parses the same."""
    assert parse_output_line(GOOD + b"\n", Review) == parse_output_line(GOOD.decode(), Review)


def test_safety_line() -> None:
    """A candidate stopped for SAFETY is a permanent safety failure that keeps its usage."""
    resp = response(None, finish="SAFETY")
    resp["candidates"][0]["safetyRatings"] = [
        {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": True}
    ]
    out = parse_output_line(line("k1", response=resp), Review)
    assert isinstance(out, LineFailure)
    assert (out.key, out.failure.verdict, out.failure.error_class) == (
        "k1",
        Verdict.PERMANENT,
        "safety",
    )
    assert "harassment" in out.failure.message
    assert out.usage == Usage(112, 21, 133)


def test_blocked_prompt_line() -> None:
    """A prompt blocked by promptFeedback is a permanent safety failure (code blocked_prompt)."""
    resp = {
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
        "usageMetadata": {"promptTokenCount": 40, "totalTokenCount": 40},
    }
    out = parse_output_line(line("k2", response=resp), Review)
    assert isinstance(out, LineFailure)
    assert out.failure.code == "blocked_prompt"
    assert out.failure.error_class == "safety"
    assert out.usage == Usage(40, 0, 40)


def test_recitation_line() -> None:
    """A candidate stopped for RECITATION is a permanent recitation failure."""
    out = parse_output_line(
        line("k", response=response("It was the best", finish="RECITATION")), Review
    )
    assert isinstance(out, LineFailure)
    assert out.failure.error_class == "recitation"


def test_empty_text_line() -> None:
    """An empty answer (an emoji-only review) is ``empty``: unknown, retried under the
    unknown cap, then parked as its own class."""
    out = parse_output_line(line("k3", response=response("")), Review)
    assert isinstance(out, LineFailure)
    assert (out.failure.verdict, out.failure.error_class) == (Verdict.UNKNOWN, "empty")
    assert out.failure.parked_class() == "empty"
    assert out.failure.message.startswith("empty answer")


@pytest.mark.parametrize(
    ("finish", "error_class"),
    [
        ("STOP", "empty"),
        ("OTHER", "empty:other"),
        ("MALFORMED_RESPONSE", "empty:malformed_response"),
    ],
)
def test_a_line_whose_content_has_no_parts(finish: str, error_class: str) -> None:
    """The real empty answer (python-genai #1289): ``"content": {"role": "model"}`` and no
    candidatesTokenCount; classed by its finish, the prompt's tokens kept."""
    resp = {
        "candidates": [{"content": {"role": "model"}, "finishReason": finish, "index": 0}],
        "usageMetadata": {"promptTokenCount": 3130, "totalTokenCount": 3130},
        "modelVersion": "gemini-2.5-flash-lite",
    }
    out = parse_output_line(line("k", response=resp), Review)
    assert isinstance(out, LineFailure)
    assert (out.failure.verdict, out.failure.error_class) == (Verdict.UNKNOWN, error_class)
    assert out.usage == Usage(3130, 0, 3130)


def test_no_candidates_line() -> None:
    """A response without candidates (and no block reason) is an empty answer."""
    out = parse_output_line(line("k", response={"usageMetadata": {"promptTokenCount": 5}}), Review)
    assert isinstance(out, LineFailure)
    assert out.failure.error_class == "empty"
    assert out.usage == Usage(5, 0, 5)


def test_non_conforming_json_line() -> None:
    """A JSON answer outside the schema is a schema failure naming the field, not the payload."""
    answer = '{"category": "weather", "sentiment": "negative", "confidence": 0.5}'
    out = parse_output_line(line("k4", response=response(answer)), Review)
    assert isinstance(out, LineFailure)
    assert out.failure.error_class == "schema"
    assert "category" in out.failure.message
    assert "weather" not in out.failure.message


def test_confidence_out_of_range() -> None:
    """A value outside the schema's bounds is a schema failure."""
    answer = '{"category": "other", "sentiment": "neutral", "confidence": 1.5}'
    out = parse_output_line(line("k", response=response(answer)), Review)
    assert isinstance(out, LineFailure) and out.failure.code == "schema"


def test_fenced_json_answer() -> None:
    """An answer wrapped in a Markdown code fence is still validated."""
    fenced = "```json\n" + REVIEW.model_dump_json() + "\n```"
    out = parse_output_line(line("k", response=response(fenced)), Review)
    assert isinstance(out, LineSuccess) and out.result == REVIEW


def test_line_without_key() -> None:
    """A line without a key is a malformed_output failure with key None."""
    out = parse_output_line(orjson.dumps({"response": response(REVIEW.model_dump_json())}), Review)
    assert isinstance(out, LineFailure)
    assert out.key is None
    assert out.failure.code == "malformed_output"


def test_error_line_with_retry_info() -> None:
    """An error line with a RetryInfo detail is retryable with the server's delay."""
    error = {
        "code": 429,
        "message": "Resource has been exhausted (e.g. check quota).",
        "status": "RESOURCE_EXHAUSTED",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}],
    }
    out = parse_output_line(line("k5", error=error), Review)
    assert isinstance(out, LineFailure)
    assert out.key == "k5"
    assert (out.failure.verdict, out.failure.code, out.failure.retry_delay) == (
        Verdict.RETRYABLE,
        "429",
        2.0,
    )
    assert out.failure.parked_class() == "exhausted:429"


def test_status_object_line() -> None:
    """A failed row written as a "status" object is classified like an error object."""
    out = parse_output_line(line("k", status={"code": 3, "message": "Invalid request"}), Review)
    assert isinstance(out, LineFailure)
    assert out.failure.error_class == "permanent:400"


def test_status_string_line() -> None:
    """A failed row whose status is a bare canonical name is classified by that name."""
    out = parse_output_line(line("k", status="UNAVAILABLE"), Review)
    assert isinstance(out, LineFailure)
    assert out.failure.error_class == "retryable:503"


def test_extra_unknown_fields_allowed() -> None:
    """Unknown fields at every level do not stop a success line from parsing."""
    resp = response(REVIEW.model_dump_json(), modelVersion="gemini-2.5-flash", responseId="r1")
    resp["candidates"][0]["citationMetadata"] = {"citations": []}
    resp["candidates"][0]["content"]["parts"][0]["thoughtSignature"] = "c2ln"
    resp["usageMetadata"]["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": 112}]
    out = parse_output_line(line("k6", response=resp, brandNewField=[1, 2]), Review)
    assert isinstance(out, LineSuccess)
    assert out.result == REVIEW


def test_thought_parts_are_skipped() -> None:
    """Thought parts are not part of the answer."""
    resp = response(REVIEW.model_dump_json())
    resp["candidates"][0]["content"]["parts"].insert(0, {"text": "hmm", "thought": True})
    assert extract_text(resp) == REVIEW.model_dump_json()
    assert isinstance(parse_output_line(line("k", response=resp), Review), LineSuccess)


def test_truncated_line_keeps_key() -> None:
    """A line cut short after its key is a retryable malformed_output for that key."""
    out = parse_output_line(GOOD[: len(GOOD) // 2], Review)
    assert isinstance(out, LineFailure)
    assert out.key == "reviews:2026-11-22:review-1:v1"
    assert (out.failure.verdict, out.failure.error_class) == (Verdict.RETRYABLE, "malformed_output")
    assert out.failure.parked_class() == "exhausted:malformed_output"


def test_truncated_line_key_after_response() -> None:
    """A truncated line whose key was never written has key None (no guess from nested keys)."""
    raw = orjson.dumps({"response": {"candidates": [{"key": "nested"}]}, "key": "k"})
    out = parse_output_line(raw[:-10], Review)
    assert isinstance(out, LineFailure)
    assert out.key is None


@pytest.mark.parametrize(
    "raw",
    [b"", b"\n", b"   ", b"[]", b"null", b"42", b'"key"', b"[{\"key\": \"k\"}]", b"\xff\xfe",
     b'{"key": "k"', b'{"key": 12'],
)  # fmt: skip
def test_broken_lines(raw: bytes) -> None:
    """Empty, non-object and cut-off lines are malformed_output failures."""
    out = parse_output_line(raw, Review)
    assert isinstance(out, LineFailure)
    assert out.failure.code == "malformed_output"
    assert out.key in (None, "k")


def test_key_without_response_or_error() -> None:
    """A line with a key but neither response nor error is retryable malformed_output."""
    out = parse_output_line(line("k"), Review)
    assert isinstance(out, LineFailure)
    assert (out.key, out.failure.verdict, out.failure.code) == (
        "k",
        Verdict.RETRYABLE,
        "malformed_output",
    )


def test_response_of_the_wrong_shape() -> None:
    """A response whose fields have the wrong types is malformed, not a model answer."""
    out = parse_output_line(line("k", response={"candidates": "nope"}), Review)
    assert isinstance(out, LineFailure)
    assert (out.key, out.failure.code) == ("k", "malformed_output")


def test_integer_key_is_read_as_text() -> None:
    """A numeric key is read as its decimal text."""
    out = parse_output_line(line(17, response=response(REVIEW.model_dump_json())), Review)
    assert isinstance(out, LineSuccess) and out.key == "17"


def test_inlined_response_record() -> None:
    """An inlined response keeps its key under metadata; parse_output_record reads it."""
    record = {"response": response(REVIEW.model_dump_json()), "metadata": {"key": "k7"}}
    out = parse_output_record(record, Review)
    assert isinstance(out, LineSuccess) and out.key == "k7"


def test_snake_case_response() -> None:
    """A response written in snake_case (an SDK dump) is read too."""
    resp = {
        "candidates": [
            {"content": {"parts": [{"text": REVIEW.model_dump_json()}]}, "finish_reason": "STOP"}
        ],
        "usage_metadata": {"prompt_token_count": 3, "candidates_token_count": 4},
    }
    out = parse_output_line(line("k", response=resp), Review)
    assert out == LineSuccess("k", REVIEW, Usage(3, 4, 7))


def test_lenient_usage_numbers() -> None:
    """Token counts written as strings are read; negative or odd ones become zero."""
    resp = response(REVIEW.model_dump_json(), usage=None)
    resp["usageMetadata"] = {"promptTokenCount": "12", "candidatesTokenCount": -3}
    out = parse_output_line(line("k", response=resp), Review)
    assert isinstance(out, LineSuccess)
    assert out.usage == Usage(12, 0, 12)


def test_missing_usage_is_zero() -> None:
    """A success line without usageMetadata has zero usage."""
    out = parse_output_line(
        line("k", response=response(REVIEW.model_dump_json(), usage=None)), Review
    )
    assert isinstance(out, LineSuccess) and out.usage == Usage(0, 0, 0)


def test_deferred_schema_annotations() -> None:
    """A schema whose annotations were not resolved at class creation is rebuilt, not failed."""
    module = types.ModuleType("deferred_schema_module")
    sys.modules[module.__name__] = module
    exec(
        "from __future__ import annotations\n"
        "from pydantic import BaseModel\n"
        "class Later(BaseModel):\n"
        "    child: Child\n"
        "class Child(BaseModel):\n"
        "    n: int\n",
        module.__dict__,
    )
    later = module.Later
    out = parse_output_line(line("k", response=response('{"child": {"n": 3}}')), later)
    assert isinstance(out, LineSuccess)
    assert out.result.child.n == 3  # type: ignore[attr-defined]


def test_validate_answer() -> None:
    """validate_answer returns the model, a permanent schema Failure for bad text, or an
    ``empty`` one (unknown) for no text."""
    assert validate_answer(REVIEW.model_dump_json(), Review) == REVIEW
    for bad in ("not json", "[1, 2]", '{"category": "product"}'):
        failure = validate_answer(bad, Review)
        assert isinstance(failure, Failure)
        assert (failure.verdict, failure.code) == (Verdict.PERMANENT, "schema")
    for nothing in (None, "", "  \n"):
        failure = validate_answer(nothing, Review)
        assert isinstance(failure, Failure)
        assert (failure.verdict, failure.code) == (Verdict.UNKNOWN, "empty")


def test_extract_text_concatenates_parts() -> None:
    """extract_text joins the first candidate's text parts and ignores other candidates."""
    resp = {
        "candidates": [
            {"content": {"parts": [{"text": '{"a":'}, {"inlineData": {}}, {"text": " 1}"}]}},
            {"content": {"parts": [{"text": "second candidate"}]}},
        ]
    }
    assert extract_text(resp) == '{"a": 1}'
    assert extract_text({}) is None
    assert extract_text({"candidates": [{"content": {"parts": []}}]}) is None


def test_line_models_document_the_format() -> None:
    """The line models read a real line in camelCase and keep unknown fields."""
    parsed = OutputLine.model_validate_json(GOOD)
    assert parsed.key == "reviews:2026-11-22:review-1:v1"
    assert isinstance(parsed.response, GenerateContentResponseLine)
    assert parsed.response.candidates is not None
    assert parsed.response.candidates[0].finish_reason == "STOP"
    assert parsed.response.usage_metadata is not None
    assert parsed.response.usage_metadata.total_token_count == 133
    error = OutputLine.model_validate({"key": "k", "error": {"code": 503, "extra": True}})
    assert isinstance(error.error, ErrorStatus) and error.error.code == 503


def test_many_random_lines_match_a_slow_reference() -> None:
    """On a large mixed file, the hot path agrees with a line-by-line reading via the models."""
    rng = random.Random(7)
    for i in range(2000):
        review = Review(
            category=rng.choice(CATEGORIES),
            sentiment=rng.choice(SENTIMENTS),
            confidence=rng.random(),
        )
        raw = line(
            f"k{i}", response=response(review.model_dump_json(), usage=(i, i + 1, 2 * i + 1))
        )
        out = parse_output_line(raw, Review)
        assert out == LineSuccess(f"k{i}", review, Usage(i, i + 1, 2 * i + 1))
