"""Turn one line of a batch output JSONL into one typed outcome.

A batch job's output file has one JSON object per line: ``{"key": ..., "response":
{GenerateContentResponse}}`` for an answer, ``{"key": ..., "error" | "status": {code,
message, status, details}}`` for a failed row. :func:`parse_output_line` turns any line,
however broken, into a :class:`LineSuccess` (the answer validated against the pipeline's
output schema, with token usage) or a :class:`LineFailure` (with the classifier's verdict).

Reconciling runs this on every line of files with millions of rows, so the common success
shape is read with plain dict navigation on ``orjson.loads`` output and validated with the
schema's compiled validator; the Pydantic line models below document the format and gate
the slow path taken by every other shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from ledger._failure import Failure, Verdict, is_empty_answer
from ledger._finish import candidate_text, classify_response, empty_answer
from ledger._vectors import Vector, validate_vector, vector_values
from ledger._verdicts import classify, validation_summary
from ledger._wire import as_mapping

__all__ = [
    "Candidate",
    "Content",
    "ErrorStatus",
    "GenerateContentResponseLine",
    "LineFailure",
    "LineSuccess",
    "ModalityTokenCount",
    "Outcome",
    "OutputLine",
    "Part",
    "PromptFeedback",
    "Usage",
    "UsageMetadata",
    "answer_ids",
    "embedding_line_parser",
    "extract_text",
    "parse_embedding_line",
    "parse_output_line",
    "parse_output_record",
    "usage_of_metadata",
    "validate_answer",
]


class Usage(NamedTuple):
    """Tokens billed for one answer (zeros when the line carries no usage).

    ``total_tokens`` includes ``thoughts_tokens`` (``thoughtsTokenCount``, billed at the
    output rate); ``prompt_tokens`` includes ``cached_tokens`` (``cachedContentTokenCount``,
    billed at the cache rate) and ``audio_tokens`` (the AUDIO entry of
    ``promptTokensDetails``, billed at the audio input rate where a model has one).
    """

    prompt_tokens: int
    candidates_tokens: int
    total_tokens: int
    thoughts_tokens: int = 0
    cached_tokens: int = 0
    audio_tokens: int = 0


NO_USAGE = Usage(0, 0, 0)


@dataclass(frozen=True, slots=True)
class LineSuccess:
    """A row's answer, validated against the output schema, with the answer's
    ``modelVersion`` and ``responseId`` when it carried them."""

    key: str
    result: BaseModel
    usage: Usage
    model_version: str | None = None
    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class LineFailure:
    """A row that failed (key None when the line did not say which row it is)."""

    key: str | None
    failure: Failure
    usage: Usage
    model_version: str | None = None
    response_id: str | None = None


Outcome = LineSuccess | LineFailure


# --- the format, documented as models (camelCase as the API writes it; snake_case accepted) ---


class _Lenient(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


class Part(_Lenient):
    """One part of a candidate's content; thought parts are the model's reasoning."""

    text: str | None = None
    thought: bool | None = None


class Content(_Lenient):
    parts: list[Part] | None = None
    role: str | None = None


class Candidate(_Lenient):
    content: Content | None = None
    finish_reason: str | None = None
    safety_ratings: list[dict[str, Any]] | None = None
    index: int | None = None


class PromptFeedback(_Lenient):
    block_reason: str | None = None
    block_reason_message: str | None = None
    safety_ratings: list[dict[str, Any]] | None = None


class ModalityTokenCount(_Lenient):
    modality: str | None = None
    token_count: int | None = None


class UsageMetadata(_Lenient):
    prompt_token_count: int | None = None
    candidates_token_count: int | None = None
    total_token_count: int | None = None
    thoughts_token_count: int | None = None
    cached_content_token_count: int | None = None
    prompt_tokens_details: list[ModalityTokenCount] | None = None


class GenerateContentResponseLine(_Lenient):
    """The ``response`` of a success line: a GenerateContentResponse."""

    candidates: list[Candidate] | None = None
    prompt_feedback: PromptFeedback | None = None
    usage_metadata: UsageMetadata | None = None
    model_version: str | None = None
    response_id: str | None = None


class ErrorStatus(_Lenient):
    """The status object of a failed row (google.rpc.Status: code, message, status, details)."""

    code: int | str | None = None
    message: str | None = None
    status: str | None = None
    details: list[Any] | None = None


class OutputLine(_Lenient):
    """One line of a batch output file: a key with a response, or with an error/status."""

    key: str | int | None = None
    response: GenerateContentResponseLine | None = None
    error: ErrorStatus | str | None = None
    status: ErrorStatus | str | None = None
    metadata: dict[str, Any] | None = Field(default=None)


# --- the hot path ------------------------------------------------------------------------

_loads = orjson.loads
_tuple_new = tuple.__new__
_object_new = object.__new__
# Filling the slots directly skips the frozen dataclass's __init__ (object.__setattr__ per
# field), a measurable share of the per-line budget; the object is the same as
# LineSuccess(key, result, usage).
_set_key = LineSuccess.__dict__["key"].__set__
_set_result = LineSuccess.__dict__["result"].__set__
_set_usage = LineSuccess.__dict__["usage"].__set__
_set_model_version = LineSuccess.__dict__["model_version"].__set__
_set_response_id = LineSuccess.__dict__["response_id"].__set__


def parse_output_line(line: bytes | str, schema: type[BaseModel]) -> Outcome:
    """Parse one output line into a LineSuccess or a LineFailure. Never raises."""
    try:
        obj = _loads(line)
    except Exception:
        return _broken(line)
    try:
        # The shape nearly every line has: a key and a response with one candidate holding
        # one text part, finished normally. Anything else takes the slow path.
        if type(obj) is dict and (len(obj) == 2 or ("error" not in obj and "status" not in obj)):
            key = obj.get("key")
            response = obj.get("response")
            if type(key) is str and key and type(response) is dict:
                candidate = response["candidates"][0]
                parts = candidate["content"]["parts"]
                finish = candidate.get("finishReason")
                if len(parts) == 1 and finish == "STOP" and "promptFeedback" not in response:
                    part = parts[0]
                    text = part["text"]
                    if type(text) is str and (len(part) == 1 or not part.get("thought")):
                        meta = response.get("usageMetadata")
                        if type(meta) is dict:
                            prompt = meta.get("promptTokenCount", 0)
                            cand = meta.get("candidatesTokenCount", 0)
                            total = meta.get("totalTokenCount")
                            thoughts = meta.get("thoughtsTokenCount", 0)
                            cached = meta.get("cachedContentTokenCount", 0)
                            details = meta.get("promptTokensDetails")
                            # Real lines break the prompt down by modality; text only (one
                            # TEXT entry) is the common case: no audio tokens to count.
                            if (
                                (
                                    details is None
                                    or (
                                        type(details) is list
                                        and len(details) == 1
                                        and details[0].get("modality") == "TEXT"
                                    )
                                )
                                and type(prompt) is int
                                and type(cand) is int
                                and type(total) is int
                                and type(thoughts) is int
                                and type(cached) is int
                                and 0 <= cached <= prompt
                            ):
                                usage = _tuple_new(
                                    Usage, (prompt, cand, total, thoughts, cached, 0)
                                )
                            else:
                                usage = usage_of_metadata(meta)
                        else:
                            usage = _usage_of(response)
                        version = response.get("modelVersion")
                        response_id = response.get("responseId")
                        # Plain short strings as they come (the common case, no call).
                        if version is not None and (
                            type(version) is not str or not 0 < len(version) <= _ID_LIMIT
                        ):
                            version = _text_or_none(version)
                        if response_id is not None and (
                            type(response_id) is not str or not 0 < len(response_id) <= _ID_LIMIT
                        ):
                            response_id = _text_or_none(response_id)
                        validator = schema.__pydantic_validator__
                        try:
                            result = validator.validate_json(text)
                        except ValidationError as exc:
                            answer = _invalid_answer(text, exc, validator)
                            if isinstance(answer, Failure):
                                return LineFailure(key, answer, usage, version, response_id)
                            result = answer
                        outcome = _object_new(LineSuccess)
                        _set_key(outcome, key)
                        _set_result(outcome, result)
                        _set_usage(outcome, usage)
                        _set_model_version(outcome, version)
                        _set_response_id(outcome, response_id)
                        return outcome
    except Exception:
        pass  # the slow path classifies it (and names a schema failure properly)
    return _slow(obj, line, schema)


def _count(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and value.is_integer():
        return max(int(value), 0)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())  # proto int64 fields may be written as strings
    return 0


_ID_LIMIT = 128


def _text_or_none(value: Any) -> str | None:
    """A ``modelVersion`` / ``responseId`` as stored: a short string, or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:_ID_LIMIT]


