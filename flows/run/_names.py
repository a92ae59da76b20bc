"""Flow run names a person can read in the UI's list: what ran, for which day, and when.

``reviews 2026-11-29 02:00:13``: the pipeline's own name (for ``module:attr`` pipelines too,
never the attribute), then the local date and time of the run to the second, so two ticks a
minute apart are told apart; a tick for another day than today says so.

Prefect asks for the name (``flow_run_name``) only once the run's parameters validated; a run
whose parameters it refuses (``day: 2026-02-31``) would end Failed under the random name the
server gave it. :func:`name_refused_run` is the flows' ``on_failure`` hook that names such a
run from the parameters it was given, so the Failed run says which pipeline it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.flows import FlowStateHook

__all__ = [
    "name_refused_run",
    "pipeline_label",
    "reconcile_name",
    "replay_name",
    "run_name",
    "slug",
    "summary_name",
    "tick_name",
]

#: A run's name from its parameters (as given, or as the flow validated them).
Namer = Callable[[Mapping[str, Any]], str]

# The flow runs this process has named. A run whose parameters Prefect refuses ends Failed
# before its flow_run_name is asked for; its on_failure hook names it from this.
_named: set[str] = set()


def pipeline_label(spec: str) -> str:
    """The pipeline's own name for a name or ``module:attr`` spec (the spec if it won't load)."""
    from flows.registry import load_spec

    try:
        return load_spec(spec).name  # a plain name is the pipeline's own
    except Exception:  # a name only: the run itself reports why the pipeline does not load
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


def tick_name(params: Mapping[str, Any]) -> str:
    """``<pipeline> <date> <time>``, plus ``for <day>`` when the run enrolls another day (or
    was given a day that is none)."""
    now = datetime.now().astimezone()
    name = f"{pipeline_label(str(params.get('pipeline') or 'tick'))} {now:%Y-%m-%d %H:%M:%S}"
    given = params.get("day")
    day = _day(given)
    if day is None:
        return name if given is None else f"{name} for {given}"
    return name if day == now.date() else f"{name} for {day.isoformat()}"


def summary_name(params: Mapping[str, Any]) -> str:
    """``summary <day>``: the day the summary reports on."""
    day = _day(params.get("day")) or datetime.now().astimezone().date()
    return f"summary {day.isoformat()}"


def replay_name(params: Mapping[str, Any]) -> str:
    """``replay <dry run|execute> <pipeline> <error class> (limit N)``."""
    mode = "execute" if params.get("execute") is True else "dry run"
    scope = (
        " ".join(str(v) for v in (params.get("pipeline"), params.get("error_class")) if v) or "all"
    )
    return f"replay {mode} {scope} (limit {params.get('limit', 20)})"


def reconcile_name(params: Mapping[str, Any]) -> str:
    """``reconcile-<batch id>``: the batch job it reconciles."""
    return f"reconcile-{str(params.get('job_name')).removeprefix('batches/')}"


def run_name(namer: Namer) -> Callable[[], str]:
    """A ``flow_run_name`` callable: the run's name from its parameters."""

    def name() -> str:
        from prefect.runtime import flow_run

        _named.add(str(flow_run.id))
        return namer(flow_run.parameters)

    name.__name__ = namer.__name__
    return name


def name_refused_run(namer: Namer) -> FlowStateHook[..., Any]:
    """An ``on_failure`` hook: a run that failed before it was named (Prefect refused its
    parameters) is named from the parameters it was given, not left with a random name."""

    def hook(flow: Any, flow_run: Any, state: Any) -> None:
        if str(flow_run.id) in _named:
            return
        from prefect.client.orchestration import get_client

        name = namer(dict(flow_run.parameters or {}))
        with get_client(sync_client=True) as client:
            client.set_flow_run_name(flow_run.id, name=name)
        _named.add(str(flow_run.id))

    hook.__name__ = f"name_refused_{namer.__name__}"
    named: FlowStateHook[..., Any] = hook
    return named
