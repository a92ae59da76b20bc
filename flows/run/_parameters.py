"""The flows' parameter types: what a deployment's parameter schema says about each one.

Prefect builds a deployment's parameter schema from the flow's signature (the types) and its
docstring's ``Args:`` section (the descriptions the custom-run form shows). With
``enforce_parameter_schema: true`` the server checks every new run's parameters against that
schema, so a bad value is refused at ``prefect deployment run`` instead of failing in the
worker. The server's check ignores ``format`` (Prefect 3.9.1 validates without a format
checker), so ``format: date`` alone lets ``day=tomorrow`` through: :data:`Day` adds a
pattern the server does check, and the flow still parses the value as a date. A value the
pattern lets through but no calendar has (``2026-02-31``) fails the run in the worker, under
the run's own name (``flows.run._names``).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from pydantic import Field, WithJsonSchema

from flows.deadline import DEADLINE_PATTERN
from ledger import PIPELINE_NAME_MAX

__all__ = [
    "BATCH_JOB_PATTERN",
    "DAY_PATTERN",
    "SPEC_PATTERN",
    "BatchJobName",
    "BudgetUsd",
    "Concurrency",
    "Day",
    "DeadlineText",
    "PipelineSpec",
    "Seconds",
    "known_pipelines",
]

#: An ISO day, ``YYYY-MM-DD``, with a month and day of month that exist.
DAY_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
#: A batch job's name as the API gives it: ``batches/<id>``.
BATCH_JOB_PATTERN = r"^batches/[^/\s]+$"
#: ``package.module:attribute``, as ``flows.registry`` loads it.
SPEC_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$"


def known_pipelines() -> list[str]:
    """The pipelines a deployment may name by name alone: the shipped examples and the names
    ``GEMINI_LEDGER_PIPELINES`` gives where the deployment is made."""
    from flows.registry import BUILTIN
    from flows.settings import SettingsError, load_settings

    names = set(BUILTIN)
    try:
        # Only the variables: a module import makes no request (the ledger URL's block).
        configured = load_settings(read_blocks=False).pipelines or ""
    except SettingsError:  # a bad setting is the settings check's to report
        configured = ""
    for part in configured.split(","):
        name = part.partition("=")[0].strip()
        if name and len(name) <= PIPELINE_NAME_MAX:
            names.add(name)
    return sorted(names)


def _pipeline_schema() -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "string", "enum": known_pipelines(), "title": "a known pipeline"},
            {"type": "string", "pattern": SPEC_PATTERN, "title": "module:attribute"},
        ]
    }


#: A pipeline: one of :func:`known_pipelines` (a choice in the custom-run form) or its
#: ``module:attribute``. The choice is read when the flow's module is imported, so
#: ``prefect deploy`` records the names known where it runs.
PipelineSpec = Annotated[str, WithJsonSchema(_pipeline_schema())]

#: A day, given as ``YYYY-MM-DD``; checked by the server's pattern, parsed by the flow.
Day = Annotated[date, WithJsonSchema({"type": "string", "format": "date", "pattern": DAY_PATTERN})]

#: A batch job's name, ``batches/<id>`` (checked by the schema only: the flow looks it up).
BatchJobName = Annotated[str, WithJsonSchema({"type": "string", "pattern": BATCH_JOB_PATTERN})]

#: A number of seconds: finite, zero or more.
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]

#: A night's spending cap in USD: finite, zero or more (zero: nothing is sent).
BudgetUsd = Annotated[float, Field(ge=0, allow_inf_nan=False)]

#: How many requests in flight at once: one or more.
Concurrency = Annotated[int, Field(ge=1)]

#: A morning deadline, ``HH:MM Zone/Name`` (``07:00 Europe/Paris``): the server checks the
#: pattern; the flow checks the zone (``flows.Deadline``) before any work.
DeadlineText = Annotated[str, WithJsonSchema({"type": "string", "pattern": DEADLINE_PATTERN})]
