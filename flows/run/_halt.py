"""A fault of the setup halts the channel: one place turns it into a Failed run and an event.

Where a channel meets a fault of the setup (``ledger.setup_fault`` recognises it), it gives
back what it reserved and raises :class:`ledger.SetupFault`. :func:`halts` wraps the flows
and their tasks: a task ends Failed with the fault as its result (no traceback logged, the
fault re-raised where the flow calls it); the flow ends Failed with the fault's one line,
logs that line and emits ``gemini-ledger.channel.halted`` for an automation. Calling the
flow raises the fault, which ``gemini-ledger tick`` prints as one line with a non-zero exit.
The next tick simply tries again.

Prefect logs the fault's line again for the task and the flow that ended Failed (with a stray
``NoneType: None``): the run's logs keep those, and :func:`told_once` keeps them off the
console of a command that prints the fault itself, so the fault is printed there once.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import typing
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

from prefect.client.schemas.objects import State
from prefect.events import emit_event
from prefect.states import Failed

from flows.gemini._errors import setup_fault
from flows.run._ending import ended_with
from ledger import SetupFault


class _Run(typing.Protocol):
    """What :func:`preflight` needs of a run's context (``flows.channels.RunContext``)."""

    @property
    def client(self) -> Any: ...


__all__ = ["HALTED_EVENT", "checked", "halts", "preflight", "resource_id", "told_once"]

HALTED_EVENT = "gemini-ledger.channel.halted"

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
_log = logging.getLogger("gemini_ledger.halt")


def resource_id(pipeline: str, channel: str) -> str:
    """The Prefect resource id of one pipeline's channel (what an automation matches)."""
    return f"gemini-ledger.pipeline.{pipeline}.channel.{channel}"


def preflight(ctx: _Run) -> None:
    """What a channel checks before it reserves anything: a key is present, the run's
    client builds."""
    try:
        _ = ctx.client
    except Exception as exc:
        fault = setup_fault(exc)
        if fault is None:
            raise
        raise fault from exc


def checked(value: T) -> T:
    """A task's return value; the task's fault raised again if it halted (a task that ends
    Failed through :func:`halts` hands its flow the Failed state instead of a value)."""
    if isinstance(value, State) and value.is_failed():
        fault = value.result(raise_on_failure=False)
        if isinstance(fault, SetupFault):
            raise fault
        raise RuntimeError(f"task failed: {value.message}")
    return value


def _pipeline_of(func: Callable[..., Any], args: Any, kwargs: Any) -> tuple[str, str | None]:
    """The halted run's pipeline name and channel, from its ``pipeline`` parameter."""
    try:
        spec = inspect.signature(func).bind_partial(*args, **kwargs).arguments.get("pipeline")
        from flows.registry import UnknownPipeline, get_pipeline, load_spec
        from flows.settings import load_settings

        if not spec:
            return "unknown", None
        try:
            p = load_spec(str(spec))
        except UnknownPipeline:
            # A name only the settings or the ledger resolve. The run's context is gone with
            # the run that halted: the flow's boundary reads the settings again.
            p = get_pipeline(str(spec), load_settings())
        return p.name, str(p.channel)
    except Exception:
        return "unknown", None


def _announce(fault: SetupFault, pipeline: str, channel: str) -> None:
    try:
        from prefect import get_run_logger

        log: Any = get_run_logger()
    except Exception:
        log = _log
    log.error("%s %s channel halted: %s", pipeline, channel, fault)
    try:
        emit_event(
            event=HALTED_EVENT,
            resource={
                "prefect.resource.id": resource_id(pipeline, channel),
                "prefect.resource.name": f"{pipeline} ({channel})",
                "gemini-ledger.pipeline": pipeline,
                "gemini-ledger.channel": channel,
            },
            payload={"kind": fault.kind.value, "cause": fault.cause, "fix": fault.fix},
        )
    except Exception as exc:  # the halt itself must not be lost to an event client error
        log.warning("could not emit %s: %s", HALTED_EVENT, exc)


class _Echoes(logging.Filter):
    """Drops the console records that repeat a halt's line (the command prints it itself)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.lines:
            return True
        try:
            text = record.getMessage()
        except Exception:
            return True
        # A state's repr quotes the line: its escaped form counts as the line too.
        return not any(line in text or repr(line)[1:-1] in text for line in list(self.lines))


_listening: list[_Echoes] = []


def _heard(fault: SetupFault) -> None:
    for echoes in list(_listening):
        echoes.lines.add(str(fault))


@contextlib.contextmanager
def told_once() -> Iterator[None]:
    """While a command runs flows in this process and prints a halt's line itself: keep
    Prefect's echoes of that line (the task's and the flow's Failed state, our own "channel
    halted" record) off the console. The run's logs on the server keep every one."""
    echoes = _Echoes()
    consoles = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    for handler in consoles:
        handler.addFilter(echoes)
    _listening.append(echoes)
    try:
        yield
    finally:
        _listening.remove(echoes)
        for handler in consoles:
            handler.removeFilter(echoes)


def halts(channel: str | None = None, *, flow: bool = False) -> Callable[[F], F]:
    """Decorate a flow (``flow=True``) or task function: a fault of the setup ends it Failed.

    A flow's halt is announced for ``channel``, or for its pipeline's channel when None.
    Any other exception passes through unchanged (bugs keep their traceback).
    """

    def wrap(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except Exception as exc:
                fault = setup_fault(exc)
                if fault is None:
                    raise
            _heard(fault)
            if flow:
                name, own_channel = _pipeline_of(func, args, kwargs)
                _announce(fault, name, channel or own_channel or "unknown")
                ended_with(fault)  # in case the server's answer to Failed loses it
            return Failed(message=str(fault), data=fault)

        # Prefect reads the parameters' types from the wrapper, whose module is this one:
        # give it the annotations resolved where the function was written.
        wrapper.__annotations__ = typing.get_type_hints(func)
        wrapper.__signature__ = inspect.signature(func, eval_str=True)  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return wrap
