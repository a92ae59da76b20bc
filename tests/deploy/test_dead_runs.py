"""A worker and its flow-run process killed with SIGKILL in the middle of a delivery, on a real
`prefect server start` with its services (triggers, actions, lease repossession).

The deployments of prefect.yaml are deployed as users deploy them, the zombie automation of
automations/ is applied with `gemini-ledger automations apply` (its window shortened to a
minute, the heartbeat to Prefect's minimum of 30 s, so the test takes minutes, not hours).
The dead run must not block its deployment: a tick started while it still looks Running ends
Cancelled at once (never waiting in AwaitingConcurrencySlot), the automation marks the dead
run Crashed when its heartbeats stop, and the next tick runs, takes over the dead tick's
delivery claims (its report says how many, and when they were last held) and settles the night:
every item delivered once (the one in hand at the kill at most twice) or parked.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import Deployment
from prefect.states import Scheduled

from tests.deploy.prefect_server import POOL, PREFECT, ROOT, Server, prefect_server
from tests.proof.harness import World
from tests.proof.pipelines import SLOW_DELIVERY_ENV

pytestmark = pytest.mark.system

HEARTBEAT_S = 30  # Prefect's minimum (prefect.yaml says 60)
ZOMBIE_WITHIN_S = 65  # two heartbeats and a margin (automations/zombie-runs.yaml says 300)
ITEMS = 16
T = TypeVar("T")


def poll(condition: Callable[[], T | None], *, timeout: float, what: str, every: float = 0.5) -> T:
    """``condition()`` until it gives something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(every)


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (the flow-run process a worker started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """A server with its services on; a run refused a slot is looked at again every second."""
    with prefect_server(
        services=True,
        extra_env={"PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "1"},
    ) as running:
        yield running


def _apply_zombie_automation(server: Server, folder: Path) -> str:
    """automations/zombie-runs.yaml with a one-minute window, applied by the command."""
    folder.mkdir()
    declared = yaml.safe_load((ROOT / "automations" / "zombie-runs.yaml").read_text())
    declared["trigger"]["within"] = ZOMBIE_WITHIN_S
    (folder / "zombie-runs.yaml").write_text(yaml.safe_dump(declared))
    applied = subprocess.run(
        [sys.executable, "-m", "flows.cli", "automations", "apply", "--dir", str(folder)],
        cwd=ROOT,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert f"created: {declared['name']}" in applied.stdout
    return str(declared["name"])


def _worker(server: Server, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", POOL, "--limit", "1"],
        cwd=log.parent,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _kill(worker: subprocess.Popen[bytes]) -> list[int]:
    """SIGKILL the worker and the flow-run processes it started; returns the latter."""
    runs = children(worker.pid)
    os.kill(worker.pid, signal.SIGKILL)
    for pid in runs:
        os.kill(pid, signal.SIGKILL)
    worker.wait(timeout=30)
    return runs


def test_a_killed_worker_and_run_block_nothing_and_the_next_tick_settles_the_night(
    server: Server, emulator: Any, tmp_path: Path
) -> None:
    """SIGKILL of the worker and its run mid-delivery: the next tick is not held back (it
    ends Cancelled at once while the dead run still looks Running), the dead run is marked
    Crashed when its heartbeats stop, and the tick after it takes the dead claims over (and
    says so, with when they were last held) and settles every item."""
    deployments: dict[str, Deployment] = server.deploy_all()
    for name in ("reviews-nightly", "articles-every-15-minutes", "replay"):
        options = deployments[name].concurrency_options
        assert options is not None and options.collision_strategy == "CANCEL_NEW", name
    for name, deployment in deployments.items():  # every run sends heartbeats
        assert deployment.job_variables["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "60", name
    _apply_zombie_automation(server, tmp_path / "automations")
    tick = deployments["reviews-nightly"]
    world = World(
        channel="direct",
        root=tmp_path,
        ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        emulator=emulator,
        prefect_api=server.url,
        items=ITEMS,
        extra_env={SLOW_DELIVERY_ENV: "0.5"},
    )
    # prefect.yaml's runs read the ledger's URL from its Secret block, as a user stores it.
    server.store_secret("ledger-url", world.ledger_url)
    env = {
        **server.env,
        **world.environ(stale_s=10),  # the next tick takes a claim unrenewed for 10 s over
        "PYTHONPATH": str(ROOT),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    job = {"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S)}}
    params = {"pipeline": world.channel.spec, "day": world.day.isoformat()}

    def start_tick() -> Any:
        """A tick as the scheduler creates it: Scheduled, due now."""
        with server.client() as client:
            return client.create_flow_run_from_deployment(
                tick.id, parameters=params, job_variables=job, state=Scheduled()
            )

    def state_of(run: Any) -> Any:
        with server.client() as client:
            return client.read_flow_run(run.id).state

    def say(line: str) -> None:
        """The transcript (shown with pytest -s): what a person watching the server sees."""
        print(f"{datetime.now(UTC):%H:%M:%S} {line}", flush=True)

    first = start_tick()
    worker = _worker(server, env, tmp_path / "worker-1.log")
    try:
        poll(
            lambda: sum(world.completions().values()) >= 3,
            timeout=240,
            what="the first tick to deliver 3 rows",
        )
    finally:
        killed_runs = _kill(worker)
    killed_at = time.time()
    assert killed_runs, "the worker had started no flow-run process"
    say(f"SIGKILL to the worker and its flow-run process(es) {killed_runs}")
    in_hand = world.in_hand()
    held = world.ledger().counts(pipeline=world.channel.pipeline).by_status.get("done", 0)
    assert state_of(first).is_running()  # what Prefect sees of a dead run: a zombie
    say(f"run 1 ({first.name}): {state_of(first).name}; {held} rows claimed by it, done")

    worker = _worker(server, env, tmp_path / "worker-2.log")
    try:
        # While the dead run holds the slot, the next tick is turned away at once.
        turned_away = start_tick()
        refused = poll(
            lambda: (s := state_of(turned_away)) is not None and s.is_final() and s,
            timeout=120,
            what="the tick behind the dead run to end",
        )
        assert refused.is_cancelled(), (refused.name, refused.message)
        assert "concurrency limit" in (refused.message or "")
        say(f"run 2 ({turned_away.name}), started behind it: {refused.name}: {refused.message}")

        crashed = poll(
            lambda: (s := state_of(first)) is not None and s.is_crashed() and s,
            timeout=ZOMBIE_WITHIN_S + 120,
            what="the automation to mark the dead run Crashed",
        )
        assert "heartbeat" in (crashed.message or "")
        say(f"run 1: {crashed.name}: {crashed.message}")

        following = start_tick()
        ended = poll(
            lambda: (s := state_of(following)) is not None and s.is_final() and s,
            timeout=240,
            what="the tick after the dead one to end",
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    assert ended.is_completed(), (ended.name, ended.message)
    say(f"run 3 ({following.name}): {ended.name}")

    # Its report says what it took over from the dead tick, and when that tick last held it.
    with server.client() as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[following.id]))
        )
    # The tick's report is its table artifact (beside it, the progress artifact).
    (summary,) = [a.description for a in artifacts if a.type == "table"]
    took = r"(\d+) delivery claims held by a dead tick \(last held at ([\d-]+ [\d:]+) UTC\)"
    found = re.search(took + ", taken over", summary or "")
    assert found, summary
    say(f"run 3's report: {found[0]}")
    assert int(found[1]) == held  # every done row: the dead pass had claimed them all
    last_held = datetime.strptime(found[2], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert last_held.timestamp() <= killed_at + 1

    assert world.settled()
    verdict = world.check(allowed_repeats=in_hand)
    assert verdict.ok, verdict.problems
    say(f"the night: {world.ledger().counts(pipeline=world.channel.pipeline).by_status}")