def answer_ids(response: Any) -> tuple[str | None, str | None]:
    """The ``modelVersion`` and ``responseId`` of a GenerateContentResponse (camel or snake)."""
    m = as_mapping(response)
    if m is None:
        return None, None
    version = m.get("modelVersion", m.get("model_version"))
    response_id = m.get("responseId", m.get("response_id"))
    return _text_or_none(version), _text_or_none(response_id)


def _usage_of(response: Mapping[str, Any]) -> Usage:
    meta = response.get("usageMetadata")
    return usage_of_metadata(response.get("usage_metadata") if meta is None else meta)


def usage_of_metadata(meta: Any) -> Usage:
    """A ``usageMetadata`` (camelCase or snake_case, dict or SDK object) as :class:`Usage`.

    Real answers (google-genai ``GenerateContentResponseUsageMetadata``): the total includes
    ``thoughtsTokenCount``; the prompt count includes ``cachedContentTokenCount``;
    ``promptTokensDetails`` breaks the prompt down by modality (``[{modality, tokenCount}]``).
    """
    m = as_mapping(meta)
    if m is None:
        return NO_USAGE

    def get(camel: str, snake: str) -> Any:
        value = m.get(camel)
        return m.get(snake) if value is None else value

    prompt = _count(get("promptTokenCount", "prompt_token_count"))
    cand = _count(get("candidatesTokenCount", "candidates_token_count"))
    thoughts = _count(get("thoughtsTokenCount", "thoughts_token_count"))
    cached = min(_count(get("cachedContentTokenCount", "cached_content_token_count")), prompt)
    raw_total = get("totalTokenCount", "total_token_count")
    total = prompt + cand + thoughts if raw_total is None else _count(raw_total)
    audio = min(
        _modality_count(get("promptTokensDetails", "prompt_tokens_details"), "AUDIO"), prompt
    )
    return Usage(prompt, cand, total, thoughts, cached, audio)


