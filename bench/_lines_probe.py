"""Throughput probe for ledger._lines.parse_output_line.

Run: PYTHONPATH=. .venv/bin/python -P bench/_lines_probe.py [lines]

Prints lines/s for all-success lines and for a mixed file (5% failures of every kind), by
wall clock and by process CPU time (the latter is steadier on a busy machine).
"""

from __future__ import annotations

import random
import sys
import time
from typing import Literal

import orjson
from pydantic import BaseModel, Field

from ledger import LineSuccess, parse_output_line


class Review(BaseModel):
    category: Literal["product", "shipping", "service", "other"]
    sentiment: Literal["positive", "neutral", "negative"]
    confidence: float = Field(ge=0, le=1)


def _response(text: str, finish: str = "STOP") -> dict[str, object]:
    return {
        "candidates": [
            {
                "content": {"parts": [{"text": text}], "role": "model"},
                "finishReason": finish,
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
    }


ANSWER = orjson.dumps({"category": "shipping", "sentiment": "negative", "confidence": 0.87})


def make_line(i: int) -> bytes:
    key = f"reviews:2026-11-22:review-{i}:v1"
    return orjson.dumps({"key": key, "response": _response(ANSWER.decode())})


def make_failure_line(i: int) -> bytes:
    key = f"reviews:2026-11-22:review-{i}:v1"
    kind = i % 5
    if kind == 0:
        return orjson.dumps({"key": key, "response": _response('{"category": "weather"}')})
    if kind == 1:
        return orjson.dumps({"key": key, "response": _response("")})
    if kind == 2:
        return orjson.dumps({"key": key, "response": _response("", "SAFETY")})
    if kind == 3:
        error = {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}
        return orjson.dumps({"key": key, "error": error})
    return make_line(i)[:80]


def _run(label: str, lines: list[bytes]) -> None:
    best_wall = best_cpu = 0.0
    for _ in range(3):
        w0, c0 = time.perf_counter(), time.process_time()
        for line in lines:
            parse_output_line(line, Review)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        best_wall = max(best_wall, len(lines) / wall)
        best_cpu = max(best_cpu, len(lines) / cpu)
    print(f"{label}: {best_wall:,.0f} lines/s wall, {best_cpu:,.0f} lines/s CPU (best of 3)")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    lines = [make_line(i) for i in range(n)]
    assert isinstance(parse_output_line(lines[0], Review), LineSuccess)
    print(f"{n} lines of {len(lines[0])} bytes")
    _run("success lines", lines)
    mixed = [
        make_failure_line(i) if random.random() < 0.05 else line for i, line in enumerate(lines)
    ]
    _run("mixed, 5% failures", mixed)
    w0 = time.perf_counter()
    for line in lines:
        orjson.loads(line)
    print(f"(orjson.loads alone: {n / (time.perf_counter() - w0):,.0f} lines/s wall)")


if __name__ == "__main__":
    main()
