"""The webhook receiver: Gemini's completion webhooks start ``reconcile`` for the finished job.

``gemini-ledger webhook serve --port P`` serves :func:`create_app`. Settings (environment):

- ``LEDGER_WEBHOOK_SECRET``: the signing secret (``whsec_...``), or
- ``LEDGER_WEBHOOK_SECRET_BLOCK``: the name of a Prefect ``Secret`` block holding it;
- ``LEDGER_RECONCILE_DEPLOYMENT``: the reconcile deployment (``reconcile/<name>`` or just
  ``<name>``); with a Prefect API configured (``PREFECT_API_URL``), a finished batch starts a
  run of it; otherwise ``flows.reconcile.reconcile`` runs in this process, in a thread;
- ``LEDGER_DATABASE_URL``: the ledger where deliveries are recorded by ``webhook-id``;
- ``LEDGER_WEBHOOK_MAX_BODY_BYTES``: the largest body accepted (default 1 MiB); a larger one
  is refused with 413 before it is read;
- ``GOOGLE_GEMINI_BASE_URL`` and the Gemini API key (as a worker finds it): reconciling in
  process, the receiver polls the API itself, so it refuses to start when they differ from
  what the workers recorded when they bound their batch jobs (``flows.gemini._api_settings``).

The webhook is a shortcut, not the source of truth: a lost or refused delivery only means
the next scheduled batch tick finds the finished job by polling.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from starlette.applications import Starlette

from flows._ledger import open_ledger
from flows.errors import UsageError
from flows.webhooks._app import build_app
from ledger import TransientError, register_secret

__all__ = [
    "RECONCILE_FLOW",
    "ReconcileBusy",
    "create_app",
    "max_body_bytes",
    "reconcile_deployment",
    "resolve_secret",
    "serve",
    "start_reconcile",
]

log = logging.getLogger("gemini_ledger.webhooks")

# The flow name of flows.reconcile:reconcile; a deployment is addressed as "<flow>/<deployment>".
RECONCILE_FLOW = "reconcile"

# In-process reconciles still running; bounded so a burst of webhooks cannot start
# hundreds of flows in one process (the rest are left to the next tick).
_MAX_IN_PROCESS = 4
_in_process = threading.BoundedSemaphore(_MAX_IN_PROCESS)


class ReconcileBusy(TransientError, RuntimeError):
    """Too many in-process reconciles already running; the next tick will reconcile this job."""


def resolve_secret() -> str:
    """The signing secret from LEDGER_WEBHOOK_SECRET, else from the Prefect Secret block."""
    secret = os.environ.get("LEDGER_WEBHOOK_SECRET", "").strip()
    if not secret:
        block = os.environ.get("LEDGER_WEBHOOK_SECRET_BLOCK", "").strip()
        if not block:
            raise UsageError(
                "no webhook secret: set LEDGER_WEBHOOK_SECRET or LEDGER_WEBHOOK_SECRET_BLOCK"
                " (the name of a Prefect Secret block)"
            )
        from prefect.blocks.system import Secret

        value = Secret.load(block).get()  # type: ignore[union-attr]
        if not isinstance(value, str) or not value.strip():
            raise UsageError(f"the Prefect Secret block {block!r} does not hold a string")
        secret = value.strip()
    # From here on, ledger.redact hides it in any message that might echo it.
    register_secret(secret)
    if secret.startswith("whsec_"):
        register_secret(secret[len("whsec_") :])
    return secret


def max_body_bytes() -> int:
    """LEDGER_WEBHOOK_MAX_BODY_BYTES (a positive whole number of bytes), default 1 MiB."""
    from flows.settings import load_settings

    return load_settings().webhook_max_body_bytes


def reconcile_deployment() -> str | None:
    """``reconcile/<name>`` with a Prefect API and LEDGER_RECONCILE_DEPLOYMENT set, else None."""
    name = os.environ.get("LEDGER_RECONCILE_DEPLOYMENT", "").strip()
    if not name:
        return None
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        return None
    return name if "/" in name else f"{RECONCILE_FLOW}/{name}"


def start_reconcile(job_name: str) -> None:
    """Start ``reconcile`` for one batch job: a deployment run, or a flow in a thread here."""
    deployment = reconcile_deployment()
    if deployment is not None:
        from prefect.deployments import run_deployment

        # timeout=0: create the run and return; a worker on the pool picks it up.
        run = run_deployment(
            deployment,
            parameters={"job_name": job_name},
            flow_run_name=f"reconcile {job_name} (webhook)",
            timeout=0,
            as_subflow=False,
        )
        # Called from a worker thread (no event loop), so this is the sync FlowRun.
        log.info(
            "reconcile of %s: flow run %s of %s", job_name, getattr(run, "id", "?"), deployment
        )
        return
    if not _in_process.acquire(blocking=False):
        # Raised so the delivery stays unprocessed in the ledger: nothing was started.
        raise ReconcileBusy(f"{_MAX_IN_PROCESS} in-process reconciles already running")
    thread = threading.Thread(
        target=_reconcile_here, args=(job_name,), name=f"reconcile-{job_name}", daemon=True
    )
    thread.start()


def _reconcile_here(job_name: str) -> None:
    try:
        from flows.reconcile import reconcile

        reconcile(job_name=job_name)
    except Exception as exc:
        log.error("in-process reconcile of %s failed (%s)", job_name, type(exc).__name__)
    finally:
        _in_process.release()


def create_app(
    *,
    secret: str | None = None,
    ledger_url: str | None = None,
    on_batch_complete: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.time,
    max_body: int | None = None,
) -> Starlette:
    """The receiver's ASGI app.

    ``secret`` defaults to :func:`resolve_secret`, ``ledger_url`` to LEDGER_DATABASE_URL,
    ``on_batch_complete`` (called with ``batches/ID`` after the response is sent) to
    :func:`start_reconcile`; ``clock`` (epoch seconds) is what the timestamp is checked against;
    ``max_body`` (bytes) defaults to :func:`max_body_bytes`. Reconciling in process (no
    reconcile deployment), it raises :class:`flows.gemini._api_settings.ApiSettingsMismatch` when
    this process's Gemini API differs from the workers'.
    """
    from flows.gemini._api_settings import refuse_if_mismatched
    from flows.settings import load_settings

    # Settings first: a bad value stops the receiver before it resolves any secret.
    settings = load_settings()
    limit = settings.webhook_max_body_bytes if max_body is None else max_body
    if secret is None:
        secret = resolve_secret()
    else:
        register_secret(secret)
    ledger = open_ledger(ledger_url)
    if reconcile_deployment() is None:
        # Reconciling here means polling the API from here: with another base URL or key
        # than the workers', every job this ledger bound would answer 404.
        refuse_if_mismatched(ledger, settings)
    return build_app(
        secret=secret,
        ledger=ledger,
        on_batch_complete=on_batch_complete or start_reconcile,
        clock=clock,
        max_body_bytes=limit,
    )


def serve(*, host: str = "127.0.0.1", port: int = 8780) -> None:
    """Serve the receiver with uvicorn until interrupted (blocking)."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    app = create_app()
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
