"""``gemini-ledger doctor``: check a setup before trusting it with a night.

- :func:`run_checks`: free checks (settings, ledger, pipelines: the shipped ones, the ones
  given and every one a deployment on the Prefect server names; Prefect server, deployments,
  schedules, workers, secrets); no Gemini API call.
- :func:`flows.ops.doctor._live.run_live`: a few real calls (``--live``), recording the structure
  of every answer.
- :func:`emulator_shapes` and :func:`diff_shapes`: the same calls against the bundled emulator,
  compared with a recorded shape file (``--compare-shapes``).
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from flows.ops.doctor._live import (
    LiveRun,
    estimate_requests,
    estimate_tokens,
    live_client,
    run_live,
)
from flows.ops.doctor._local import (
    check_api_key,
    check_api_settings,
    check_ledger,
    check_pipelines,
    check_prices,
    check_settings,
    check_webhook_secret,
)
from flows.ops.doctor._prefect import check_prefect, deployed_pipelines
from flows.ops.doctor._report import Check, Outcome, exit_code, render_line, to_json
from flows.ops.doctor._shapes import Drift, diff_shapes, load_shapes, write_shapes
from flows.settings import Settings

__all__ = [
    "SHIPPED_SHAPES",
    "Check",
    "Drift",
    "LiveRun",
    "Outcome",
    "diff_shapes",
    "emulator_shapes",
    "estimate_requests",
    "estimate_tokens",
    "exit_code",
    "load_shapes",
    "render_line",
    "run_checks",
    "run_live",
    "to_json",
    "write_shapes",
]

#: The shapes the bundled emulator is tested to serve (recorded by ``doctor --live`` against it).
SHIPPED_SHAPES = Path(str(find_spec("emulator").origin)).parent / "shapes.json"  # type: ignore[union-attr]


def run_checks(
    pipelines: list[str],
    *,
    settings: Settings,
    problems: list[str],
    ledger_unreadable: str | None = None,
    prefect_yaml: Path | None = None,
) -> list[Check]:
    """Every free check, in the order a setup is built. ``settings`` and ``problems``: what
    ``flows.settings.load_settings_reporting`` returned (a refused variable is a failed
    settings check, and the other checks run on its default), the ledger's URL read from its
    Secret block, or ``ledger_unreadable`` saying why it could not be."""
    read_ledger = ledger_unreadable is None
    checks = [check_settings(settings, problems)]
    checks += check_ledger(settings, ledger_unreadable)
    deployed = deployed_pipelines()  # every pipeline a deployment on the server names
    pipelines = [*pipelines, *(spec for spec in deployed if spec not in pipelines)]
    checks += check_pipelines(settings, pipelines, deployed)
    checks.append(check_prices(settings, pipelines, read_ledger=read_ledger))
    checks += check_prefect(prefect_yaml)
    checks.append(check_api_key(settings))
    checks.append(check_webhook_secret(settings))
    checks.append(check_api_settings(settings, read_ledger=read_ledger))
    return checks


def emulator_shapes(
    settings: Settings, pipeline: str = "reviews"
) -> tuple[dict[str, dict[str, str]], LiveRun]:
    """The shapes the bundled emulator serves for the ``--live`` steps (started here, stopped)."""
    from flows._emulator_process import EmulatorProcess

    run = LiveRun()
    with EmulatorProcess(scenario="clean", seed=0) as emu:
        client = live_client("doctor-emulator-key", run.recorder, base_url=emu.base_url)
        run_live(
            pipeline, settings, client=client, batch_timeout_s=60, interaction_timeout_s=60, run=run
        )
    return run.recorder.as_json(), run
