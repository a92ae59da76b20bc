"""``doctor --live`` against the emulator through the real SDK: passes, records shapes that match
the shipped file, names a refused key and an unreachable API in plain words, spends nothing
without --yes, and never writes a pipeline's rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from emulator.testing import free_port
from flows.cli import app
from flows.ops.doctor import SHIPPED_SHAPES, diff_shapes, load_shapes
from ledger import Ledger

runner = CliRunner()
LIVE_CHECKS = {
    "api key accepted",
    "model gemini-2.5-flash",
    "generate_content with the output schema",
    "upload a 3-line JSONL",
    "3-row batch",
    "background interaction",
}


@pytest.fixture
def ledger_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated SQLite ledger as LEDGER_DATABASE_URL."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger(url, create=True).dispose()  # a ledger is created on purpose only
    monkeypatch.setenv("LEDGER_DATABASE_URL", url)
    return url


def _doctor(*args: str) -> tuple[int, dict[str, Any]]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # No Prefect server here, even when an earlier test in this process started Prefect's
    # test server (its deployments and workers would be checked, and missing).
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        result = runner.invoke(app, ["doctor", *args, "--json"])
    assert result.stdout.strip(), result.output
    return result.exit_code, json.loads(result.stdout)


def _by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def test_live_passes_and_its_shapes_match_the_shipped_file(
    emulator: Any, ledger_env: str, tmp_path: Path
) -> None:
    """Every live check passes, only doctor: keys are sent, no row is written, and no drift."""
    shapes = tmp_path / "shapes.json"
    code, report = _doctor("--live", "--yes", "--shapes-out", str(shapes))
    checks = _by_name(report)
    assert {checks[n]["outcome"] for n in LIVE_CHECKS} == {"ok"}, report
    assert code == 0, report
    assert report["tokens"] > 0
    submitted = emulator.stats()["submissions"]
    assert submitted and all(key.startswith("doctor:") for key in submitted)
    ledger = Ledger(ledger_env)
    assert sum(ledger.counts().by_status.values()) == 0
    ledger.dispose()
    assert "batches.get" in load_shapes(shapes)
    assert diff_shapes(load_shapes(SHIPPED_SHAPES), load_shapes(shapes)) == []


def test_compare_shapes_finds_exactly_the_altered_fields(tmp_path: Path) -> None:
    """A shape file with one field removed, one added and one retyped lists those three."""
    assert runner.invoke(app, ["doctor", "--compare-shapes", str(SHIPPED_SHAPES)]).exit_code == 0
    data = json.loads(SHIPPED_SHAPES.read_text())
    steps = data["steps"]
    del steps["models.generate_content"]["$.modelVersion"]
    steps["batches.get"]["$.metadata.priority"] = "number"
    steps["interactions.get"]["$.status"] = "object"
    altered = tmp_path / "altered.json"
    altered.write_text(json.dumps(data))
    result = runner.invoke(app, ["doctor", "--compare-shapes", str(altered), "--json"])
    assert result.exit_code == 1, result.output
    drift = {(d["step"], d["field"], d["kind"]) for d in json.loads(result.stdout)["drift"]}
    assert drift == {
        ("models.generate_content", "$.modelVersion", "adds"),
        ("batches.get", "$.metadata.priority", "lacks"),
        ("interactions.get", "$.status", "type"),
    }


def test_a_refused_key_fails_first_with_its_fix(
    emulator: Any, ledger_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A key the API refuses (400 API_KEY_INVALID) is named as such and nothing else is tried."""
    monkeypatch.setenv("GEMINI_API_KEY", "refused-0123456789")
    code, report = _doctor("--live", "--yes", "--shapes-out", str(tmp_path / "s.json"))
    check = _by_name(report)["api key accepted"]
    assert code == 1
    assert check["outcome"] == "fail"
    assert check["detail"].startswith("refused key")
    assert "gemini-ledger secret set api-key" in check["fix"]
    assert not LIVE_CHECKS - {"api key accepted"} & set(_by_name(report))
    assert emulator.stats()["submissions"] == {}


def test_an_unreachable_api_fails_with_its_fix(
    ledger_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With nothing listening at the API's address, the first live check says unreachable."""
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", f"http://127.0.0.1:{free_port()}")
    code, report = _doctor("--live", "--yes", "--shapes-out", str(tmp_path / "s.json"))
    check = _by_name(report)["api key accepted"]
    assert code == 1
    assert check["detail"].startswith("unreachable")
    assert "GOOGLE_GEMINI_BASE_URL" in check["fix"]


def test_live_off_a_terminal_needs_yes(emulator: Any, ledger_env: str) -> None:
    """Without --yes and no terminal to ask on, --live says what it would spend and stops."""
    result = runner.invoke(app, ["doctor", "--live"])
    assert result.exit_code == 1
    assert "tokens" in result.output and "--yes" in result.output
    assert emulator.stats()["requests"] == {}


def test_a_model_the_api_does_not_serve_fails_after_the_key_is_accepted(
    emulator: Any, ledger_env: str, tmp_path: Path
) -> None:
    """models.get answers 404: the key is fine, the model check fails, nothing is generated."""
    spec = "tests.doctor.pipelines:unknown_model"
    code, report = _doctor(
        spec, "--live", "--yes", "--pipeline", spec, "--shapes-out", str(tmp_path / "s.json")
    )
    checks = _by_name(report)
    assert code == 1
    assert checks["api key accepted"]["outcome"] == "ok"
    assert checks["model no-such-model"]["outcome"] == "fail"
    assert checks["model no-such-model"]["detail"].startswith("not found")
    assert emulator.stats()["submissions"] == {}


def test_a_batch_that_does_not_finish_in_time_is_cancelled_and_fails(
    emulator: Any, ledger_env: str, tmp_path: Path
) -> None:
    """A batch still running at --batch-timeout fails with the longer timeout as its fix."""
    emulator.set_scenario({"name": "slow-batch", "batch_polls_to_complete": 1000}, seed=7)
    code, report = _doctor(
        "--live", "--yes", "--batch-timeout", "1", "--shapes-out", str(tmp_path / "s.json")
    )
    checks = _by_name(report)
    assert code == 1
    assert checks["3-row batch"]["outcome"] == "fail"
    assert "cancelled" in checks["3-row batch"]["detail"]
    assert "--batch-timeout" in checks["3-row batch"]["fix"]
    assert checks["background interaction"]["outcome"] == "ok"
    assert emulator.stats()["requests"].get("POST /v1/batches/{id}:cancel") == 1


def test_a_busy_api_for_one_batch_row_is_a_warning_not_a_failed_setup(
    emulator: Any, ledger_env: str, tmp_path: Path
) -> None:
    """A row answered 503 in the batch is the API being busy: a warning, and exit 0."""
    emulator.set_scenario(
        {"name": "busy-row", "scripts": [{"match": "doctor:*:batch:2", "steps": ["503"]}]},
        seed=7,
    )
    code, report = _doctor("--live", "--yes", "--shapes-out", str(tmp_path / "s.json"))
    batch = _by_name(report)["3-row batch"]
    assert batch["outcome"] == "warn", batch
    assert "503" in batch["detail"] and "run again" in batch["fix"]
    assert code == 0
