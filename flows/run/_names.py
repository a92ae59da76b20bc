"""Flow run names a person can read in the UI's list: what ran, for which day, and when.

``reviews 2026-11-29 02:00:13``: the pipeline's own name (for ``module:attr`` pipelines too,
never the attribute), then the local date and time of the run to the second, so two ticks a
minute apart are told apart; a tick for another day than today says so.
"""

from __future__ import annotations

import re
from datetime import date, datetime

__all__ = ["pipeline_label", "slug", "summary_run_name", "tick_run_name"]


def pipeline_label(spec: str) -> str:
    """The pipeline's own name for a name or ``module:attr`` spec (the spec if it won't load)."""
    from flows.registry import UnknownPipeline, load_spec

    try:
        return load_spec(spec).name  # a plain name is the pipeline's own
    except UnknownPipeline:
        return spec


def slug(text: str) -> str:
    """``text`` as an artifact key may spell it: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _day(value: object) -> date | None:
    if isinstance(value, date):
        return value
    if isinstance(value, str) and value:
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    return None


def tick_run_name() -> str:
    """``<pipeline> <date> <time>``, plus ``for <day>`` when the run enrolls another day."""
    from prefect.runtime import flow_run

    params = flow_run.parameters
    now = datetime.now().astimezone()
    name = f"{pipeline_label(str(params.get('pipeline')))} {now:%Y-%m-%d %H:%M:%S}"
    day = _day(params.get("day"))
    return name if day is None or day == now.date() else f"{name} for {day.isoformat()}"


def summary_run_name() -> str:
    """``summary <day>``: the day the summary reports on."""
    from prefect.runtime import flow_run

    day = _day(flow_run.parameters.get("day")) or datetime.now().astimezone().date()
    return f"summary {day.isoformat()}"
