"""The free checks without a Prefect server: settings, the ledger, pipelines and the API key."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from emulator.testing import free_port
from flows.ops.doctor import Outcome, run_checks
from flows.testing import (
    check_api_key,
    check_ledger,
    check_pipelines,
    check_prefect,
    check_prices,
    check_settings,
)
from ledger import Ledger, NewJob, make_engine


def test_a_missing_sqlite_ledger_fails_and_is_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger file that does not exist is named with `db upgrade` as the fix, not created."""
    path = tmp_path / "ledger.db"
    monkeypatch.setenv("LEDGER_DATABASE_URL", f"sqlite:///{path}")
    (check,) = check_ledger()
    assert (check.outcome, check.fix) == (Outcome.FAIL, "gemini-ledger db upgrade")
    assert not path.exists()


def test_an_unmigrated_ledger_fails_and_a_migrated_one_passes(
    unmigrated_ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty database is not migrated; after the upgrade it is reachable, migrated, writable."""
    ledger_url = unmigrated_ledger_url
    monkeypatch.setenv("LEDGER_DATABASE_URL", ledger_url)
    make_engine(ledger_url).connect().close()  # an empty database (SQLite: an empty file)
    checks = {c.name: c for c in check_ledger()}
    assert checks["ledger migrated"].outcome is Outcome.FAIL
    assert checks["ledger migrated"].fix == "gemini-ledger db upgrade"
    ledger = Ledger(ledger_url, create=True)
    assert [c.outcome for c in check_ledger()] == [Outcome.OK] * 3
    assert sum(ledger.counts().by_status.values()) == 0  # the probe write was rolled back
    ledger.dispose()


def test_bad_settings_are_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A setting that would fail a run at night fails the settings check, naming it."""
    monkeypatch.setenv("GEMINI_LEDGER_DIRECT_BACKOFF_S", "soon")
    monkeypatch.setenv("GEMINI_LEDGER_RECONCILE_WRITER", "fast")
    check = check_settings()
    assert check.outcome is Outcome.FAIL
    assert "GEMINI_LEDGER_DIRECT_BACKOFF_S" in check.detail
    assert "GEMINI_LEDGER_RECONCILE_WRITER" in check.detail


def test_pipelines_that_do_not_import_or_are_misnamed_fail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A module:attr that does not import, and a configured name that is not the pipeline's."""
    monkeypatch.setenv("GEMINI_LEDGER_PIPELINES", "labels=flows.examples.reviews:pipeline")
    checks = {c.name: c for c in check_pipelines(["no_such_module:pipeline"])}
    assert checks["pipeline reviews"].outcome is Outcome.OK
    assert checks["pipeline labels"].outcome is Outcome.FAIL
    assert "reviews=flows.examples.reviews:pipeline" in checks["pipeline labels"].fix
    assert checks["pipeline no_such_module:pipeline"].outcome is Outcome.FAIL


def test_no_key_anywhere_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a Prefect server and no key in the environment, the fix says where to put it."""
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    check = check_api_key()
    assert check.outcome is Outcome.FAIL
    assert "GEMINI_API_KEY" in check.fix


def test_a_key_with_a_stray_quote_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key pasted with quotes around it is not well-formed."""
    monkeypatch.setenv("GEMINI_API_KEY", '"AIzaSyExampleExampleExampleExample123"')
    assert check_api_key().outcome is Outcome.FAIL


def test_an_unreachable_prefect_api_fails_with_its_fix() -> None:
    """PREFECT_API_URL pointing at nothing: one failing check, and nothing else asked of it."""
    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        checks = check_prefect()
    assert [(c.name, c.outcome) for c in checks] == [("prefect api", Outcome.FAIL)]
    assert "prefect server start" in checks[0].fix


def test_without_a_prefect_server_it_says_a_temporary_one_would_be_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No PREFECT_API_URL is a warning that names the temporary server, not a failure."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", f"sqlite:///{tmp_path / 'l.db'}")
    Ledger(f"sqlite:///{tmp_path / 'l.db'}", create=True).dispose()
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # Another test in this process may have started Prefect's test server: unset it here.
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        checks = {c.name: c for c in run_checks([])}
    assert checks["prefect api"].outcome is Outcome.WARN
    assert "temporary" in checks["prefect api"].detail
    assert not [c for c in checks.values() if c.outcome is Outcome.FAIL]


def test_the_webhook_secret_is_optional_but_checked_when_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unset: skipped; a valid whsec_ secret: ok; one that is not base64: fails with its fix."""
    from flows.testing import check_webhook_secret
    from tests.webhooks.signing import SECRET

    assert check_webhook_secret().outcome is Outcome.SKIP
    monkeypatch.setenv("LEDGER_WEBHOOK_SECRET", SECRET)
    assert check_webhook_secret().outcome is Outcome.OK
    monkeypatch.setenv("LEDGER_WEBHOOK_SECRET", "whsec_not base64!")
    bad = check_webhook_secret()
    assert bad.outcome is Outcome.FAIL
    assert "not base64" not in bad.detail  # the secret itself is never echoed
    assert bad.fix.startswith("gemini-ledger secret set webhook-secret")


def test_an_unpriced_model_is_a_warning_that_names_it_and_its_rows(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipeline's model or a model with rows in the ledger that the price table lacks is a
    warning naming the model and its rows; the examples' models are all priced."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    monkeypatch.delenv("LEDGER_PRICES_FILE", raising=False)
    assert check_prices([]).outcome is Outcome.OK
    ledger = Ledger(sqlite_url)
    ledger.enroll(
        [NewJob(f"k{i}", {}) for i in range(3)], pipeline="x", channel="batch", model="m1"
    )
    ledger.dispose()
    check = check_prices(["tests.doctor.pipelines:unknown_model"])
    assert check.outcome is Outcome.WARN
    assert "unpriced: model m1, 3 rows; model no-such-model, 0 rows" in check.detail
    assert "LEDGER_PRICES_FILE" in check.fix
