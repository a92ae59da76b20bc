"""A receiver whose Gemini API differs from the workers' is refused at start (issue #25 item 3):
a tick that binds a batch job records the API it used (base URL, a digest of the key, never
the key), and the receiver and ``doctor`` compare their own with it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from starlette.testclient import TestClient

from flows.ops.doctor import Outcome
from flows.settings import Settings
from flows.testing import ApiSettingsMismatch, check_api_settings, key_digest, normalized_base_url
from flows.tick import tick
from flows.webhooks import receiver as webhooks
from ledger import Ledger
from tests.batch.conftest import DAY
from tests.child_env import child_env

from .signing import SECRET

SPEC, NAME = "tests.batch.pipelines:small_reviews", "small"
WORKERS_KEY = "test-key"  # what the emulator fixture exports as GEMINI_API_KEY


@pytest.fixture
def bound(
    emulator: Any, prefect_api: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """A ledger in which a real batch tick bound a job at the emulator with the workers' key."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    for name in ("REVIEWS_RESULTS_URL", "LEDGER_RECONCILE_DEPLOYMENT", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    report = tick(pipeline=SPEC, day=DAY)
    assert report.submit.batches, report
    return {"url": sqlite_url, "emulator": emulator}


def _workers(bound: dict[str, Any], **values: Any) -> Settings:
    """The workers' settings (the emulator, their key), with ``values`` changed."""
    given = {
        "database_url": bound["url"],
        "gemini_base_url": bound["emulator"].base_url,
        "api_key": WORKERS_KEY,
    }
    return Settings.given(**{**given, **values})


def _start(settings: Settings) -> None:
    webhooks.create_app(settings, secret=SECRET, on_batch_complete=lambda _: None)


def test_a_receiver_with_another_base_url_is_refused_at_start(
    bound: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another GOOGLE_GEMINI_BASE_URL than the workers': one line naming both URLs and the fix."""
    with pytest.raises(ApiSettingsMismatch) as refused:
        _start(_workers(bound, gemini_base_url="http://user:pw@127.0.0.1:9/v1beta/?x=1"))
    message = str(refused.value)
    assert "\n" not in message and "Fix: start the receiver with the workers'" in message
    assert "base URL http://127.0.0.1:9/v1beta here" in message
    assert f"{normalized_base_url(bound['emulator'].base_url)} for the workers" in message
    assert "pipeline 'small'" in message and "pw" not in message


def test_a_receiver_with_another_key_is_refused_and_the_key_never_reaches_the_ledger(
    bound: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another API key: refused naming where its key came from; the ledger holds a digest only."""
    here = r"the API key here, from GEMINI_API_KEY \(the worker.s environment\), is not"
    with pytest.raises(ApiSettingsMismatch, match=here):
        _start(_workers(bound, api_key="another-projects-key"))
    ledger = Ledger(bound["url"])
    with ledger.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM api_settings")).all()
    assert len(rows) == 1 and WORKERS_KEY not in repr(rows)
    assert rows[0].key_digest == key_digest(WORKERS_KEY)


def test_the_workers_settings_start_and_a_reconcile_deployment_skips_the_check(
    bound: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers' own settings start the receiver; with a reconcile deployment the workers
    poll, not the receiver, so its own API settings do not matter."""
    calls: list[str] = []
    app = webhooks.create_app(_workers(bound), secret=SECRET, on_batch_complete=calls.append)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
    _start(
        _workers(bound, api_key="another-projects-key", reconcile_deployment="reconcile/webhook")
    )


def test_doctor_fails_the_api_settings_check_with_the_fix(
    bound: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """doctor: OK with the workers' settings; another key is a failing check with the fix."""
    assert check_api_settings(_workers(bound)).outcome is Outcome.OK
    check = check_api_settings(_workers(bound, api_key="another-projects-key"))
    assert check.outcome is Outcome.FAIL
    assert "is not the one the workers use" in check.detail
    assert check.fix and "GOOGLE_GEMINI_BASE_URL and API key" in check.fix


def test_webhook_serve_refuses_in_one_line_and_exits_1(
    bound: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``gemini-ledger webhook serve`` with another key: one ``error:`` line, exit 1, no
    traceback, and the port is never opened."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = child_env(
        {
            "GEMINI_API_KEY": "another-projects-key",
            "LEDGER_WEBHOOK_SECRET": SECRET,
            "PYTHONPATH": str(root),
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "webhook", "serve", "--port", "9"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "webhook receiver refused" in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "another-projects-key" not in done.stderr
