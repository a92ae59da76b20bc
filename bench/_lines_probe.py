"""Throughput probe for ledger._lines.parse_output_line (success lines, small schema)."""

from __future__ import annotations

import sys
import time
from typing import Literal

import orjson
from pydantic import BaseModel, Field

from ledger._lines import LineSuccess, parse_output_line


class Review(BaseModel):
    category: Literal["product", "shipping", "service", "other"]
    sentiment: Literal["positive", "neutral", "negative"]
    confidence: float = Field(ge=0, le=1)


def make_line(i: int) -> bytes:
    answer = orjson.dumps(
        {"category": "shipping", "sentiment": "negative", "confidence": 0.87}
    ).decode()
    return orjson.dumps(
        {
            "key": f"reviews:2026-11-22:review-{i}:v1",
            "response": {
                "candidates": [
                    {
                        "content": {"parts": [{"text": answer}], "role": "model"},
                        "finishReason": "STOP",
                        "avgLogprobs": -0.0123,
                    }
                ],
                "usageMetadata": {
                    "promptTokenCount": 112,
                    "candidatesTokenCount": 21,
                    "totalTokenCount": 133,
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 112}],
                },
                "modelVersion": "gemini-2.5-flash",
                "responseId": "abc123XYZ",
            },
        }
    )


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    lines = [make_line(i) for i in range(n)]
    print(f"line size {len(lines[0])} bytes")
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for line in lines:
            out = parse_output_line(line, Review)
        dt = time.perf_counter() - t0
        best = max(best, n / dt)
    assert isinstance(out, LineSuccess), out
    print(f"success lines: {best:,.0f} lines/s (best of 3, {n} lines)")
    t0 = time.perf_counter()
    for line in lines:
        orjson.loads(line)
    print(f"orjson.loads alone: {n / (time.perf_counter() - t0):,.0f} lines/s")


if __name__ == "__main__":
    main()
