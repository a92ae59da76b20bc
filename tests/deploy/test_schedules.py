"""The way users run it: a Prefect server whose own scheduler starts the ticks, a process
worker that holds no API key, the key in a Secret block.

One server with its services on (the scheduler among them), `prefect --no-prompt deploy
--all` from prefect.yaml, the key stored with `gemini-ledger secret set api-key`, a worker on
the pool. The scheduler must create runs for every scheduled deployment, and runs it created
(an interval schedule added here, so the test need not wait for a cron) must settle the
article pipeline against the emulator. Afterwards the key is searched for everywhere the
server keeps anything, and in the ledger. With Prefect 3.8.8 on SQLAlchemy 2.1 the scheduler
failed every loop and created no run, and this test failed (Prefect 3.9.1 passes on 2.1.9).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    LogFilter,
)
from prefect.client.schemas.objects import Deployment
from prefect.client.schemas.schedules import IntervalSchedule

from emulator.testing import RunningEmulator
from flows.examples.articles import load_topics
from ledger import Ledger, Status
from tests.deploy.prefect_server import POOL, PREFECT, ROOT, Server, prefect_server, stop
from tests.webhooks.signing import wait_until

pytestmark = pytest.mark.slow

ARTICLES = "articles-every-15-minutes"
TOPICS = len(list(load_topics(date.today())))
API_KEY = f"gl-test-key-{uuid.uuid4().hex}"


def _scheduled_deployments() -> set[str]:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return {d["name"] for d in config["deployments"] if d.get("schedules")}


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """A server with its scheduler on, looping every second instead of every minute."""
    with prefect_server(
        services=True, extra_env={"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1"}
    ) as running:
        yield running


@pytest.fixture(scope="module")
def deployed(server: Server) -> dict[str, Deployment]:
    """The pool, every deployment from prefect.yaml, and the key in its Secret block."""
    deployments = server.deploy_all()
    stored = subprocess.run(
        [sys.executable, "-m", "flows.cli", "secret", "set", "api-key"],
        cwd=ROOT,
        env=server.env,
        input=API_KEY + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stored.returncode == 0, stored.stdout + stored.stderr
    assert "gemini-api-key" in stored.stdout and API_KEY not in stored.stdout + stored.stderr
    return deployments


def _runs_of(server: Server, deployment: Deployment) -> list[Any]:
    with server.client() as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        )


def test_the_scheduler_creates_runs_for_every_scheduled_deployment(
    server: Server, deployed: dict[str, Deployment]
) -> None:
    """After deploy --all, the server's scheduler alone gives each schedule upcoming runs."""
    names = _scheduled_deployments()
    assert names >= {"reviews-nightly", ARTICLES, "morning-summary"}

    def all_scheduled() -> bool:
        runs = {n: _runs_of(server, deployed[n]) for n in names}
        return all(any(r.auto_scheduled for r in found) for found in runs.values())

    wait_until(all_scheduled, timeout=120, what="scheduled runs for every scheduled deployment")
    for name in names:
        upcoming = [r for r in _runs_of(server, deployed[name]) if r.auto_scheduled]
        assert all(r.state is not None and r.state.is_scheduled() for r in upcoming), name


def test_scheduled_runs_settle_a_night_with_the_key_only_in_a_secret_block(
    server: Server, deployed: dict[str, Deployment], tmp_path: Path
) -> None:
    """Runs the scheduler created are run by a keyless worker and deliver every article."""
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger(ledger_url, create=True).dispose()  # a ledger is created on purpose only
    out = tmp_path / "articles"
    articles = deployed[ARTICLES]
    with server.client() as client:
        client.create_deployment_schedules(
            articles.id, [(IntervalSchedule(interval=timedelta(seconds=5)), True)]
        )
    with RunningEmulator(scenario="clean", seed=3) as emulator:
        env = {
            **server.env,
            "GOOGLE_GEMINI_BASE_URL": emulator.base_url,
            "LEDGER_DATABASE_URL": ledger_url,
            "ARTICLES_DIR": str(out),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
        assert not {"GEMINI_API_KEY", "GOOGLE_API_KEY"} & set(env)
        worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", POOL, "--limit", "1"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        ledger = Ledger(ledger_url)

        def settled() -> bool:
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else b""
            if not (tmp_path / "ledger.db").exists():
                return False
            counts = ledger.counts(pipeline="articles").by_status
            return counts.get(Status.CONSUMED, 0) == TOPICS

        try:
            wait_until(settled, timeout=300, what=f"{TOPICS} articles delivered")
        finally:
            worker_err = stop(worker).decode(errors="replace")
        stats = emulator.stats()

    counts = ledger.counts(pipeline="articles")
    assert counts.by_status == {Status.CONSUMED: TOPICS}
    assert counts.attempts == TOPICS
    assert len(list(out.glob("*.json"))) == TOPICS
    runs = _runs_of(server, articles)
    ran = [r for r in runs if r.state and r.state.is_completed()]
    assert ran and all(r.auto_scheduled for r in runs), [(r.name, r.auto_scheduled) for r in runs]
    assert all(r.name.startswith("articles ") for r in ran), [r.name for r in ran]
    assert stats, "the emulator answered"
    ledger.dispose()

    # The key is nowhere the server keeps anything, nor in the ledger or the worker's output.
    leaks = [*_server_records(server), worker_err, (tmp_path / "ledger.db").read_bytes().hex()]
    assert not [text for text in leaks if API_KEY in text or API_KEY.encode().hex() in text]


def _server_records(server: Server) -> list[str]:
    """Flow runs (parameters, job variables), deployments, logs, artifacts, variables."""
    with server.client() as client:
        records: list[Any] = [
            *client.read_flow_runs(),
            *client.read_deployments(),
            *client.read_artifacts(),
            *client.read_variables(),
        ]
        offset = 0
        while page := client.read_logs(log_filter=LogFilter(), limit=200, offset=offset):
            records += page
            offset += len(page)
    assert offset > 0, "the runs logged something to the server"
    return [json.dumps(r.model_dump(mode="json"), default=str) for r in records]