def _modality_count(details: Any, modality: str) -> int:
    """Tokens of one modality in a ``[{modality, tokenCount}]`` breakdown (0 when absent)."""
    if not isinstance(details, list):
        return 0
    total = 0
    for entry in details[:20]:
        m = as_mapping(entry)
        if m is None:
            continue
        kind = m.get("modality")
        kind = getattr(kind, "value", kind)
        if isinstance(kind, str) and kind.upper() == modality:
            total += _count(m.get("tokenCount", m.get("token_count", m.get("tokens"))))
    return total


# --- the slow path -----------------------------------------------------------------------


def _slow(obj: Any, line: bytes | str, schema: type[BaseModel]) -> Outcome:
    try:
        return _parse_record(obj, line, schema)
    except Exception as exc:  # a line must never take the reconcile loop down
        return LineFailure(
            _salvage_key(line),
            Failure(
                Verdict.RETRYABLE, "malformed_output", f"unreadable line ({type(exc).__name__})"
            ),
            NO_USAGE,
        )


def parse_output_record(record: Mapping[str, Any], schema: type[BaseModel]) -> Outcome:
    """Like :func:`parse_output_line` for an already-decoded record (an inlined response)."""
    try:
        return _parse_record(record, None, schema)
    except Exception as exc:
        return LineFailure(
            None,
            Failure(
                Verdict.RETRYABLE, "malformed_output", f"unreadable record ({type(exc).__name__})"
            ),
            NO_USAGE,
        )


def _parse_record(obj: Any, line: bytes | str | None, schema: type[BaseModel]) -> Outcome:
    if not isinstance(obj, Mapping):
        salvaged = _salvage_key(line) if line is not None else None
        return _malformed(salvaged, "line is not a JSON object")
    key = _record_key(obj)
    if key is None:
        return _malformed(None, "line has no key")

    response = obj.get("response")
    usage = _usage_of(response) if isinstance(response, Mapping) else NO_USAGE
    version, response_id = answer_ids(response)

    for field in ("error", "status"):
        value = obj.get(field)
        if value is None:
            continue
        if isinstance(value, Mapping):
            return LineFailure(key, classify(value), usage, version, response_id)
        if isinstance(value, str) and value.strip():
            failure = classify({"status": value, "message": value})
            return LineFailure(key, failure, usage, version, response_id)
        return _malformed(key, f"its {field} is neither an object nor a status name")

    if response is None:
        return _malformed(key, "line has neither response nor error")
    if not isinstance(response, Mapping):
        return _malformed(key, "its response is not an object")

    blocked = classify_response(response)
    if blocked is not None:
        if blocked.code == "schema" or is_empty_answer(blocked):
            # "No answer" can also mean a response we cannot read. A garbled line is not
            # the model's answer: check it against the documented format before blaming
            # the answer (only here, the models are too slow for every line).
            problem = _format_problem(obj)
            if problem is not None:
                return _malformed(key, problem)
        return LineFailure(key, blocked, usage, version, response_id)
    answer = validate_answer(extract_text(response), schema)
    if isinstance(answer, Failure):
        return LineFailure(key, answer, usage, version, response_id)
    return LineSuccess(key, answer, usage, version, response_id)


