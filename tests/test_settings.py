"""One settings object: validated when a command starts, shown by `gemini-ledger config`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GEMINI_LEDGER_BATCH_STALE_S", "soon"),
        ("GEMINI_LEDGER_DIRECT_BACKOFF_S", "-1"),
        ("GEMINI_LEDGER_DIRECT_STALE_S", "inf"),
        ("GEMINI_LEDGER_DIRECT_JITTER", "nan"),
        ("GEMINI_LEDGER_RECONCILE_WRITER", "fast"),
        ("GEMINI_LEDGER_PIPELINES", "mine=nocolon"),
        ("GEMINI_LEDGER_DAILY_BUDGET_USD", "-1"),
        ("GEMINI_LEDGER_DAILY_BUDGET_USD", "inf"),
    ],
)
def test_a_bad_value_fails_at_start_naming_its_variable(monkeypatch, tmp_path, variable, value):
    """A bad setting stops a command before any work, with one line naming the variable."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 1
    assert variable in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "ledger.db").exists()


def test_config_shows_values_and_sources_with_secrets_masked(monkeypatch):
    """`config --json` gives each variable's value and source; the API key never appears."""
    monkeypatch.setenv("GEMINI_API_KEY", "very-secret-key-123")
    monkeypatch.setenv("GEMINI_LEDGER_BATCH_STALE_S", "60")
    monkeypatch.delenv("GEMINI_LEDGER_DIRECT_STALE_S", raising=False)
    result = CliRunner().invoke(app, ["config", "--json"])
    assert result.exit_code == 0, result.output
    assert "very-secret-key-123" not in result.output
    rows = {r["variable"]: r for r in json.loads(result.stdout)}
    assert rows["GEMINI_LEDGER_BATCH_STALE_S"]["value"] == "60.0"
    assert (
        rows["GEMINI_LEDGER_BATCH_STALE_S"]["source"] == "environment (GEMINI_LEDGER_BATCH_STALE_S)"
    )
    assert rows["GEMINI_LEDGER_DIRECT_STALE_S"] == {
        "variable": "GEMINI_LEDGER_DIRECT_STALE_S",
        "value": "300.0",
        "source": "default",
    }
    assert rows["GEMINI_API_KEY / GOOGLE_API_KEY"]["value"] == "********"


def test_loading_settings_registers_the_secrets_for_redaction(monkeypatch):
    """Secrets become known to redact() when settings load, not when ledger is imported."""
    from ledger import redact

    key, secret = "settings-key-7f3a9c21", "settings-hook-secret-7f3a9c21"
    monkeypatch.setenv("GEMINI_API_KEY", key)
    monkeypatch.setenv("LEDGER_WEBHOOK_SECRET", secret)
    line = f"call with {key} signed by {secret}"
    assert key in redact(line) and secret in redact(line)  # unknown until settings load
    load_settings()
    assert redact(line) == "call with [redacted] signed by [redacted]"
