"""The doctor against a real `prefect server start` with prefect.yaml deployed.

The server runs without services (no scheduler), so a scheduled deployment has no upcoming run
until the test creates one through the client, as the scheduler would; a real process worker
is started for the healthy case. Faults first, then the whole setup passing, `--live` included.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect.client.schemas.objects import Deployment, WorkerStatus
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import AwaitingConcurrencySlot, Cancelled, Running, Scheduled
from prefect.types._datetime import now

from flows.ops.doctor import Check, Outcome
from flows.settings import Settings
from flows.testing import check_api_key, check_prefect
from ledger import Ledger
from tests.deploy.prefect_server import POOL, PREFECT, ROOT, Server, stop
from tests.webhooks.signing import wait_until

SCHEDULED = ("reviews-nightly", "articles-every-15-minutes", "morning-summary")
CLI = [sys.executable, "-m", "flows.cli"]


def _prefect_checks(server: Server) -> dict[str, Check]:
    with temporary_settings(updates={PREFECT_API_URL: server.url}):
        return {c.name: c for c in check_prefect()}


def test_no_worker_and_no_upcoming_run_fail_with_their_fixes(
    deployed: dict[str, Deployment], server: Server
) -> None:
    """Deployed but never scheduled and no worker: each scheduled one and the pool fail."""
    checks = _prefect_checks(server)
    assert checks["prefect api"].outcome is Outcome.OK
    for name in deployed:
        assert checks[f"deployment {name}"].outcome is Outcome.OK
    for name in SCHEDULED:
        check = checks[f"schedule {name}"]
        assert check.outcome is Outcome.FAIL
        assert "no upcoming scheduled run" in check.detail
        assert "--no-services" in check.fix
    assert "schedule replay" not in checks
    pool = checks[f"work pool {POOL}"]
    assert pool.outcome is Outcome.FAIL
    assert pool.fix.startswith(f"prefect worker start --pool {POOL}")


def test_runs_held_by_a_dead_worker_and_waiting_for_its_slot_are_named(
    deployed: dict[str, Deployment], server: Server
) -> None:
    """A run Running on a pool with no live worker fails the check; one awaiting a slot warns."""
    dep = deployed["reviews-nightly"]
    with server.client() as client:
        held = client.create_flow_run_from_deployment(dep.id)
        client.set_flow_run_state(held.id, Running(), force=True)
        waiting = client.create_flow_run_from_deployment(dep.id)
        client.set_flow_run_state(waiting.id, AwaitingConcurrencySlot(), force=True)
    try:
        checks = _prefect_checks(server)
    finally:
        with server.client() as client:  # the later tests expect no held run
            for run in (held, waiting):
                client.set_flow_run_state(run.id, Cancelled(), force=True)
    running = checks["running runs"]
    assert running.outcome is Outcome.FAIL
    assert running.detail.startswith("1 Running with no live worker")
    assert held.name in running.detail
    assert running.fix.startswith(f"prefect flow-run cancel {held.id}")
    slot = checks["runs awaiting a slot"]
    assert slot.outcome is Outcome.WARN
    assert slot.detail.startswith("1 waiting") and waiting.name in slot.detail
    assert _prefect_checks(server)["running runs"].outcome is Outcome.OK


def test_the_next_run_is_the_earliest_one(deployed: dict[str, Deployment], server: Server) -> None:
    """Of several scheduled runs, doctor names the earliest, whatever order the server keeps."""
    dep = deployed["morning-summary"]
    soon = now("UTC") + timedelta(hours=2)
    with server.client() as client:
        runs = [
            client.create_flow_run_from_deployment(
                dep.id, state=Scheduled(scheduled_time=soon + timedelta(days=days))
            )
            for days in (0, 3, 4, 5, 6, 7, 8, 9, 10)
        ]
    try:
        check = _prefect_checks(server)["schedule morning-summary"]
    finally:
        with server.client() as client:
            for run in runs:
                client.set_flow_run_state(run.id, Cancelled(), force=True)
    assert check.outcome is Outcome.OK
    assert check.detail.startswith(f"next run at {soon:%Y-%m-%d %H:%M} ")


def test_a_deployment_missing_from_the_server_fails(
    deployed: dict[str, Deployment], server: Server, tmp_path: Path
) -> None:
    """A deployment prefect.yaml declares but the server lacks: the fix is to deploy."""
    copy = tmp_path / "prefect.yaml"
    copy.write_text((ROOT / "prefect.yaml").read_text().replace("- name: replay", "- name: nope"))
    with temporary_settings(updates={PREFECT_API_URL: server.url}):
        checks = {c.name: c for c in check_prefect(copy)}
    assert checks["deployment nope"].outcome is Outcome.FAIL
    assert "prefect --no-prompt deploy --all" in checks["deployment nope"].fix


def test_a_key_missing_where_the_worker_looks_fails(
    server: Server,
) -> None:
    """No Secret block and no variable: fail; only this shell's variable: a warning."""
    with temporary_settings(updates={PREFECT_API_URL: server.url}):
        missing = check_api_key(Settings.given())
        key = "AIzaSyExampleExampleExampleExample123"
        shell_only = check_api_key(Settings.given(GEMINI_API_KEY=key))
    assert missing.outcome is Outcome.FAIL
    assert "Prefect Secret block 'gemini-api-key'" in missing.detail
    assert missing.fix.startswith("gemini-ledger secret set api-key")
    assert shell_only.outcome is Outcome.WARN
    assert shell_only.fix == "gemini-ledger secret set api-key"


