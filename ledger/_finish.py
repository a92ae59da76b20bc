"""An answer that arrived: blocked, cut, empty or with text, by its finish reason.

:func:`classify_response` reads one ``GenerateContentResponse`` (as JSON or dumped from the
SDK): a blocked prompt (``promptFeedback.blockReason``), a blocking ``finishReason``, an answer
cut at the output token limit, one without text. Each becomes a :class:`~ledger.Failure`;
an answer with text gives None (its schema is checked by ``ledger._lines``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ledger._failure import EMPTY, Failure, Verdict
from ledger._wire import as_mapping, enum_text, field, text_of

__all__ = [
    "EMPTY_HINT",
    "TRUNCATED_HINT",
    "answer_failure",
    "candidate_text",
    "classify_response",
    "empty_answer",
]

# google-genai types.FinishReason values that block an answer, grouped by the class parked.
_SAFETY_FINISH = frozenset(
    {
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "MODEL_ARMOR",
        # JAILBREAK is a promptFeedback BlockedReason in google-genai 3.3.0 (types.py), not a
        # FinishReason: a blocked prompt is read from blockReason below. It stays here so a
        # finishReason spelled that way is still a safety stop, not an empty answer retried.
        "JAILBREAK",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
    }
)
_RECITATION_FINISH = frozenset({"RECITATION", "IMAGE_RECITATION"})
# The answer hit the output token limit: the same request is cut the same way, and the fix
# (a higher max_output_tokens, a shorter answer) is the operator's, so it is parked as its
# own class with the fix in its message.
TRUNCATED_HINT = (
    "answer cut at the output token limit (MAX_TOKENS): raise max_output_tokens"
    " or ask for a shorter answer, then replay"
)
# An answer without text is not the row's fault when a retry may fix it: Gemini 2.5 returns
# finish STOP with a content that has no parts now and then, and the same request answers
# on a retry (python-genai issue 1289; litellm #24442 shows the body: ``"content": {"role":
# "model"}, "finishReason": "STOP"``). OTHER, MALFORMED_RESPONSE and CONTINUATION finishes can
# come without text too (google-genai types.FinishReason). Each is ``unknown`` (retried up to
# the pipeline's unknown cap), then parked under its own class: ``empty``, or ``empty:other``,
# ``empty:malformed_response``, ``empty:continuation`` naming the finish.
EMPTY_HINT = "empty answer (no text); a retry may fix it"
_EMPTY_FINISH = frozenset(
    {"STOP", "FINISH_REASON_UNSPECIFIED", "OTHER", "MALFORMED_RESPONSE", "CONTINUATION"}
)


def empty_answer(finish: str | None = None) -> Failure:
    """The failure of an answer that came without text (finish ``finish``)."""
    if finish is None or finish in ("STOP", "FINISH_REASON_UNSPECIFIED"):
        return Failure(Verdict.UNKNOWN, EMPTY, EMPTY_HINT)
    return Failure(
        Verdict.UNKNOWN, f"{EMPTY}:{finish.lower()}", f"{EMPTY_HINT} (finishReason {finish})"
    )


def classify_response(response: Mapping[str, Any]) -> Failure | None:
    """Classify an answer that arrived: a Failure for a blocked/empty one, None if it has text."""
    try:
        return answer_failure(response)
    except Exception as exc:
        return Failure(
            Verdict.RETRYABLE, "malformed_output", f"unreadable response ({type(exc).__name__})"
        )


def answer_failure(response: Any) -> Failure | None:
    """:func:`classify_response` without its guard: raises on a response it cannot read."""
    resp = as_mapping(response)
    if resp is None:
        return Failure(Verdict.RETRYABLE, "malformed_output", "response is not an object")

    feedback = as_mapping(field(resp, "promptFeedback", "prompt_feedback"))
    if feedback is not None:
        reason = enum_text(field(feedback, "blockReason", "block_reason"))
        if reason:
            detail = text_of(field(feedback, "blockReasonMessage", "block_reason_message"))
            return Failure(
                Verdict.PERMANENT,
                "blocked_prompt",
                f"prompt blocked: {reason}" + (f" ({detail})" if detail else ""),
            )

    candidates = resp.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        return empty_answer()
    first = as_mapping(candidates[0])
    if first is None:
        return empty_answer()

    finish = enum_text(field(first, "finishReason", "finish_reason"))
    if finish in _SAFETY_FINISH:
        flagged = _flagged_categories(field(first, "safetyRatings", "safety_ratings"))
        return Failure(
            Verdict.PERMANENT,
            "safety",
            f"answer blocked: finishReason {finish}" + (f" ({flagged})" if flagged else ""),
        )
    if finish in _RECITATION_FINISH:
        return Failure(Verdict.PERMANENT, "recitation", f"answer blocked: finishReason {finish}")
    if finish == "MAX_TOKENS":
        # Checked before the text: a cut JSON answer would otherwise fail as a schema error.
        return Failure(Verdict.PERMANENT, "truncated", TRUNCATED_HINT)

    text = candidate_text(first)
    if text is None or not text.strip():
        if finish is None or finish in _EMPTY_FINISH:
            return empty_answer(finish)
        # Another finish without text (LANGUAGE, NO_IMAGE, a tool-call finish): the same
        # request ends the same way.
        return Failure(Verdict.PERMANENT, "schema", f"empty answer (finishReason {finish})")
    return None


def candidate_text(candidate: Mapping[str, Any]) -> str | None:
    """Concatenated text of a candidate's non-thought parts; None when it has no text part."""
    content = as_mapping(candidate.get("content"))
    if content is None:
        return None
    parts = content.get("parts")
    if not isinstance(parts, list):
        return None
    texts = [
        p["text"]
        for p in parts
        if (type(p) is dict or isinstance(p, Mapping))
        and isinstance(p.get("text"), str)
        and not p.get("thought")
    ]
    if not texts:
        return None
    return texts[0] if len(texts) == 1 else "".join(texts)


def _flagged_categories(ratings: Any) -> str:
    if not isinstance(ratings, list):
        return ""
    flagged = []
    for rating in ratings[:20]:
        if not isinstance(rating, Mapping):
            continue
        probability = enum_text(rating.get("probability")) or ""
        if rating.get("blocked") or probability in ("HIGH", "MEDIUM"):
            category = enum_text(rating.get("category")) or "?"
            flagged.append(category.removeprefix("HARM_CATEGORY_").lower())
    return ", ".join(flagged)
