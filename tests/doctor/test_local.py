"""The free checks without a Prefect server: settings, the ledger, pipelines and the API key."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from emulator.testing import free_port
from flows.ops.doctor import Outcome, run_checks
from flows.settings import Settings, load_settings_reporting
from flows.testing import (
    check_api_key,
    check_ledger,
    check_pipelines,
    check_prefect,
    check_prices,
    check_settings,
)
from ledger import Ledger, NewJob, make_engine
from tests.child_env import child_env


def test_a_missing_sqlite_ledger_fails_and_is_not_created(tmp_path: Path) -> None:
    """A ledger file that does not exist is named with `db upgrade` as the fix, not created."""
    path = tmp_path / "ledger.db"
    (check,) = check_ledger(Settings.given(database_url=f"sqlite:///{path}"))
    assert (check.outcome, check.fix) == (Outcome.FAIL, "gemini-ledger db upgrade")
    assert not path.exists()


def test_an_unmigrated_ledger_fails_and_a_migrated_one_passes(unmigrated_ledger_url: str) -> None:
    """An empty database is not migrated; after the upgrade it is reachable, migrated, writable."""
    ledger_url = unmigrated_ledger_url
    settings = Settings.given(database_url=ledger_url)
    make_engine(ledger_url).connect().close()  # an empty database (SQLite: an empty file)
    checks = {c.name: c for c in check_ledger(settings)}
    assert checks["ledger migrated"].outcome is Outcome.FAIL
    assert checks["ledger migrated"].fix == "gemini-ledger db upgrade"
    ledger = Ledger(ledger_url, create=True)
    assert [c.outcome for c in check_ledger(settings)] == [Outcome.OK] * 3
    assert sum(ledger.counts().by_status.values()) == 0  # the probe write was rolled back
    ledger.dispose()


def test_bad_settings_are_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A setting that would fail a run at night fails the settings check, naming it; the
    other checks run on its default."""
    monkeypatch.setenv("GEMINI_LEDGER_DIRECT_BACKOFF_S", "soon")  # what doctor reads
    monkeypatch.setenv("GEMINI_LEDGER_RECONCILE_WRITER", "fast")
    settings, problems = load_settings_reporting()
    check = check_settings(settings, problems)
    assert check.outcome is Outcome.FAIL
    assert "GEMINI_LEDGER_DIRECT_BACKOFF_S" in check.detail
    assert "GEMINI_LEDGER_RECONCILE_WRITER" in check.detail
    assert (settings.direct_backoff_s, settings.reconcile_writer) == (2.0, "auto")


def test_doctor_reports_a_bad_setting_as_a_finding(tmp_path: Path) -> None:
    """`gemini-ledger doctor` with GEMINI_LEDGER_BATCH_REFUSED_HALT=abc: a failing settings
    check naming the variable, and the other checks still run (every other command refuses
    to start on it)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = child_env(drop=lambda k: k.startswith("PREFECT_API"))
    env |= {
        "GEMINI_LEDGER_BATCH_REFUSED_HALT": "abc",
        "LEDGER_DATABASE_URL": f"sqlite:///{tmp_path / 'none.db'}",
        "PYTHONPATH": str(root),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flows.cli", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    doctor = run("doctor", "--json")
    assert doctor.returncode == 1, doctor.stderr[-2000:]
    import json

    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["settings"]["outcome"] == "fail"
    assert "GEMINI_LEDGER_BATCH_REFUSED_HALT" in checks["settings"]["detail"]
    assert checks["ledger"]["outcome"] == "fail"  # the next check ran: no ledger there
    status = run("status")
    assert status.returncode == 1 and "GEMINI_LEDGER_BATCH_REFUSED_HALT" in status.stderr


def test_pipelines_that_do_not_import_or_are_misnamed_fail() -> None:
    """A module:attr that does not import, and a configured name that is not the pipeline's."""
    settings = Settings.given(GEMINI_LEDGER_PIPELINES="labels=flows.examples.reviews:pipeline")
    checks = {c.name: c for c in check_pipelines(settings, ["no_such_module:pipeline"])}
    assert checks["pipeline reviews"].outcome is Outcome.OK
    assert checks["pipeline labels"].outcome is Outcome.FAIL
    assert "reviews=flows.examples.reviews:pipeline" in checks["pipeline labels"].fix
    assert checks["pipeline no_such_module:pipeline"].outcome is Outcome.FAIL


def test_no_key_anywhere_fails() -> None:
    """Without a Prefect server and no key in the environment, the fix says where to put it."""
    check = check_api_key(Settings.given())
    assert check.outcome is Outcome.FAIL
    assert "GEMINI_API_KEY" in check.fix


def test_a_key_with_a_stray_quote_fails() -> None:
    """A key pasted with quotes around it is not well-formed."""
    settings = Settings.given(GEMINI_API_KEY='"AIzaSyExampleExampleExampleExample123"')
    assert check_api_key(settings).outcome is Outcome.FAIL


def test_an_unreachable_prefect_api_fails_with_its_fix() -> None:
    """PREFECT_API_URL pointing at nothing: one failing check, and nothing else asked of it."""
    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        checks = check_prefect()
    assert [(c.name, c.outcome) for c in checks] == [("prefect api", Outcome.FAIL)]
    assert "prefect server start" in checks[0].fix


def test_without_a_prefect_server_it_says_a_temporary_one_would_be_used(tmp_path: Path) -> None:
    """No PREFECT_API_URL is a warning that names the temporary server, not a failure."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    settings = Settings.given(database_url=url, GEMINI_API_KEY="test-api-key-not-secret-0000")
    Ledger(url, create=True).dispose()
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # Another test in this process may have started Prefect's test server: unset it here.
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        checks = {c.name: c for c in run_checks([], settings=settings, problems=[])}
    assert checks["prefect api"].outcome is Outcome.WARN
    assert "temporary" in checks["prefect api"].detail
    assert not [c for c in checks.values() if c.outcome is Outcome.FAIL]


def test_the_webhook_secret_is_optional_but_checked_when_set() -> None:
    """Unset: skipped; a valid whsec_ secret: ok; one that is not base64: fails with its fix."""
    from flows.testing import check_webhook_secret
    from tests.webhooks.signing import SECRET

    assert check_webhook_secret(Settings.given()).outcome is Outcome.SKIP
    assert check_webhook_secret(Settings.given(webhook_secret=SECRET)).outcome is Outcome.OK
    bad = check_webhook_secret(Settings.given(webhook_secret="whsec_not base64!"))
    assert bad.outcome is Outcome.FAIL
    assert "not base64" not in bad.detail  # the secret itself is never echoed
    assert bad.fix.startswith("gemini-ledger secret set webhook-secret")


def test_an_unpriced_model_is_a_warning_that_names_it_and_its_rows(sqlite_url: str) -> None:
    """A pipeline's model or a model with rows in the ledger that the price table lacks is a
    warning naming the model and its rows; the examples' models are all priced."""
    settings = Settings.given(database_url=sqlite_url)
    assert check_prices(settings, []).outcome is Outcome.OK
    ledger = Ledger(sqlite_url)
    ledger.enroll(
        [NewJob(f"k{i}", {}) for i in range(3)], pipeline="x", channel="batch", model="m1"
    )
    ledger.dispose()
    check = check_prices(settings, ["tests.doctor.pipelines:unknown_model"])
    assert check.outcome is Outcome.WARN
    assert "unpriced: model m1, 3 rows; model no-such-model, 0 rows" in check.detail
    assert "LEDGER_PRICES_FILE" in check.fix
