"""Deterministic randomness and the answers the emulator gives (JSON that fits a schema)."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import orjson

_WORDS = (
    "amber", "brisk", "calm", "delta", "ember", "fable", "grove", "harbor", "iris",
    "juniper", "kestrel", "lumen", "meadow", "nimbus", "orchid", "pebble", "quartz",
    "river", "sable", "tundra", "umber", "velvet", "willow", "xenon", "yarrow", "zephyr",
)  # fmt: skip


def _digest(*parts: object) -> bytes:
    text = "\x1f".join(str(p) for p in parts)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def uniform(*parts: object) -> float:
    """A number in [0, 1) that depends only on ``parts``."""
    return int.from_bytes(_digest(*parts)[:8], "big") / 2**64


def rng_for(*parts: object) -> random.Random:
    """A private ``random.Random`` seeded from ``parts``."""
    return random.Random(int.from_bytes(_digest(*parts), "big"))


def stable_key(body: bytes) -> str:
    """The key used for a submission that carries none: a hash of its request body."""
    return "body:" + hashlib.sha256(body).hexdigest()[:32]


def collect_text(value: Any, out: list[str] | None = None) -> list[str]:
    """Every ``text`` string found in a request's contents / interaction input."""
    if out is None:
        out = []
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        text = value.get("text")
        if isinstance(text, str):
            out.append(text)
        for key in ("parts", "content", "contents", "input", "turns"):
            sub = value.get(key)
            if sub is not None:
                collect_text(sub, out)
    elif isinstance(value, list):
        for item in value:
            collect_text(item, out)
    return out


def has_letters(text: str) -> bool:
    """True when the text has at least one letter (any script)."""
    return any(ch.isalpha() for ch in text)


def count_tokens(text: str) -> int:
    """The emulator's token estimate: about four characters per token, at least one."""
    return max(1, (len(text) + 3) // 4)


# --------------------------------------------------------------------- schema answers

_MAX_DEPTH = 8


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 32:
        ref = schema["$ref"]
        target: Any = root
        if isinstance(ref, str) and ref.startswith("#"):
            for part in ref.lstrip("#").strip("/").split("/"):
                if not part:
                    continue
                part = part.replace("~1", "/").replace("~0", "~")
                target = target.get(part, {}) if isinstance(target, dict) else {}
        else:
            target = {}
        extra = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **extra} if extra else target
        seen += 1
    return schema if isinstance(schema, dict) else {}


def _type_of(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [str(k).lower() for k in kind if str(k).lower() != "null"]
        return non_null[0] if non_null else "null"
    if isinstance(kind, str):
        return kind.lower()
    if "properties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return None


def _string(schema: dict[str, Any], rng: random.Random) -> str:
    fmt = schema.get("format")
    if fmt == "date-time":
        value = f"2026-11-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z"
    elif fmt == "date":
        value = f"2026-11-{rng.randint(1, 28):02d}"
    elif fmt == "email":
        value = f"{rng.choice(_WORDS)}@example.com"
    elif fmt in ("uri", "url"):
        value = f"https://example.com/{rng.choice(_WORDS)}"
    elif fmt == "uuid":
        value = "%08x-%04x-4%03x-8%03x-%012x" % (  # noqa: UP031
            rng.getrandbits(32),
            rng.getrandbits(16),
            rng.getrandbits(12),
            rng.getrandbits(12),
            rng.getrandbits(48),
        )
    else:
        value = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))
    min_len = int(schema.get("minLength", 0) or 0)
    max_len = schema.get("maxLength")
    while len(value) < min_len:
        value += " " + rng.choice(_WORDS)
    if isinstance(max_len, int) and max_len >= 0:
        value = value[:max_len]
    if len(value) < min_len:
        value = value.ljust(min_len, "x")
    return value


