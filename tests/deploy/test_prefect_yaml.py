"""prefect.yaml deployed for real: `prefect --no-prompt deploy --all` against a local server.

One Prefect server subprocess (own PREFECT_HOME, fresh database) serves the whole module; the
deployments are read back through the Prefect client. Broken copies of the file (bad
timezone, bad entrypoint, wrongly typed parameter) must be refused and create nothing. A real
process worker runs one deployment from this checkout, and the webhook receiver, pointed at
the server, starts runs of the reconcile deployment.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import Deployment
from prefect.exceptions import PrefectHTTPStatusError

from emulator.testing import free_port
from ledger import Failure, Ledger, NewJob, Verdict
from tests.deploy.prefect_server import POOL, PREFECT, ROOT, Server, prefect_server, stop
from tests.webhooks.signing import SECRET, signed, wait_until

PREFECT_YAML = ROOT / "prefect.yaml"
TIMEZONE = "Europe/Berlin"

# deployment name -> (entrypoint, flow name, parameters, cron or None)
EXPECTED: dict[str, tuple[str, str, dict[str, Any], str | None]] = {
    "reviews-nightly": (
        "flows/tick.py:tick",
        "",
        {"pipeline": "reviews", "budget_usd": 20.0},
        "0 2-6 * * *",
    ),
    "articles-every-15-minutes": (
        "flows/tick.py:tick",
        "",
        {
            "pipeline": "articles",
            "running_limit_s": 3600.0,
            "max_concurrency": 32,
        },
        "*/15 * * * *",
    ),
    "morning-summary": ("flows/ops/summary.py:summary", "", {"threshold": 10}, "30 7 * * *"),
    "replay": (
        "flows/ops/replay.py:replay",
        "",
        {"execute": False, "limit": 20, "rate_per_second": 2.0},
        None,
    ),
    "webhook": ("flows/reconcile.py:reconcile", "reconcile", {}, None),
}


# What prefect.yaml gives every run's environment: names of blocks and deployments only.
JOB_ENV = {
    "LEDGER_DATABASE_URL_BLOCK": "gemini-ledger-database-url",
    "LEDGER_RECONCILE_DEPLOYMENT": "reconcile/webhook",
    "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "60",
}


def _require_flow_files() -> None:
    files = {entrypoint.split(":")[0] for entrypoint, *_ in EXPECTED.values()}
    missing = sorted(f for f in files if not (ROOT / f).exists())
    if missing:
        pytest.fail(f"flow files the deployments need are missing: {missing}")


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """`prefect server start` on a free loopback port with its own home and a fresh database."""
    _require_flow_files()
    with prefect_server(services=False) as running:
        yield running


@pytest.fixture(scope="module")
def deployed(server: Server) -> dict[str, Deployment]:
    """The work pool created and `prefect --no-prompt deploy --all` run from the repo root."""
    return server.deploy_all()


def test_every_deployment_exists_with_its_entrypoint_pool_and_parameters(
    deployed: dict[str, Deployment], server: Server
) -> None:
    """Each deployment in prefect.yaml is on the process pool with its entrypoint and parameters."""
    assert set(deployed) == set(EXPECTED)
    with server.client() as client:
        assert client.read_work_pool(POOL).type == "process"
        for name, (entrypoint, flow_name, parameters, _) in EXPECTED.items():
            dep = deployed[name]
            assert dep.entrypoint == entrypoint
            assert dep.work_pool_name == POOL
            assert dep.parameters == parameters
            assert dep.enforce_parameter_schema is True
            if flow_name:
                assert client.read_flow(dep.flow_id).name == flow_name
            # The runs' settings come from the job variables, never a secret among them.
            assert dep.job_variables == {"env": JOB_ENV}, name
            # A process worker on this machine runs the code in this checkout.
            assert dep.pull_steps == [
                {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
            ]


def test_schedules_are_cron_with_a_timezone(deployed: dict[str, Deployment]) -> None:
    """Scheduled deployments carry their cron and timezone; replay and reconcile have none."""
    for name, (*_, cron) in EXPECTED.items():
        schedules = deployed[name].schedules
        if cron is None:
            assert schedules == [], name
            continue
        (schedule,) = schedules
        assert schedule.active
        assert getattr(schedule.schedule, "cron", None) == cron
        assert getattr(schedule.schedule, "timezone", None) == TIMEZONE


def test_parameters_are_typed_by_the_flow_signatures(deployed: dict[str, Deployment]) -> None:
    """Every parameter in the file is in its flow's schema, with the signature's JSON type."""
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string"}
    for name, dep in deployed.items():
        properties = dep.parameter_openapi_schema["properties"]
        for param, value in dep.parameters.items():
            assert param in properties, f"{name}: {param} is not a parameter of the flow"
            prop = properties[param]  # an optional parameter is anyOf [its type, null]
            types = {prop.get("type"), *(option.get("type") for option in prop.get("anyOf", []))}
            assert kinds[type(value)] in types, (name, param)
    replay = deployed["replay"].parameter_openapi_schema["properties"]
    assert (replay["execute"]["type"], replay["limit"]["type"]) == ("boolean", "integer")
    assert deployed["webhook"].parameter_openapi_schema.get("required") == ["job_name"]


def test_wrongly_typed_run_parameters_are_refused(
    deployed: dict[str, Deployment], server: Server
) -> None:
    """A run of replay with limit="many", or of reconcile without job_name, is not created."""
    with server.client() as client:
        for name, params in (("replay", {"limit": "many"}), ("webhook", {})):
            with pytest.raises(PrefectHTTPStatusError) as refused:
                client.create_flow_run_from_deployment(deployed[name].id, parameters=params)
            assert refused.value.response.status_code == 409
        good = client.create_flow_run_from_deployment(
            deployed["webhook"].id, parameters={"job_name": "batches/abc"}
        )
        runs = client.read_flow_runs()
    assert good.parameters == {"job_name": "batches/abc"}
    assert good.id in {r.id for r in runs}
    assert not [r for r in runs if r.deployment_id == deployed["replay"].id]


def test_every_parameter_is_described_and_pipeline_is_a_choice(
    deployed: dict[str, Deployment],
) -> None:
    """The custom-run form shows what each parameter does; pipeline offers the known ones."""
    for name, dep in deployed.items():
        for param, prop in dep.parameter_openapi_schema["properties"].items():
            assert prop.get("description"), f"{name}: {param} has no description"
    pipeline = deployed["reviews-nightly"].parameter_openapi_schema["properties"]["pipeline"]
    choices = [option.get("enum") for option in pipeline["anyOf"] if "enum" in option]
    assert choices and {"reviews", "articles"} <= set(choices[0])


@pytest.mark.parametrize(
    ("deployment", "param", "says"),
    [
        ("tick/reviews-nightly", "day=tomorrow", "day"),
        ("tick/reviews-nightly", "day=2026-13-01", "day"),
        ("tick/reviews-nightly", "pipeline=no such pipeline", "pipeline"),
        ("tick/articles-every-15-minutes", "stale_s=-1", "stale_s"),
        ("tick/articles-every-15-minutes", "max_concurrency=0", "max_concurrency"),
        ("summary/morning-summary", "threshold=0", "threshold"),
        ("replay/replay", "rate_per_second=0", "rate_per_second"),
        ("reconcile/webhook", "job_name=abc", "job_name"),
    ],
)
def test_prefect_deployment_run_refuses_a_bad_value(
    deployed: dict[str, Deployment], server: Server, deployment: str, param: str, says: str
) -> None:
    """`prefect deployment run --param` with a value the flow cannot take creates no run."""
    with server.client() as client:
        before = len(client.read_flow_runs())
    result = server.cli("deployment", "run", deployment, "--param", param)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output
    assert f"Validation failed for field '{says}'" in output, output
    with server.client() as client:
        assert len(client.read_flow_runs()) == before


def test_prefect_deployment_run_takes_a_day_and_a_module_pipeline(
    deployed: dict[str, Deployment], server: Server
) -> None:
    """A real day and a module:attribute pipeline are accepted as given."""
    result = server.cli(
        "deployment",
        "run",
        "tick/reviews-nightly",
        "--param",
        "day=2026-11-28",
        "--param",
        "pipeline=flows.examples.reviews:pipeline",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "'day': '2026-11-28'" in result.stdout


def test_a_run_refused_by_the_worker_fails_named_after_its_pipeline(
    deployed: dict[str, Deployment], server: Server, tmp_path: Path
) -> None:
    """A day the schema's pattern lets through but no calendar has (2026-02-31) fails the run
    in the worker, under the pipeline's name and the day it was given, not a random name."""
    queue = "refused-test"
    with server.client() as client:
        client.create_work_queue(name=queue, work_pool_name=POOL)
        run = client.create_flow_run_from_deployment(
            deployed["reviews-nightly"].id,
            parameters={"pipeline": "reviews", "day": "2026-02-31"},
            work_queue_name=queue,
        )
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", POOL, "--work-queue", queue, "--limit", "1"],
        cwd=tmp_path,
        env={**server.env, "PREFECT_WORKER_QUERY_SECONDS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def named_and_final() -> Any:
        assert worker.poll() is None, worker.stderr.read() if worker.stderr else b""
        with server.client() as client:
            found = client.read_flow_run(run.id)
        final = found.state is not None and found.state.is_final()
        return found if final and found.name != run.name else None

    try:
        found = wait_until(named_and_final, timeout=150, what="the refused run to end named")
    finally:
        stop(worker)
    assert found.state.is_failed(), found.state
    assert "day" in (found.state.message or "")
    assert found.name.startswith("reviews ") and found.name.endswith(" for 2026-02-31")


def test_webhook_receiver_starts_a_run_of_the_reconcile_deployment(
    deployed: dict[str, Deployment], server: Server, tmp_path: Path
) -> None:
    """With a Prefect server configured, a signed batch webhook creates one reconcile run."""
    port = free_port()
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    # The receiver acts only on batch jobs its ledger made: record this one as a tick would.
    ledger = Ledger(ledger_url, create=True)
    ledger.reserve(pipeline="reviews", limit=1, reservation="gl-e2e", batch_model="m")
    ledger.bind_batch("gl-e2e", name="batches/e2e-job")
    ledger.dispose()
    env = {
        **server.env,
        "LEDGER_WEBHOOK_SECRET": SECRET,
        "LEDGER_RECONCILE_DEPLOYMENT": "webhook",
        "LEDGER_DATABASE_URL": ledger_url,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "webhook", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    webhook_id = deployed["webhook"].id

    def reconcile_runs() -> list[Any]:
        with server.client() as client:
            return [
                r
                for r in client.read_flow_runs()
                if r.deployment_id == webhook_id and r.parameters == {"job_name": "batches/e2e-job"}
            ]

    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as http:

            def healthy() -> bool:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                try:
                    return http.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(healthy, timeout=30, what="the receiver to start")
            body = '{"type": "batch.succeeded", "data": {"name": "batches/e2e-job"}}'
            for _ in range(2):  # the same delivery twice: one run
                headers = signed(body, msg_id="msg_e2e")
                assert http.post("/webhook", content=body, headers=headers).status_code == 200
            wait_until(reconcile_runs, timeout=30, what="a reconcile flow run")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert len(reconcile_runs()) == 1
    assert SECRET not in err.decode(errors="replace")


def test_a_process_worker_runs_the_replay_deployment_as_a_dry_run(
    deployed: dict[str, Deployment], server: Server, tmp_path: Path
) -> None:
    """A worker on the pool runs replay from this checkout; by default it changes nothing."""
    queue = "worker-test"  # its own queue: the worker runs only the run started here
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(ledger_url, create=True)
    ledger.enroll([NewJob("w:1", {"text": "x"})], pipeline="reviews", channel="batch", model="m")
    ledger.park("w:1", Failure(Verdict.PERMANENT, "400", "bad"), from_status=["pending"])
    server.store_secret("ledger-url", ledger_url)  # the block prefect.yaml's runs read
    with server.client() as client:
        client.create_work_queue(name=queue, work_pool_name=POOL)
        run = client.create_flow_run_from_deployment(deployed["replay"].id, work_queue_name=queue)
    env = {
        **server.env,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_LOGGING_LEVEL": "INFO",  # the run logs its plan at INFO
    }
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", POOL, "--work-queue", queue, "--limit", "1"],
        cwd=tmp_path,  # the deployment's pull step, not the worker's cwd, finds the code
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def finished() -> Any:
        assert worker.poll() is None, worker.stderr.read() if worker.stderr else b""
        with server.client() as client:
            state = client.read_flow_run(run.id).state
        return state if state is not None and state.is_final() else None

    try:
        state = wait_until(finished, timeout=150, what="the replay run to finish")
    finally:
        stop(worker)
    assert state.is_completed(), state.message
    with server.client() as client:
        assert client.read_flow_run(run.id).parameters == {
            "execute": False,
            "limit": 20,
            "rate_per_second": 2.0,
        }

    # It read this ledger (the block the job variables name reached the run) and only planned:
    # the run's table artifact lists the parked job as a dry run.
    with server.client() as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    tables = [json.loads(a.data) for a in artifacts if a.key == "replay" and a.type == "table"]
    assert [[(r["key"], r["outcome"]) for r in t] for t in tables] == [[("w:1", "dry run")]]
    job = ledger.get("w:1")
    assert (job.status, job.error_class) == ("parked", "permanent:400")
    ledger.dispose()


def _broken_copy(tmp_path: Path, deployment: str, new_name: str, edit: dict[str, Any]) -> Path:
    """prefect.yaml with only ``deployment``, renamed and with ``edit`` applied."""
    config = yaml.safe_load(PREFECT_YAML.read_text())
    (dep,) = [d for d in config["deployments"] if d["name"] == deployment]
    dep.update(edit, name=new_name)
    config["deployments"] = [dep]
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("deployment", "edit", "reason"),
    [
        (
            "reviews-nightly",
            {"schedules": [{"cron": "0 2 * * *", "timezone": "Mars/Olympus_Mons"}]},
            "Invalid timezone",
        ),
        ("morning-summary", {"entrypoint": "flows/ops/summary.py:no_such_flow"}, "no_such_flow"),
        ("reviews-nightly", {"entrypoint": "flows/no_such_file.py:tick"}, "no_such_file"),
        (
            "replay",
            {"parameters": {"execute": False, "limit": "many"}},
            "'many' is not of type 'integer'",
        ),
    ],
    ids=["bad-timezone", "bad-flow-name", "bad-file", "wrongly-typed-parameter"],
)
def test_broken_copies_are_refused(
    deployed: dict[str, Deployment],
    server: Server,
    tmp_path: Path,
    deployment: str,
    edit: dict[str, Any],
    reason: str,
) -> None:
    """A copy of the file with one mistake exits non-zero and creates no deployment."""
    name = f"broken-{tmp_path.name}"[:60]
    copy = _broken_copy(tmp_path, deployment, name, edit)
    result = server.cli("--no-prompt", "deploy", "--all", "--prefect-file", str(copy))
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output
    assert reason in output
    assert server.deployment(name) is None


@pytest.mark.system
def test_cancelling_a_tick_run_on_a_worker_stops_it_between_rows(
    deployed: dict[str, Deployment], server: Server, emulator, tmp_path: Path
) -> None:
    """A tick run by a process worker, cancelled while a slow on_result delivers: the worker's
    SIGTERM stops it between rows, the run ends Cancelled, every side effect that ran is
    recorded, and the next ticks deliver the rest, each side effect exactly once."""
    from prefect.states import Cancelling

    from ledger import make_engine, upgrade
    from tests.proof.harness import World
    from tests.proof.pipelines import SLOW_DELIVERY_ENV

    queue = "cancel-test"
    world = World(
        channel="direct",
        root=tmp_path,
        ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        emulator=emulator,
        prefect_api=server.url,
        items=20,
        extra_env={SLOW_DELIVERY_ENV: "1"},
    )
    engine = make_engine(world.ledger_url)
    upgrade(engine)
    engine.dispose()
    with server.client() as client:
        client.create_work_queue(name=queue, work_pool_name=POOL)
        run = client.create_flow_run_from_deployment(
            deployed["reviews-nightly"].id,
            parameters={"pipeline": world.channel.spec, "day": world.day.isoformat()},
            work_queue_name=queue,
            # The world's settings as this run's job variables; its ledger is a file of its
            # own, not the one prefect.yaml's block holds (blank: unset).
            job_variables={"env": {**world.environ(), "LEDGER_DATABASE_URL_BLOCK": ""}},
        )
    env = {
        **server.env,
        **world.environ(),
        "PYTHONPATH": str(ROOT),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", POOL, "--work-queue", queue, "--limit", "1"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def final_state() -> Any:
        assert worker.poll() is None, worker.stderr.read() if worker.stderr else b""
        with server.client() as client:
            state = client.read_flow_run(run.id).state
        return state if state is not None and state.is_final() else None

    try:
        wait_until(
            lambda: final_state() or sum(world.completions().values()) >= 3,
            timeout=300,
            what="the tick run to deliver 3 rows",
        )
        with server.client() as client:
            client.set_flow_run_state(run.id, Cancelling(), force=True)
        state = wait_until(final_state, timeout=150, what="the cancelled run to end")
    finally:
        stop(worker)
    assert state.is_cancelled(), (state.type, state.message)
    ran = world.completions()
    jobs = world.ledger().jobs(pipeline=world.channel.pipeline, status="consumed")
    consumed = {j.key for j in jobs}
    assert set(ran) == consumed and max(ran.values()) == 1, ran  # each one that ran recorded
    assert len(consumed) < world.items  # it stopped before the end

    for _ in range(3):  # the next ticks (cron's) deliver the rest
        assert world.tick_subprocess().returncode == 0
        if world.settled():
            break
    verdict = world.check()
    assert verdict.ok, verdict.problems
    assert max(world.completions().values()) == 1


def test_the_ledger_url_block_missing_or_bad_is_one_line(server: Server, tmp_path: Path) -> None:
    """A named ledger-URL block that is not there: one line naming it and the command that
    stores it; a value that is no database URL is refused by `secret set`, nothing stored."""
    env = {**server.env, "LEDGER_DATABASE_URL_BLOCK": "no-such-ledger-block"}
    missing = subprocess.run(
        [sys.executable, "-m", "flows.cli", "db", "current"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 1, missing.stdout + missing.stderr
    said = " ".join(missing.stderr.split())
    assert "'no-such-ledger-block', which does not exist" in said, said
    assert "gemini-ledger secret set ledger-url --block no-such-ledger-block" in said
    assert "Traceback" not in said
    bad = subprocess.run(
        [sys.executable, "-m", "flows.cli", "secret", "set", "ledger-url"],
        cwd=tmp_path,
        env=env,
        input="not a url with s3cret-pw\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "s3cret-pw" not in bad.stdout + bad.stderr
    with server.client() as client:
        names = [b.name for b in client.read_block_documents_by_type("secret")]
    assert "no-such-ledger-block" not in names
