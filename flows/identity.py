"""A pipeline's identity in the ledger: one name, one definition.

Jobs are recorded under a pipeline's ``name``; the ledger also records which definition
(``module:attribute``) owns that name, with its channel, model and a fingerprint of its
output schema and generation settings. A tick claims the name first, before anything else
is touched: another definition under a recorded name is refused
(``ledger.PipelineConflict``), while a changed model, schema or settings of the same
definition is a deliberate change, a new revision, recorded and logged.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import orjson

from flows.pipeline import Pipeline
from flows.registry import load_pipeline
from flows.settings import Settings
from ledger import Channel, Ledger, PipelineChange

__all__ = ["claim_pipeline", "schema_fingerprint"]

_log = logging.getLogger(__name__)


def schema_fingerprint(p: Pipeline[Any]) -> str:
    """A digest of the output model's JSON schema, the pipeline's generation settings and its
    cached prefix: changes when the answers' shape or the way they are asked for does.

    A pipeline without settings keeps the digest of its schema alone, as recorded before
    settings existed (no new revision for pipelines that did not change).
    """
    digest = hashlib.sha256(orjson.dumps(p.output.model_json_schema(), option=orjson.OPT_SORT_KEYS))
    settings = p.generation.given()
    if settings:
        digest.update(b"\x00generation\x00")
        digest.update(orjson.dumps(settings, option=orjson.OPT_SORT_KEYS))
    if p.embedding is not None:
        digest.update(b"\x00embedding\x00")
        digest.update(orjson.dumps(p.embedding.given(), option=orjson.OPT_SORT_KEYS))
    if p.cached_prefix is not None:
        digest.update(b"\x00cached_prefix\x00")
        digest.update(orjson.dumps(p.cached_prefix.given(), option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()[:32]


def claim_pipeline(
    name: str, *, ledger: Ledger, settings: Settings
) -> tuple[Pipeline[Any], PipelineChange]:
    """Load the pipeline ``name`` (a name or ``module:attribute``) and record it as the owner
    of its name; raises ``ledger.PipelineConflict`` when another definition owns it."""
    p, spec = load_pipeline(name, settings)
    change = ledger.record_pipeline(
        p.name,
        spec=spec,
        channel=Channel(p.channel).value,
        model=p.model,
        schema_fingerprint=schema_fingerprint(p),
    )
    if change.outcome == "changed":
        _log.warning(
            "pipeline %s (%s) changed: %s; now revision %d",
            p.name,
            spec,
            ", ".join(
                "output schema or generation settings" if c == "schema_fingerprint" else c
                for c in change.changed
            ),
            change.record.revision,
        )
    return p, change