def _malformed(key: str | None, why: str) -> LineFailure:
    return LineFailure(key, Failure(Verdict.RETRYABLE, "malformed_output", why), NO_USAGE)


def _format_problem(obj: Mapping[str, Any]) -> str | None:
    try:
        OutputLine.model_validate(obj)
    except ValidationError as exc:
        return f"line does not match the output format: {_first_error(exc)}"
    return None


def _record_key(obj: Mapping[str, Any]) -> str | None:
    key = obj.get("key")
    if key is None:
        # Inlined responses carry the key in the request's metadata.
        meta = obj.get("metadata")
        key = meta.get("key") if isinstance(meta, Mapping) else None
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return str(key)
    if isinstance(key, str) and key:
        return key
    return None


def _first_error(exc: ValidationError) -> str:
    try:
        first = exc.errors(include_input=False, include_url=False)[0]
    except Exception:
        return "invalid"
    loc = ".".join(str(p) for p in first.get("loc", ())) or "(root)"
    return f"{loc}: {first.get('msg', 'invalid')}"


# A string token, or a bracket: enough to follow nesting without decoding the line.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\]]', re.DOTALL)
_COLON = re.compile(rb"\s*:\s*")
_MAX_SALVAGE_BYTES = 8 << 20


def _salvage_key(line: bytes | str | None) -> str | None:
    """The top-level ``"key"`` of a broken line, if the line still holds it whole."""
    if line is None:
        return None
    try:
        data = line.encode("utf-8", "surrogatepass") if isinstance(line, str) else bytes(line)
        if len(data) > _MAX_SALVAGE_BYTES:
            data = data[:_MAX_SALVAGE_BYTES]
        depth = 0
        expect_value_at = -1
        for match in _TOKEN.finditer(data):
            token = match.group()
            first = token[:1]
            if first == b'"':
                if match.start() == expect_value_at:
                    value = orjson.loads(token)
                    return value if isinstance(value, str) and value else None
                expect_value_at = -1
                if depth == 1 and token == b'"key"':
                    colon = _COLON.match(data, match.end())
                    if colon is not None and data[colon.start() : colon.end()].strip() == b":":
                        expect_value_at = colon.end()
            elif first in (b"{", b"["):
                depth += 1
                expect_value_at = -1
            else:
                depth -= 1
                expect_value_at = -1
                if depth < 1:
                    return None
    except Exception:
        return None
    return None


def _broken(line: bytes | str) -> LineFailure:
    key = _salvage_key(line)
    return LineFailure(
        key,
        Failure(Verdict.RETRYABLE, "malformed_output", "line is not valid JSON"),
        NO_USAGE,
    )


# --- embedding lines ---------------------------------------------------------------------


def parse_embedding_line(line: bytes | str, dimension: int | None = None) -> Outcome:
    """One line of an embeddings batch job's output (``batches.create_embeddings``) as a
    :class:`LineSuccess` holding a :class:`~ledger.Vector`, or a :class:`LineFailure`.
    Never raises.

    The answer line's shape is not documented, so both readings are taken:
    ``{"key", "response": {"embedding": {"values": [...]}}}`` (an EmbedContentResponse, what
    ``embedContent`` answers) and ``{"key", "response": {"embeddings": [{"values": [...]}]}}``
    (a batchEmbedContents answer of one). A failed row is ``{"key", "error" | "status":
    google.rpc.Status}``, classified as a generate line's error. The vector is checked by
    :func:`~ledger.validate_vector` (finite numbers, ``dimension`` values): none is ``empty``,
    a wrong one a permanent ``schema`` failure. The tokens are the response's
    ``usageMetadata``, else its ``tokenCount`` (google-genai ``SingleEmbedContentResponse``:
    prompt tokens, embeddings have no output)."""
    try:
        obj = _loads(line)
    except Exception:
        return _broken(line)
    try:
        return _embedding_record(obj, line, dimension)
    except Exception as exc:  # a line must never take the reconcile loop down
        return LineFailure(
            _salvage_key(line),
            Failure(
                Verdict.RETRYABLE, "malformed_output", f"unreadable line ({type(exc).__name__})"
            ),
            NO_USAGE,
        )