def test_the_whole_setup_passes_with_a_worker_scheduled_runs_and_the_key_in_a_block(
    deployed: dict[str, Deployment], server: Server, emulator: Any, tmp_path: Path
) -> None:
    """`doctor` and `doctor --live` exit 0: every check ok, the key read from its Secret block."""
    with server.client() as client:
        for name in SCHEDULED:  # what the scheduler would have created
            client.create_flow_run_from_deployment(
                deployed[name].id, state=Scheduled(scheduled_time=now("UTC") + timedelta(hours=1))
            )
        client.create_work_queue(name="doctor-test", work_pool_name=POOL)
    env = {k: v for k, v in server.env.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    stored = subprocess.run(
        [*CLI, "secret", "set", "api-key"],
        input="emulator-key-from-block\n",
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stored.returncode == 0, stored.stderr
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", POOL, "--work-queue", "doctor-test"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def online() -> bool:
        assert worker.poll() is None, worker.stderr.read() if worker.stderr else b""
        with server.client() as client:
            workers = client.read_workers_for_work_pool(work_pool_name=POOL)
        return any(w.status == WorkerStatus.ONLINE for w in workers)

    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger(ledger_url, create=True).dispose()
    env.update(
        LEDGER_DATABASE_URL=ledger_url,
        GOOGLE_GEMINI_BASE_URL=emulator.env()["GOOGLE_GEMINI_BASE_URL"],
    )
    try:
        wait_until(online, timeout=90, what="the worker to come online")
        results = [
            subprocess.run(
                [*CLI, "doctor", *args, "--json"],
                env=env,
                cwd=tmp_path,  # prefect.yaml is found next to the flows package
                capture_output=True,
                text=True,
                timeout=300,
            )
            for args in ([], ["--live", "--yes", "--shapes-out", str(tmp_path / "shapes.json")])
        ]
    finally:
        stop(worker)
    for result in results:
        report = json.loads(result.stdout)
        outcomes = {c["name"]: c["outcome"] for c in report["checks"]}
        assert result.returncode == 0, report
        assert outcomes.pop("webhook secret") == "skip"  # webhooks are optional
        assert outcomes.pop("api settings") == "skip"  # no batch job bound yet to compare with
        assert set(outcomes.values()) == {"ok"}, report
    checks = {c["name"]: c for c in json.loads(results[0].stdout)["checks"]}
    assert checks["api key"]["detail"] == "in Prefect Secret block 'gemini-api-key'"
    assert checks[f"work pool {POOL}"]["detail"].startswith("1 live worker")
    live = {c["name"] for c in json.loads(results[1].stdout)["checks"]}
    assert {"api key accepted", "3-row batch", "background interaction"} <= live


def test_every_pipeline_a_deployment_names_is_checked(
    deployed: dict[str, Deployment], server: Server, tmp_path: Path
) -> None:
    """A deployment naming a pipeline that does not load fails doctor's pipeline check, with
    the deployment named, though doctor was given no pipeline."""
    import yaml

    from flows.ops.doctor import run_checks
    from flows.settings import Settings

    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    (dep,) = [d for d in config["deployments"] if d["name"] == "reviews-nightly"]
    dep.update(name="ghost-nightly", parameters={"pipeline": "ghostpkg.pages:pipeline"})
    config["deployments"] = [dep]
    copy = tmp_path / "prefect.yaml"
    copy.write_text(yaml.safe_dump(config, sort_keys=False))
    result = server.cli("--no-prompt", "deploy", "--all", "--prefect-file", str(copy))
    assert result.returncode == 0, result.stdout + result.stderr
    with temporary_settings(updates={PREFECT_API_URL: server.url}):
        checks = {c.name: c for c in run_checks([], settings=Settings.given(), problems=[])}
    ghost = checks["pipeline ghostpkg.pages:pipeline"]
    assert ghost.outcome is Outcome.FAIL
    assert "no module named 'ghostpkg'" in ghost.detail
    assert "named by deployment ghost-nightly" in ghost.detail
    assert checks["pipeline reviews"].outcome is Outcome.OK  # named by reviews-nightly too
