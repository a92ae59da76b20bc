"""Ctrl-C on a worker in the middle of a delivery, as a terminal sends it (SIGINT to the
worker's process group), against a real `prefect server start` with prefect.yaml deployed.

`gemini-ledger worker start` stops its run between rows (it ends Cancelled, the delivery
claims it held given back) and then exits 130. Plain `prefect worker start` (Prefect 3.9.1)
exits at once and SIGKILLs the run: Prefect still shows it Running and its claims stay held,
which is why the command exists.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prefect.client.schemas.objects import Deployment

from ledger import Status
from tests.deploy.prefect_server import POOL, PREFECT, ROOT, Server, prefect_server
from tests.proof.harness import World
from tests.proof.pipelines import SLOW_DELIVERY_ENV

pytestmark = pytest.mark.system

ITEMS = 12
T = TypeVar("T")


def poll(condition: Callable[[], T | None], *, timeout: float, what: str, every: float = 0.2) -> T:
    """``condition()`` until it gives something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(every)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with prefect_server(services=False) as running:
        yield running


@pytest.fixture(scope="module")
def deployed(server: Server) -> dict[str, Deployment]:
    return server.deploy_all()


def _interrupted_night(
    server: Server, deployed: dict[str, Deployment], emulator: Any, root: Path, worker: list[str]
) -> tuple[World, Any, int]:
    """A tick run by ``worker`` on its own queue, Ctrl-C'd once 3 rows are delivered; returns
    the world, the run and the worker's exit code."""
    root.mkdir()
    queue = f"stop-{root.name}"
    world = World(
        channel="direct",
        root=root,
        ledger_url=f"sqlite:///{root / 'ledger.db'}",
        emulator=emulator,
        prefect_api=server.url,
        items=ITEMS,
        extra_env={SLOW_DELIVERY_ENV: "0.5"},
    )
    # prefect.yaml's runs read the ledger's URL from its Secret block, as a user stores it.
    server.store_secret("ledger-url", world.ledger_url)
    with server.client() as client:
        client.create_work_queue(name=queue, work_pool_name=POOL)
        run = client.create_flow_run_from_deployment(
            deployed["reviews-nightly"].id,
            parameters={"pipeline": world.channel.spec, "day": world.day.isoformat()},
            work_queue_name=queue,
        )
    env = {
        **server.env,
        **world.environ(),
        "PYTHONPATH": str(ROOT),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    proc = subprocess.Popen(
        [*worker, "--pool", POOL, "--work-queue", queue, "--limit", "1"],
        cwd=root,
        env=env,
        stdout=(root / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group, as a terminal's foreground job
    )
    try:
        poll(
            lambda: proc.poll() is None and sum(world.completions().values()) >= 3,
            timeout=240,
            what="the tick to deliver 3 rows",
        )
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        return world, run, proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_ctrl_c_on_gemini_ledger_worker_stops_the_run_between_rows_then_the_worker(
    server: Server, deployed: dict[str, Deployment], emulator: Any, tmp_path: Path
) -> None:
    """Ctrl-C: the run stops between rows and ends Cancelled, nothing stays claimed, each side
    effect that ran is recorded once, the worker exits 130, and the next tick settles."""
    command = [sys.executable, "-m", "flows.cli", "worker", "start"]
    world, run, code = _interrupted_night(server, deployed, emulator, tmp_path / "ours", command)

    assert code == 130, (tmp_path / "ours" / "worker.log").read_text()[-3000:]
    with server.client() as client:
        state = client.read_flow_run(run.id).state
    assert state is not None and state.is_cancelled(), (
        state and state.name,
        state and state.message,
    )
    ledger = world.ledger()
    jobs = ledger.jobs(pipeline=world.channel.pipeline)
    assert not [j.key for j in jobs if j.delivery_claim], "claims left held"
    consumed = {j.key for j in jobs if j.status == Status.CONSUMED}
    ran = world.completions()
    assert set(ran) == consumed and max(ran.values()) == 1, ran
    assert len(consumed) < ITEMS  # it stopped before the end

    assert world.tick_subprocess().returncode == 0  # the next tick delivers the rest
    assert world.settled()
    verdict = world.check()
    assert verdict.ok, verdict.problems


def test_ctrl_c_on_prefect_worker_start_kills_the_run_outright(
    server: Server, deployed: dict[str, Deployment], emulator: Any, tmp_path: Path
) -> None:
    """Prefect's own worker on Ctrl-C: it exits, its run is SIGKILLed mid-delivery, Prefect
    still shows it Running and its delivery claims stay held (what the command above avoids)."""
    world, run, _ = _interrupted_night(
        server, deployed, emulator, tmp_path / "prefects", [PREFECT, "worker", "start"]
    )

    with server.client() as client:
        state = client.read_flow_run(run.id).state
    assert state is not None and state.is_running(), state and state.name
    jobs = world.ledger().jobs(pipeline=world.channel.pipeline)
    assert [j.key for j in jobs if j.delivery_claim], "the killed run's claims are held"
