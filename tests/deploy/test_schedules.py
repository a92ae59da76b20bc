"""The way users run it, as the README's deploying section says: a Prefect server whose own
scheduler starts the ticks, the key and the ledger's URL in Secret blocks, the runs' settings
in prefect.yaml's job variables, and a process worker whose shell holds PREFECT_API_URL only.

One server with its services on (the scheduler among them), then the README's deploy
commands: the pool, `prefect --no-prompt deploy --all` from prefect.yaml, `gemini-ledger
secret set api-key` and `secret set ledger-url`, `db upgrade`. The scheduler must create runs
for every scheduled deployment, and runs it created (an interval schedule added here, so the
test need not wait for a cron) must settle the article pipeline against the emulator, whose
URL the test gives as a job variable of the deployment, as the README says to. Afterwards the
key is searched for everywhere the server keeps anything, and in the ledger. With Prefect
3.8.8 on SQLAlchemy 2.1 the scheduler failed every loop and created no run, and this test
failed (Prefect 3.9.1 passes on 2.1.9).
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
from prefect.client.schemas.actions import DeploymentUpdate
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
from tests.child_env import parent_value
from tests.deploy.prefect_server import PREFECT, ROOT, Server, prefect_server, stop
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


# The README's commands run here, in its order (the server is the fixture's).
DEPLOY_COMMANDS = (
    "prefect work-pool create gemini-ledger --type process",
    "prefect --no-prompt deploy --all",
    "gemini-ledger secret set api-key",
    "gemini-ledger secret set ledger-url",
    "gemini-ledger db upgrade",
)
WORKER_COMMAND = "gemini-ledger worker start --pool gemini-ledger"
GEMINI_LEDGER = str(Path(PREFECT).with_name("gemini-ledger"))


def _readme_blocks() -> list[list[str]]:
    """The deploying section's bash blocks, as lists of commands (comments dropped)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Deploying to a Prefect server", 1)[1].split("\n## ", 1)[0]
    blocks = []
    for block in section.split("```bash\n")[1:]:
        lines = [line.split("#", 1)[0].strip() for line in block.split("```", 1)[0].splitlines()]
        blocks.append([line.removeprefix(".venv/bin/") for line in lines if line])
    return blocks


def test_the_readme_says_these_commands_and_a_worker_with_only_the_api_url() -> None:
    """The deploying section runs the commands this module runs, and its worker's shell
    exports nothing but PREFECT_API_URL."""
    blocks = _readme_blocks()
    commands = [c for block in blocks for c in block]
    at = [commands.index(c) for c in DEPLOY_COMMANDS]
    assert at == sorted(at), commands
    (worker,) = [b for b in blocks if WORKER_COMMAND in b]
    exported = [c.split()[1].split("=")[0] for c in worker if c.startswith("export ")]
    assert exported == ["PREFECT_API_URL"], worker
    assert [c for c in worker if not c.startswith("export ")] == [WORKER_COMMAND]


@pytest.fixture(scope="module")
def ledger_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ledger") / "ledger.db"


@pytest.fixture(scope="module")
def deployed(server: Server, ledger_file: Path) -> dict[str, Deployment]:
    """The README's deploy commands: pool, deployments, the key and the ledger's URL in their
    Secret blocks, the ledger created at the block's URL."""
    deployments = server.deploy_all()
    server.store_secret("api-key", API_KEY)
    server.store_secret("ledger-url", f"sqlite:///{ledger_file}")
    created = subprocess.run(
        [sys.executable, "-m", "flows.cli", "db", "upgrade"],
        cwd=ROOT,
        env={**server.env, "LEDGER_DATABASE_URL_BLOCK": "gemini-ledger-database-url"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    assert ledger_file.is_file()
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


def test_scheduled_runs_settle_a_night_with_only_prefect_api_url_in_the_workers_shell(
    server: Server, deployed: dict[str, Deployment], ledger_file: Path, tmp_path: Path
) -> None:
    """Runs the scheduler created are run by a worker whose shell exports PREFECT_API_URL and
    nothing of ours: the key and the ledger's URL come from their blocks, the settings from
    the job variables, and every article is delivered."""
    ledger_url = f"sqlite:///{ledger_file}"
    out = tmp_path / "articles"
    articles = deployed[ARTICLES]
    with RunningEmulator(scenario="clean", seed=3) as emulator:
        # What the README says to do for the emulator: its URL as a job variable (and the
        # example's output directory, so the test finds the files), beside prefect.yaml's.
        env_vars = {
            **articles.job_variables["env"],
            "GOOGLE_GEMINI_BASE_URL": emulator.base_url,
            "ARTICLES_DIR": str(out),
        }
        with server.client() as client:
            client.update_deployment(articles.id, DeploymentUpdate(job_variables={"env": env_vars}))
            client.create_deployment_schedules(
                articles.id, [(IntervalSchedule(interval=timedelta(seconds=5)), True)]
            )
        # The worker's shell: the system's PATH and HOME, and PREFECT_API_URL. Nothing else.
        env = {"PATH": parent_value("PATH"), "HOME": str(tmp_path), "PREFECT_API_URL": server.url}
        worker = subprocess.Popen(
            [GEMINI_LEDGER, *WORKER_COMMAND.split()[1:]],  # the README's worker, as it says
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        ledger = Ledger(ledger_url)

        def settled() -> bool:
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else b""
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
    leaks = [*_server_records(server), worker_err, ledger_file.read_bytes().hex()]
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
