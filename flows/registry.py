"""Finding a pipeline by name: the shipped examples, or ``package.module:attribute``."""

from __future__ import annotations

import importlib
from typing import Any

from flows.pipeline import Pipeline

__all__ = ["UnknownPipeline", "get_pipeline", "pipeline_names"]

_BUILTIN = {
    "reviews": "flows.examples.reviews:pipeline",
    "articles": "flows.examples.articles:pipeline",
}


class UnknownPipeline(LookupError):
    """No pipeline has this name."""


def pipeline_names() -> list[str]:
    return sorted(_BUILTIN)


def get_pipeline(name: str) -> Pipeline[Any]:
    """A shipped example by name (``reviews``, ``articles``) or ``module:attribute``."""
    spec = _BUILTIN.get(name, name)
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
    return found
