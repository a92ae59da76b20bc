"""Finding a pipeline by name: the shipped examples, or ``package.module:attribute``.

The ledger records each pipeline by its ``name`` with the ``module:attribute`` it was loaded
from (``flows.identity``). A process that only has the name (the webhook receiver, replay, a
reconcile deployment run) finds the pipeline by that record; ``GEMINI_LEDGER_PIPELINES``
(``name=module:attribute`` pairs separated by commas) still overrides it. Nothing is
remembered in the process: every lookup reads the same sources, so a run's answer does not
depend on what ran before it in the same process.

``module:attribute`` resolves from the current directory, as ``python -m`` does, so
``gemini-ledger tick translate:pipeline`` works next to ``translate.py``.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path
from typing import Any

from flows.errors import UsageError
from flows.pipeline import Pipeline
from flows.settings import Settings
from ledger import PipelineError

__all__ = [
    "BUILTIN",
    "PIPELINES_ENV",
    "UnknownPipeline",
    "get_pipeline",
    "load_pipeline",
    "load_spec",
    "pipeline_names",
]

PIPELINES_ENV = "GEMINI_LEDGER_PIPELINES"

BUILTIN = {
    "reviews": "flows.examples.reviews:pipeline",
    "articles": "flows.examples.articles:pipeline",
    "review-embeddings": "flows.examples.review_embeddings:pipeline",
    "receipts": "flows.examples.receipts:pipeline",
}


class UnknownPipeline(PipelineError, UsageError, LookupError):
    """No pipeline has this name, or its module cannot be loaded."""


def pipeline_names() -> list[str]:
    return sorted(BUILTIN)


def _recorded(name: str, settings: Settings) -> str | None:
    """The ``module:attribute`` the ledger recorded for ``name``, if a ledger exists: no
    ledger yet (no file, or one ``db upgrade`` never made a ledger of) records no pipeline,
    so an unknown name is reported as unknown rather than as a missing ledger."""
    from flows._ledger import open_ledger
    from ledger import LedgerMissing, ledger_exists

    if not ledger_exists(settings.database_url):
        return None  # never create a ledger just to look a name up
    try:
        record = open_ledger(settings.database_url).pipeline_record(name)
    except LedgerMissing:
        return None  # a file there, but no ledger's schema in it
    return None if record is None else record.spec


def _where(exc: BaseException) -> str:
    """``file:line`` where an exception raised while importing a module came from."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<frozen")
    ]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


def _import(module_name: str, name: str) -> Any:
    # As `python -m` does: the current directory first on the import path.
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise UnknownPipeline(
                f"cannot load pipeline {name!r}: no module named {exc.name!r}"
                f" (looked in {cwd} and the installed packages)"
            ) from exc
        raise UnknownPipeline(
            f"cannot load pipeline {name!r}: importing {module_name} raised"
            f" ModuleNotFoundError: {exc} ({_where(exc)})"
        ) from exc
    except (ValueError, TypeError) as exc:
        if not module_name or module_name.startswith("."):
            # ":attr" or ".mod:attr": not an importable module name at all.
            raise UnknownPipeline(
                f"cannot load pipeline {name!r}: {module_name!r} is not a module name"
            ) from exc
        raise UnknownPipeline(
            f"cannot load pipeline {name!r}: importing {module_name} raised"
            f" {type(exc).__name__}: {exc} ({_where(exc)})"
        ) from exc
    except Exception as exc:
        # Whatever the module does on import is the pipeline author's code: their mistake,
        # shown as one line with where it happened.
        message = exc.msg if isinstance(exc, SyntaxError) else exc
        raise UnknownPipeline(
            f"cannot load pipeline {name!r}: importing {module_name} raised"
            f" {type(exc).__name__}: {message} ({_where(exc)})"
        ) from exc


def load_pipeline(name: str, settings: Settings) -> tuple[Pipeline[Any], str]:
    """The pipeline called ``name`` (or given as ``module:attribute``) and its spec.

    Looked up in order: the shipped examples, ``GEMINI_LEDGER_PIPELINES``
    (``settings.pipeline_specs``), the ledger's record of the name, then ``name`` as a spec.
    """
    spec = (
        BUILTIN.get(name)
        or settings.pipeline_specs.get(name)
        or (None if ":" in name else _recorded(name, settings))
        or name
    )
    return _load_spec(name, spec)


def load_spec(spec: str) -> Pipeline[Any]:
    """A shipped example by name or a ``module:attribute``: what needs no settings (a flow
    run's name, read before the run has its context)."""
    return _load_spec(spec, BUILTIN.get(spec, spec))[0]


def _load_spec(name: str, spec: str) -> tuple[Pipeline[Any], str]:
    if ":" not in spec:
        raise UnknownPipeline(
            f"unknown pipeline {name!r}: use one of {', '.join(pipeline_names())}"
            " or module:attribute"
        )
    module_name, _, attr = spec.partition(":")
    module = _import(module_name, name)
    try:
        found = getattr(module, attr)
    except AttributeError:
        raise UnknownPipeline(
            f"cannot load pipeline {name!r}: module {module_name} has no attribute {attr!r}"
        ) from None
    if not isinstance(found, Pipeline):
        raise UnknownPipeline(f"{spec} is not a Pipeline (it is a {type(found).__name__})")
    return found, spec


def get_pipeline(name: str, settings: Settings) -> Pipeline[Any]:
    """A shipped example by name (``reviews``, ``articles``), a recorded name, or
    ``module:attribute``."""
    return load_pipeline(name, settings)[0]
