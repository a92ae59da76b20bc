"""What the tests and benches may reach inside ``flows`` beyond its public names.

``flows``'s public surface is what a user writes against (``flows.Pipeline``, ``flows.tick``,
``flows.replay``, ... and their ``__all__``). The tests and the benches also drive single
steps of a channel (write a batch's request file, reconcile an output file, deliver done
rows, judge one interaction), run one doctor check, or turn a knob a night would take too
long to reach; this module names those parts, so that a test or bench never imports a
private ``flows._x`` module or a ``_name`` (``tests/test_private_imports.py`` holds it).
Nothing in ``flows`` imports this module, and nothing here is for pipelines: these names may
change with the code they reach.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flows import _caches
from flows import _caches as process_caches
from flows._ledger import open_ledger
from flows._prefect_api import PrefectApiUnreachable, TemporaryServerError
from flows.channels import batch as _batch
from flows.channels._batch_files import FILES_KEPT_S, clean_files
from flows.channels._batch_io import (
    RequestWriter,
    batch_request,
    create_batch_job,
    download_output,
    iter_lines,
    output_file_of,
    upload_requests,
    write_requests,
)
from flows.channels._batch_lost import SUBMITTED_ENV, lost_reason
from flows.channels._batch_reconcile import DEFAULT_CHUNK, reconcile_lines, writer_for
from flows.channels._channel import RunContext, TickOptions
from flows.channels._interactions import (
    LABEL_KEY,
    RUNNING,
    Handle,
    create_kwargs,
    fetch_json,
    judge,
    label_value,
    output_text,
    poll_all,
    usage_of,
)
from flows.channels.batch import _inlined_lines as inlined_lines
from flows.channels.batch import _Lease as BatchLease
from flows.channels.batch import _reservation_token as reservation_token
from flows.channels.batch import _send as send_batch
from flows.channels.direct import _config as direct_config
from flows.gemini import gateway as _gateway
from flows.gemini._api_settings import ApiSettingsMismatch, key_digest, normalized_base_url
from flows.gemini._errors import (
    certainly_refused,
    classify,
    describe,
    http_code,
    is_not_found,
    may_have_been_carried_out,
    setup_fault,
)
from flows.gemini._pricing import UsageLine, estimate_cost, load_prices
from flows.ops._halt_history import HaltHistory, read_halts
from flows.ops._trend import NIGHTS as TREND_NIGHTS
from flows.ops._trend import build_trend, night_bounds, sparkline, trend_lines
from flows.ops.doctor._live import explain
from flows.ops.doctor._local import (
    check_api_key,
    check_api_settings,
    check_ledger,
    check_pipelines,
    check_prices,
    check_settings,
    check_webhook_secret,
)
from flows.ops.doctor._prefect import check_prefect
from flows.run._budget import (
    BUDGET_EVENT,
    REFRESH_EVERY_S,
    Budget,
    local_prompt_tokens,
    night_cost,
)
from flows.run._deliver import (
    DELIVERY_CAP_ENV,
    DeliveryPoints,
    deliver_done,
    enroll_day,
)
from flows.run._halt import HALTED_EVENT, halts, resource_id
from flows.run._prefix_cache import CACHE_STALE_S, cache_display_name, clean_caches
from flows.run._progress import EVERY_POINTS as PROGRESS_EVERY_POINTS
from flows.run._progress import EVERY_S as PROGRESS_EVERY_S
from flows.run._progress import Publisher as ProgressPublisher
from flows.run._progress import TickProgress
from flows.run._stop import (
    Stopped,
    raise_if_stopped,
    request_stop,
    stop_on_signals,
    stop_requested,
)
from flows.run._upload_rows import UPLOAD_STALE_S, clean_uploads
from flows.run._uploads import display_name_of as upload_display_name
from flows.webhooks import _app as _webhook_app
from flows.webhooks import receiver as _webhooks

__all__ = [
    "BUDGET_EVENT",
    "CACHE_STALE_S",
    "DEFAULT_CHUNK",
    "DELIVERY_CAP_ENV",
    "FILES_KEPT_S",
    "HALTED_EVENT",
    "LABEL_KEY",
    "PROGRESS_EVERY_POINTS",
    "PROGRESS_EVERY_S",
    "REFRESH_EVERY_S",
    "RUNNING",
    "SUBMITTED_ENV",
    "TREND_NIGHTS",
    "UPLOAD_STALE_S",
    "ApiSettingsMismatch",
    "BatchLease",
    "Budget",
    "DeliveryPoints",
    "HaltHistory",
    "Handle",
    "PrefectApiUnreachable",
    "ProgressPublisher",
    "RequestWriter",
    "RunContext",
    "Stopped",
    "TemporaryServerError",
    "TickOptions",
    "TickProgress",
    "UsageLine",
    "batch_request",
    "batches_per_tick",
    "build_trend",
    "cache_display_name",
    "certainly_refused",
    "check_api_key",
    "check_api_settings",
    "check_ledger",
    "check_pipelines",
    "check_prefect",
    "check_prices",
    "check_settings",
    "check_webhook_secret",
    "classify",
    "clean_caches",
    "clean_files",
    "clean_uploads",
    "create_batch_job",
    "create_kwargs",
    "deadline_clock",
    "deliver_done",
    "describe",
    "direct_client",
    "direct_config",
    "download_output",
    "enroll_day",
    "estimate_cost",
    "explain",
    "fetch_json",
    "forget_api_keys",
    "halts",
    "http_code",
    "in_process_reconciles_taken",
    "inlined_lines",
    "is_not_found",
    "iter_lines",
    "judge",
    "key_digest",
    "label_value",
    "load_prices",
    "local_prompt_tokens",
    "lost_reason",
    "may_have_been_carried_out",
    "night_bounds",
    "night_cost",
    "normalized_base_url",
    "open_ledger",
    "output_file_of",
    "output_text",
    "poll_all",
    "process_caches",
    "raise_if_stopped",
    "read_halts",
    "reconcile_lines",
    "request_stop",
    "reservation_token",
    "resource_id",
    "send_batch",
    "setup_fault",
    "sparkline",
    "stop_on_signals",
    "stop_requested",
    "tick_params",
    "trend_lines",
    "upload_display_name",
    "upload_requests",
    "usage_of",
    "webhook_verify_wrapped",
    "write_requests",
    "writer_for",
]


@contextmanager
def batches_per_tick(limit: int) -> Iterator[None]:
    """Within the block, a batch tick creates at most ``limit`` jobs (the backlog waits)."""
    kept = _batch._MAX_BATCHES_PER_TICK
    _batch._MAX_BATCHES_PER_TICK = limit
    try:
        yield
    finally:
        _batch._MAX_BATCHES_PER_TICK = kept


@contextmanager
def deadline_clock(clock: Callable[[], float]) -> Iterator[None]:
    """Within the block, a batch tick reads its deadline against ``clock`` (epoch seconds):
    a morning comes without waiting for it."""
    from flows.channels._deadline import set_clock

    set_clock(clock)
    try:
        yield
    finally:
        set_clock(None)


@contextmanager
def webhook_verify_wrapped(
    wrap: Callable[[Callable[..., Any]], Callable[..., Any]],
) -> Iterator[None]:
    """Within the block, the receiver checks signatures with ``wrap(verify)`` instead (to
    hold a delivery inside its signature check, say)."""
    real = _webhook_app.verify
    _webhook_app.verify = wrap(real)
    try:
        yield
    finally:
        _webhook_app.verify = real


def forget_api_keys() -> None:
    """Forget what the process remembered (``flows._caches.reset``): the key the gateway
    read and the clients built with it, so the next call reads the key from where it is
    kept now."""
    _caches.reset()


def direct_client() -> Any:
    """The client a direct run with this process's settings calls with (the gateway's one)."""
    from flows.settings import load_settings

    return _gateway.shared_client(load_settings())


@contextmanager
def in_process_reconciles_taken() -> Iterator[int]:
    """Within the block every slot of the receiver's in-process reconciles is taken (a new
    one is refused with ``ReconcileBusy``); yields how many slots there are."""
    taken = 0
    try:
        while _webhooks._in_process.acquire(blocking=False):
            taken += 1
        yield taken
    finally:
        for _ in range(taken):
            _webhooks._in_process.release()


def tick_params(given: list[str]) -> dict[str, str]:
    """``gemini-ledger tick --param NAME=VALUE`` options as the run's params (``UsageError``
    for a malformed one). Imported here on call: the CLI registers every command on import."""
    from flows.cli._run import _params

    return _params(given)
