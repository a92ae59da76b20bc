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

import functools
import logging
import threading
import time
from collections.abc import Callable

from starlette.applications import Starlette

from flows._ledger import open_ledger
from flows.errors import UsageError
from flows.settings import Settings
from flows.webhooks._app import build_app
from ledger import TransientError, register_secret

__all__ = [
    "RECONCILE_FLOW",
    "ReconcileBusy",
    "create_app",
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


def resolve_secret(settings: Settings) -> str:
    """The signing secret from LEDGER_WEBHOOK_SECRET, else from the Prefect Secret block."""
    given = settings.webhook_secret
    secret = given.get_secret_value().strip() if given is not None else ""
    if not secret:
        block = (settings.webhook_secret_block or "").strip()
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


def reconcile_deployment(settings: Settings) -> str | None:
    """``reconcile/<name>`` with a Prefect API and LEDGER_RECONCILE_DEPLOYMENT set, else None."""
    name = (settings.reconcile_deployment or "").strip()
    if not name:
        return None
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        return None
    return name if "/" in name else f"{RECONCILE_FLOW}/{name}"


def start_reconcile(job_name: str, settings: Settings) -> None:
    """Start ``reconcile`` for one batch job: a deployment run, or a flow in a thread here."""
    deployment = reconcile_deployment(settings)
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
        from flows.run._ending import own_endings

        with own_endings():  # a halt logged as itself, even when Prefect's answer lost it
            reconcile(job_name=job_name)
    except Exception as exc:
        log.error("in-process reconcile of %s failed (%s)", job_name, type(exc).__name__)
    finally:
        _in_process.release()


def create_app(
    settings: Settings,
    *,
    secret: str | None = None,
    on_batch_complete: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The receiver's ASGI app, on the ledger of ``settings`` (loaded once where the receiver
    starts), accepting bodies up to ``settings.webhook_max_body_bytes``.

    ``secret`` defaults to :func:`resolve_secret`, ``on_batch_complete`` (called with
    ``batches/ID`` after the response is sent) to :func:`start_reconcile`; ``clock`` (epoch
    seconds) is what the timestamp is checked against. Reconciling in process (no reconcile
    deployment), it raises :class:`flows.gemini._api_settings.ApiSettingsMismatch` when this
    process's Gemini API differs from the workers'.
    """
    from flows.gemini._api_settings import refuse_if_mismatched

    if secret is None:
        secret = resolve_secret(settings)
    else:
        register_secret(secret)
    ledger = open_ledger(settings.database_url)
    if reconcile_deployment(settings) is None:
        # Reconciling here means polling the API from here: with another base URL or key
        # than the workers', every job this ledger bound would answer 404.
        refuse_if_mismatched(ledger, settings)
    return build_app(
        secret=secret,
        ledger=ledger,
        on_batch_complete=on_batch_complete
        or functools.partial(start_reconcile, settings=settings),
        clock=clock,
        max_body_bytes=settings.webhook_max_body_bytes,
    )


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 8780) -> None:
    """Serve the receiver with uvicorn until interrupted (blocking)."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
