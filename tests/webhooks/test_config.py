"""Where the receiver's secret and reconcile target come from."""

from __future__ import annotations

import pytest
from prefect.blocks.system import Secret
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.settings import Settings
from flows.testing import in_process_reconciles_taken
from flows.webhooks import receiver as webhooks
from flows.webhooks.receiver import (
    ReconcileBusy,
    reconcile_deployment,
    resolve_secret,
    start_reconcile,
)
from ledger import Ledger, redact

from .conftest import SECRET, signed


def test_secret_from_env_is_registered_for_redaction() -> None:
    """LEDGER_WEBHOOK_SECRET is used, and from then on redact() hides it in any message."""
    assert resolve_secret(Settings.given(LEDGER_WEBHOOK_SECRET=SECRET)) == SECRET
    assert SECRET not in redact(f"failed with {SECRET} in the url")
    assert SECRET.removeprefix("whsec_") not in redact(f"raw {SECRET.removeprefix('whsec_')}")


def test_secret_from_a_prefect_secret_block(prefect_api: str, sqlite_url: str) -> None:
    """LEDGER_WEBHOOK_SECRET_BLOCK names a Secret block; the app built from it verifies."""
    Secret(value=SECRET).save("gl-webhook-secret-test", overwrite=True)
    settings = Settings.given(
        LEDGER_WEBHOOK_SECRET_BLOCK="gl-webhook-secret-test", database_url=sqlite_url
    )
    assert resolve_secret(settings) == SECRET
    from starlette.testclient import TestClient

    calls: list[str] = []
    ledger = Ledger(sqlite_url)
    ledger.reserve(pipeline="hooks", limit=1, reservation="r-block", batch_model="m")
    ledger.bind_batch("r-block", name="batches/from-block")
    ledger.dispose()
    app = webhooks.create_app(settings, on_batch_complete=calls.append)
    body = '{"type": "batch.succeeded", "data": {"name": "batches/from-block"}}'
    with TestClient(app) as client:
        assert client.post("/webhook", content=body, headers=signed(body)).status_code == 200
    assert calls == ["batches/from-block"]


def test_no_secret_is_a_clear_error() -> None:
    """With neither setting the receiver refuses to start, naming both settings."""
    with pytest.raises(ValueError, match="LEDGER_WEBHOOK_SECRET_BLOCK"):
        resolve_secret(Settings.given())


def test_reconcile_deployment_needs_both_a_server_and_a_name(prefect_api: str) -> None:
    """The deployment name is completed with the reconcile flow; no name means in process."""
    assert reconcile_deployment(Settings.given()) is None
    named = Settings.given(LEDGER_RECONCILE_DEPLOYMENT="webhook")
    assert reconcile_deployment(named) == "reconcile/webhook"
    full = Settings.given(LEDGER_RECONCILE_DEPLOYMENT="reconcile/nightly-webhook")
    assert reconcile_deployment(full) == "reconcile/nightly-webhook"
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert reconcile_deployment(named) is None


def test_busy_in_process_reconcile_refuses_to_start() -> None:
    """With every in-process slot taken nothing starts: ReconcileBusy, delivery unprocessed."""
    with in_process_reconciles_taken() as taken, pytest.raises(ReconcileBusy):
        start_reconcile("batches/too-many", Settings.given())
    assert taken > 0  # the refusal came from the bound, not from a missing semaphore
