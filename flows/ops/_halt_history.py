"""The setup halts of the last day, read back from the Prefect API's events, for the summary.

A halted tick emits ``gemini-ledger.channel.halted`` (see :mod:`flows.run._halt`); a halt is
news in the morning only when it lasted: how many ticks of a pipeline's channel halted,
since when, the last cause and its fix, and whether a later tick of that channel completed.
The events are the record (the ledger holds rows, not ticks). A later success is a
Completed run of the channel's tick flow for the same pipeline that started after the last
halt. With no Prefect API reachable the history says it could not be read: the summary
never fails for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flows.run._halt import HALTED_EVENT
from ledger import Channel

__all__ = ["WINDOW", "HaltHistory", "HaltedChannel", "read_halts", "summarise"]

WINDOW = timedelta(hours=24)
_EVENTS_PAGE = 50  # the API's most per page
_RUNS_LIMIT = 200
_RESOURCE_PREFIX = "gemini-ledger.pipeline."

# The flow whose Completed run of the pipeline means its channel worked again after a halt.
_TICK_FLOW = "tick"


@dataclass(frozen=True)
class HaltedChannel:
    """The halts of one pipeline's channel within the window."""

    pipeline: str
    channel: str
    ticks: int
    first: datetime
    last: datetime
    kind: str
    cause: str
    fix: str
    recovered: bool | None  # None: could not tell

    def as_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "channel": self.channel,
            "ticks": self.ticks,
            "since": self.first.isoformat(timespec="seconds"),
            "last": self.last.isoformat(timespec="seconds"),
            "kind": self.kind,
            "cause": self.cause,
            "fix": self.fix,
            "recovered": self.recovered,
        }


@dataclass(frozen=True)
class HaltHistory:
    """The halts read, or why they could not be read."""

    halts: list[HaltedChannel]
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "readable": self.error is None,
            "error": self.error,
            "channels": [h.as_dict() for h in self.halts],
        }


def _parse_resource(resource_id: str) -> tuple[str, str] | None:
    """``gemini-ledger.pipeline.<name>.channel.<channel>`` -> (name, channel)."""
    if not resource_id.startswith(_RESOURCE_PREFIX):
        return None
    name, sep, channel = resource_id[len(_RESOURCE_PREFIX) :].rpartition(".channel.")
    return (name, channel) if sep and name and channel else None


def summarise(events: Iterable[Any]) -> list[HaltedChannel]:
    """Group halted events by pipeline and channel (recovered left unknown)."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for event in events:
        key = _parse_resource(event.resource.id)
        if key is not None:
            groups.setdefault(key, []).append(event)
    out = []
    for (pipeline, channel), group in sorted(groups.items()):
        group.sort(key=lambda e: e.occurred)
        last = group[-1]
        payload = last.payload or {}
        out.append(
            HaltedChannel(
                pipeline=pipeline,
                channel=channel,
                ticks=len(group),
                first=group[0].occurred,
                last=last.occurred,
                kind=str(payload.get("kind", "")),
                cause=str(payload.get("cause", "")),
                fix=str(payload.get("fix", "")),
                recovered=None,
            )
        )
    return out


def _read_events(client: Any, since: datetime) -> list[Any]:
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    page = client.read_events(
        filter=EventFilter(
            event=EventNameFilter(name=[HALTED_EVENT]),
            occurred=EventOccurredFilter.model_validate({"since": since}),  # coerced to its type
        ),
        limit=_EVENTS_PAGE,
    )
    events = list(page.events)
    while page.next_page:
        page = client.read_events_page(str(page.next_page))
        events += page.events
    return events


def _recovered(client: Any, halt: HaltedChannel) -> bool | None:
    """A Completed run of the channel's tick flow for this pipeline started after the halt."""
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    from flows.run._names import pipeline_label

    if halt.channel not in set(Channel):
        return None
    runs = client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[_TICK_FLOW])),
        flow_run_filter=FlowRunFilter(
            start_time=FlowRunFilterStartTime.model_validate({"after_": halt.last}),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED])),
        ),
        limit=_RUNS_LIMIT,
    )
    return any(
        pipeline_label(str((run.parameters or {}).get("pipeline"))) == halt.pipeline for run in runs
    )


def read_halts(since: datetime | None = None) -> HaltHistory:
    """The halts since ``since`` (default: the last :data:`WINDOW`); an unreadable API is
    said, never raised."""
    since = since or datetime.now(UTC) - WINDOW
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:  # never start a temporary server just to read
        return HaltHistory([], error="no Prefect API configured (PREFECT_API_URL is unset)")
    try:
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

        # A report is not worth minutes of backoff: one try, and say what went wrong.
        with (
            temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 0}),
            get_client(sync_client=True) as client,
        ):
            halts = summarise(_read_events(client, since))
            halts = [
                HaltedChannel(**{**h.__dict__, "recovered": _recovered(client, h)}) for h in halts
            ]
    except Exception as exc:  # any failure to reach or read the API: say so, go on
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        return HaltHistory([], error=f"the Prefect API could not be read: {reason}")
    return HaltHistory(halts)
