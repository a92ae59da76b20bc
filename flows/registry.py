"""Finding a pipeline by name: the shipped examples, or ``package.module:attribute``.

The ledger records a pipeline by its ``name``. A process that only has that name (the
webhook receiver, a reconcile deployment run) finds your own pipelines through
``GEMINI_LEDGER_PIPELINES`` (``name=module:attribute`` pairs separated by commas); a
pipeline loaded by ``module:attribute`` in this process is also remembered by its name.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from flows.pipeline import Pipeline

__all__ = ["PIPELINES_ENV", "UnknownPipeline", "get_pipeline", "pipeline_names"]

PIPELINES_ENV = "GEMINI_LEDGER_PIPELINES"

_BUILTIN = {
    "reviews": "flows.examples.reviews:pipeline",
    "articles": "flows.examples.articles:pipeline",
}


class UnknownPipeline(LookupError):
    """No pipeline has this name."""


_learned: dict[str, str] = {}


def _configured() -> dict[str, str]:
    pairs: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in os.environ.get(PIPELINES_ENV, "").split(","))):
        name, sep, spec = part.partition("=")
        if not sep or ":" not in spec:
            raise UnknownPipeline(f"{PIPELINES_ENV}: {part!r} is not name=module:attribute")
        pairs[name.strip()] = spec.strip()
    return pairs


def pipeline_names() -> list[str]:
    return sorted(_BUILTIN)


def get_pipeline(name: str) -> Pipeline[Any]:
    """A shipped example by name (``reviews``, ``articles``) or ``module:attribute``."""
    spec = _BUILTIN.get(name) or _configured().get(name) or _learned.get(name) or name
    if ":" not in spec:
        raise UnknownPipeline(
            f"unknown pipeline {name!r}: use one of {', '.join(pipeline_names())}"
            " or module:attribute"
        )
    module_name, _, attr = spec.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        # ValueError: an empty module name (":attr"); TypeError: a relative one (".mod:attr").
        raise UnknownPipeline(f"cannot load pipeline {name!r}: {exc}") from exc
    if not isinstance(found, Pipeline):
        raise UnknownPipeline(f"{spec} is not a Pipeline")
    _learned.setdefault(found.name, spec)
    return found