def _number(schema: dict[str, Any], rng: random.Random, integer: bool) -> int | float:
    lo = schema.get("minimum")
    hi = schema.get("maximum")
    xlo = schema.get("exclusiveMinimum")
    xhi = schema.get("exclusiveMaximum")
    if isinstance(xlo, bool):  # draft-4 style
        xlo = lo if xlo else None
    if isinstance(xhi, bool):
        xhi = hi if xhi else None
    low: float = -1000.0 if lo is None else float(lo)
    high: float = 1000.0 if hi is None else float(hi)
    if lo is None and hi is not None:
        low = high - 100.0
    if hi is None and lo is not None:
        high = low + 100.0
    if integer:
        ilow = int(low) if float(low).is_integer() else int(low) + 1
        ihigh = int(high) if high >= 0 or float(high).is_integer() else int(high) - 1
        if xlo is not None and ilow <= float(xlo):
            ilow = int(float(xlo)) + 1
        if xhi is not None and ihigh >= float(xhi):
            ihigh = int(float(xhi)) - (1 if float(xhi).is_integer() else 0)
        if ihigh < ilow:
            ihigh = ilow
        value_i = rng.randint(ilow, ihigh)
        mult = schema.get("multipleOf")
        if isinstance(mult, int) and mult > 0:
            value_i = max(ilow, (value_i // mult) * mult)
            if value_i % mult:
                value_i += mult - value_i % mult
        return value_i
    if xlo is not None:
        low = max(low, float(xlo) + 1e-6)
    if xhi is not None:
        high = min(high, float(xhi) - 1e-6)
    if high < low:
        high = low
    return round(rng.uniform(low, high), 3) if high - low > 0.01 else low


def generate_value(
    schema: Any, rng: random.Random, root: dict[str, Any] | None = None, depth: int = 0
) -> Any:
    """A value that conforms to a (subset of) JSON Schema / Gemini Schema."""
    if not isinstance(schema, dict):
        return " ".join(rng.choice(_WORDS) for _ in range(3))
    if depth > 4 * _MAX_DEPTH:  # an unsatisfiable self-reference: give up
        return None
    if root is None:
        root = schema
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        choices = [e for e in enum if e is not None] or enum
        return rng.choice(choices)
    for combo in ("anyOf", "oneOf"):
        options = schema.get(combo)
        if isinstance(options, list) and options:
            resolved = [_resolve(o, root) if isinstance(o, dict) else {} for o in options]
            non_null = [o for o in resolved if _type_of(o) != "null"] or resolved
            if depth >= _MAX_DEPTH and any(_type_of(o) == "null" for o in resolved):
                return None
            base = {k: v for k, v in schema.items() if k not in (combo,)}
            return generate_value({**base, **rng.choice(non_null)}, rng, root, depth + 1)
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and all_of:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in all_of:
            merged.update(_resolve(part, root) if isinstance(part, dict) else {})
        return generate_value(merged, rng, root, depth + 1)
    kind = _type_of(schema)
    if kind == "null":
        return None
    if kind == "object":
        props = schema.get("properties") or {}
        required = schema.get("required") or []
        out: dict[str, Any] = {}
        order = list(schema.get("propertyOrdering") or []) + [
            p for p in props if p not in (schema.get("propertyOrdering") or [])
        ]
        for name in order:
            if name not in props:
                continue
            if depth >= _MAX_DEPTH and name not in required:
                continue
            out[name] = generate_value(props[name], rng, root, depth + 1)
        for name in required:
            if name not in out:
                out[name] = "x"
        return out
    if kind == "array":
        items = schema.get("items", {})
        lo = int(schema.get("minItems", 0) or 0)
        hi_raw = schema.get("maxItems")
        hi = int(hi_raw) if isinstance(hi_raw, int) else lo + 3
        if depth >= _MAX_DEPTH:
            hi = lo
        n = rng.randint(max(lo, min(1, hi)), max(lo, min(hi, lo + 3)))
        prefix = schema.get("prefixItems") or []
        values = []
        for i in range(n):
            sub = prefix[i] if i < len(prefix) else items
            values.append(generate_value(sub, rng, root, depth + 1))
        return values
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "integer":
        return _number(schema, rng, integer=True)
    if kind == "number":
        return _number(schema, rng, integer=False)
    return _string(schema, rng)


def answer_text(schema: Any, seed: int, key: str, n: int) -> str:
    """The answer for one submission: JSON fitting ``schema`` if there is one, else prose."""
    rng = rng_for(seed, key, n, "answer")
    if schema is not None:
        return orjson.dumps(generate_value(schema, rng)).decode()
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 10)))
    return f"Emulated answer: {words}."
