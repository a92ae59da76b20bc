"""The structure of API answers (field paths and JSON types, never values) and its drift.

A :class:`ShapeRecorder` is an httpx response hook on the SDK's client: every answer body is
reduced to ``{"$.candidates[].content.parts[].text": "string", ...}`` under the name of the
step that got it (``models.generate_content``, ``batches.get``, ...), merged over all answers
of that step. A shape file is that mapping as JSON; :func:`diff_shapes` lists each field one
side has and the other lacks, and each field whose type differs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Drift", "ShapeRecorder", "diff_shapes", "load_shapes", "shape_of", "write_shapes"]

FORMAT = 1

_VER = r"/(?:v1|v1beta|v1alpha)"
# (method, path pattern, step): the path of every call the live checks make.
_STEPS = [
    ("GET", rf"{_VER}/models/[^/:]+", "models.get"),
    ("POST", rf"{_VER}/models/[^/:]+:generateContent", "models.generate_content"),
    ("POST", rf"{_VER}/models/[^/:]+:batchGenerateContent", "batches.create"),
    ("POST", rf"/upload{_VER}/files", "files.upload"),
    ("GET", rf"{_VER}/files/[^/:]+:download", "files.download"),
    ("DELETE", rf"{_VER}/files/[^/:]+", "files.delete"),
    ("GET", rf"{_VER}/batches/[^/:]+", "batches.get"),
    ("POST", rf"{_VER}/batches/[^/:]+:cancel", "batches.cancel"),
    ("DELETE", rf"{_VER}/batches/[^/:]+", "batches.delete"),
    ("POST", rf"{_VER}/interactions", "interactions.create"),
    ("GET", rf"{_VER}/interactions/[^/]+", "interactions.get"),
    ("DELETE", rf"{_VER}/interactions/[^/]+", "interactions.delete"),
]
_COMPILED = [(m, re.compile(p + "$"), s) for m, p, s in _STEPS]


def step_of(method: str, path: str) -> str | None:
    for m, pattern, step in _COMPILED:
        if m == method and pattern.search(path):
            return step
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def shape_of(
    value: Any, path: str = "$", into: dict[str, set[str]] | None = None
) -> dict[str, set[str]]:
    """Every field path of a JSON value with the types seen there (list items merged as ``[]``)."""
    out: dict[str, set[str]] = {} if into is None else into
    out.setdefault(path, set()).add(_kind(value))
    if isinstance(value, dict):
        for key, item in value.items():
            shape_of(item, f"{path}.{key}", out)
    elif isinstance(value, list):
        for item in value:
            shape_of(item, f"{path}[]", out)
    return out


class ShapeRecorder:
    """Collects the shape of every answer, per step; pass :meth:`hook` as a response hook."""

    def __init__(self) -> None:
        self.steps: dict[str, dict[str, set[str]]] = {}
        self.last_error: dict[str, Any] | None = None

    def hook(self, response: Any) -> None:
        response.read()
        step = step_of(response.request.method, response.request.url.path)
        if step is None:
            return
        if response.status_code >= 400:
            step = f"{step} (error {response.status_code})"
        body = response.content
        if not body.strip():
            return
        try:
            values = [json.loads(body)]
        except ValueError:
            try:  # a JSONL output file: one answer per line
                values = [json.loads(line) for line in body.splitlines() if line.strip()]
            except ValueError:
                return  # not JSON (an uploaded chunk's echo): nothing to record
        if response.status_code >= 400 and values and isinstance(values[0], dict):
            self.last_error = values[0]
        into = self.steps.setdefault(step, {})
        for value in values:
            shape_of(value, "$", into)

    def as_json(self) -> dict[str, dict[str, str]]:
        return {
            step: {path: "|".join(sorted(kinds)) for path, kinds in sorted(fields.items())}
            for step, fields in sorted(self.steps.items())
        }


def write_shapes(path: Path, steps: dict[str, dict[str, str]], **about: Any) -> None:
    data = {"format": FORMAT, **about, "steps": steps}
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def load_shapes(path: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the shape file {path}: {exc}") from None
    steps = data.get("steps") if isinstance(data, dict) else None
    if data.get("format") != FORMAT or not isinstance(steps, dict):
        raise ValueError(f"{path} is not a gemini-ledger shape file (format {FORMAT})")
    return steps


@dataclass(frozen=True)
class Drift:
    """One field that differs: ``lacks`` (the API has it, the emulator not), ``adds``, ``type``."""

    step: str
    field: str
    kind: str
    api: str | None
    emulator: str | None

    def __str__(self) -> str:
        if self.kind == "lacks":
            return f"{self.step}: the emulator lacks {self.field} ({self.api})"
        if self.kind == "adds":
            return f"{self.step}: the emulator adds {self.field} ({self.emulator})"
        return f"{self.step}: {self.field} is {self.api} from the API, {self.emulator} here"


def diff_shapes(api: dict[str, dict[str, str]], emulator: dict[str, dict[str, str]]) -> list[Drift]:
    """The drift of ``emulator`` from ``api``, over the steps the API file has.

    An error answer the API gave (``models.get (error 400)``) is compared only when the
    emulator gave the same error: the emulator is run with a key it accepts.
    """
    drift = []
    for step in sorted(api):
        if "(error" in step and step not in emulator:
            continue
        theirs, ours = api[step], emulator.get(step, {})
        for field in sorted(set(theirs) | set(ours)):
            a, e = theirs.get(field), ours.get(field)
            if a == e:
                continue
            kind = "lacks" if e is None else "adds" if a is None else "type"
            drift.append(Drift(step, field, kind, a, e))
    return drift