LineParser = Callable[[bytes | str, type[BaseModel]], "Outcome"]


def embedding_line_parser(dimension: int | None) -> LineParser:
    """A ``(line, schema) -> Outcome`` parser of embedding lines checked against
    ``dimension`` (the shape ``reconcile_lines`` calls; the schema is always Vector)."""

    def parse(line: bytes | str, schema: type[BaseModel] = Vector) -> Outcome:
        return parse_embedding_line(line, dimension)

    return parse


def _embedding_record(obj: Any, line: bytes | str, dimension: int | None) -> Outcome:
    if not isinstance(obj, Mapping):
        return _malformed(_salvage_key(line), "line is not a JSON object")
    key = _record_key(obj)
    if key is None:
        # Without its key a line cannot be matched to a row: the row stays submitted and
        # comes back as missing_from_output (retried), never given another row's vector.
        return _malformed(None, "line has no key")
    response = obj.get("response")
    usage = _embedding_usage(response) if isinstance(response, Mapping) else NO_USAGE
    for field in ("error", "status"):
        value = obj.get(field)
        if value is None:
            continue
        if isinstance(value, Mapping):
            return LineFailure(key, classify(value), usage)
        if isinstance(value, str) and value.strip():
            return LineFailure(key, classify({"status": value, "message": value}), usage)
        return _malformed(key, f"its {field} is neither an object nor a status name")
    if response is None:
        return _malformed(key, "line has neither response nor error")
    if not isinstance(response, Mapping):
        return _malformed(key, "its response is not an object")
    embedding = response.get("embedding")
    if embedding is None:
        many = response.get("embeddings")
        if isinstance(many, list) and many:
            embedding = many[0]
    checked = validate_vector(vector_values(embedding), dimension)
    if isinstance(checked, Failure):
        return LineFailure(key, checked, usage)
    return LineSuccess(key, checked, usage)


def _embedding_usage(response: Mapping[str, Any]) -> Usage:
    if response.get("usageMetadata", response.get("usage_metadata")) is not None:
        return _usage_of(response)
    tokens = _count(response.get("tokenCount", response.get("token_count")))
    return Usage(tokens, 0, tokens) if tokens else NO_USAGE


# --- answers -----------------------------------------------------------------------------


def extract_text(response: Mapping[str, Any]) -> str | None:
    """Concatenated text of the first candidate's non-thought parts (None when there is none)."""
    try:
        resp = as_mapping(response)
        if resp is None:
            return None
        candidates = resp.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            return None
        first = as_mapping(candidates[0])
        return candidate_text(first) if first is not None else None
    except Exception:
        return None


_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


def validate_answer(text: str | None, schema: type[BaseModel]) -> BaseModel | Failure:
    """Validate an answer against the output schema; a permanent ``schema`` Failure if not
    (an answer without text is ``empty``: a retry may fix it)."""
    if text is None or not text.strip():
        return empty_answer()
    # Reading the attribute (re)builds a schema whose annotations were deferred.
    try:
        validator = schema.__pydantic_validator__
        result: BaseModel = validator.validate_json(text)
        return result
    except ValidationError as exc:
        return _invalid_answer(text, exc, validator)
    except Exception as exc:  # a broken schema class is not the answer's fault; never raise
        return Failure(
            Verdict.UNKNOWN, "unknown", f"schema validation failed: {type(exc).__name__}"
        )


def _invalid_answer(text: str, exc: ValidationError, validator: Any) -> BaseModel | Failure:
    """An answer that failed validation: empty, fenced JSON (validated again), or a mismatch."""
    if not text.strip():
        return empty_answer()
    if "```" in text:
        # Some answers wrap their JSON in a Markdown fence despite JSON mode.
        fenced = _FENCE.match(text)
        if fenced is not None:
            try:
                result: BaseModel = validator.validate_json(fenced.group(1))
                return result
            except Exception:
                pass
    return Failure(Verdict.PERMANENT, "schema", f"answer {validation_summary(exc)}")
