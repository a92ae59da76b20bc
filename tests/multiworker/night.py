"""One night run by several Prefect process workers against one server, one PostgreSQL
ledger and one emulator, with the Gemini quota shared through Prefect limits.

Used by ``tests/multiworker`` (a small night) and ``bench/workers.py`` (50,000 items). The
three proof pipelines (batch, background, direct) are deployed from a prefect.yaml written
here; ``gemini-ledger limits apply`` sets the model's limits; ``workers`` separate ``prefect
worker start`` processes serve the pool (as on separate machines: nothing is shared but the
server, the ledger and the API). Runs are started in waves (``copies`` runs of every
deployment at once, so workers overlap on every channel) until every item is settled.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from emulator.testing import RunningEmulator
from tests.deploy.prefect_server import POOL, PREFECT, ROOT, prefect_server, stop
from tests.proof.harness import DAY, Verdict, World

__all__ = ["MODEL", "Night", "NightResult", "run_night"]

MODEL = "gemini-2.5-flash"

_DEPLOYMENTS = {
    "batch": ("flows/tick.py:tick", {}),
    "background": ("flows/tick.py:tick", {"max_concurrency": 16}),
    "direct": ("flows/tick.py:tick", {"max_concurrency": 8}),
}


@dataclass
class Night:
    """What to run: items per channel, the shared limits, how many workers."""

    items: Mapping[str, int]
    rpm: int
    concurrency: int
    workers: int = 3
    worker_limit: int = 2  # flow runs a worker runs at once
    copies: int = 2  # runs of each deployment per wave
    max_waves: int = 8
    wave_timeout_s: float = 900.0
    scenario: Mapping[str, Any] = field(
        default_factory=lambda: {
            "name": "workers",
            "batch_polls_to_complete": 1,
            "interaction_polls_to_complete": 1,
            "empty_when_no_letters": True,
            "retry_delay_s": 1,
            "scripts": [
                # A few 429s with a retry delay (they pause every worker), a few 503s.
                {"match": "proof-direct:*:item-0000[1-3]:*", "steps": ["429", "ok"]},
                {"match": "proof-bg:*:item-0000[1-3]:*", "steps": ["429", "ok"]},
                {"match": "proof-bg:*:item-0001[1-3]:*", "steps": ["503", "ok"]},
            ],
        }
    )
    emoji_every: int = 97  # every N-th item is emoji only: answered empty, parked as empty


@dataclass
class NightResult:
    """What happened: per channel verdicts, the emulator's figures, timings, the workers."""

    verdicts: dict[str, Verdict]
    stats: dict[str, Any]
    limits_output: str
    waves: int
    seconds: float
    runs: list[dict[str, Any]]
    runs_per_worker: dict[str, int]
    load: tuple[float, float, float]

    @property
    def rates(self) -> dict[str, Any]:
        found: dict[str, Any] = self.stats.get("rates", {}).get(MODEL, {})
        return found


def _prefect_file(root: Path, items: Mapping[str, int]) -> Path:
    deployments = []
    for channel, (entrypoint, params) in _DEPLOYMENTS.items():
        if not items.get(channel):
            continue
        deployments.append(
            {
                "name": f"proof-{channel}",
                "entrypoint": entrypoint,
                "parameters": {
                    "pipeline": f"tests.proof.pipelines:{channel}",
                    "day": DAY.isoformat(),
                    **params,
                },
                "work_pool": {"name": POOL, "work_queue_name": "default", "job_variables": {}},
            }
        )
    path = root / "prefect.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "gemini-ledger-workers",
                "prefect-version": "3.9.1",
                "build": None,
                "push": None,
                "deployments": deployments,
            }
        )
    )
    return path


def _settled(worlds: Mapping[str, World]) -> bool:
    return all(w.settled() for w in worlds.values())


def run_night(night: Night, *, root: Path, ledger_url: str) -> NightResult:
    """Run the night to the end (or ``max_waves``) and return what the checker found."""
    root.mkdir(parents=True, exist_ok=True)
    with (
        prefect_server(services=False) as server,
        RunningEmulator(scenario=dict(night.scenario), seed=11) as emulator,
    ):
        worlds = {
            channel: World(
                channel=channel,
                root=root,
                ledger_url=ledger_url,
                emulator=emulator,
                prefect_api=server.url,
                items=n,
            )
            for channel, n in night.items.items()
            if n
        }
        pool = server.cli("work-pool", "create", POOL, "--type", "process")
        assert pool.returncode == 0, pool.stdout + pool.stderr
        deployed = server.cli(
            "--no-prompt",
            "deploy",
            "--all",
            "--prefect-file",
            str(_prefect_file(root, night.items)),
        )
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        limits = subprocess.run(
            [
                sys.executable,
                "-m",
                "flows.cli",
                "limits",
                "apply",
                "--rpm",
                str(night.rpm),
                "--concurrency",
                str(night.concurrency),
                "--model",
                MODEL,
            ],
            cwd=ROOT,
            env=server.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert limits.returncode == 0, limits.stdout + limits.stderr

        env = dict(server.env)
        for world in worlds.values():
            env.update(world.environ())
        env.update(
            {
                "GEMINI_API_KEY": os.environ.get("GEMINI_API_KEY", "test-key-workers"),
                "PYTHONPATH": str(ROOT),
                "PROOF_EMOJI_EVERY": str(night.emoji_every),
                "PREFECT_WORKER_QUERY_SECONDS": "1",
                "PREFECT_WORKER_PREFETCH_SECONDS": "0",
                "PREFECT_LOGGING_LEVEL": "INFO",  # the worker names each run it submits
            }
        )
        workers: list[tuple[subprocess.Popen[bytes], Path]] = []
        with server.client() as client:
            deployments = {
                d.name: d for d in client.read_deployments() if d.name.startswith("proof-")
            }
        started = time.monotonic()
        runs: list[Any] = []
        waves = 0
        try:
            for i in range(night.workers):
                log = root / f"worker-{i}.log"
                workers.append(
                    (
                        subprocess.Popen(
                            [
                                PREFECT,
                                "worker",
                                "start",
                                "--pool",
                                POOL,
                                "--name",
                                f"w{i}",
                                "--limit",
                                str(night.worker_limit),
                            ],
                            cwd=root,
                            env=env,
                            stdout=subprocess.DEVNULL,
                            stderr=log.open("wb"),
                        ),
                        log,
                    )
                )
            started = time.monotonic()
            while waves < night.max_waves and not _settled(worlds):
                waves += 1
                wave = _start_wave(server, deployments, night.copies)
                runs += _wait_for(server, wave, night.wave_timeout_s, workers)
            seconds = time.monotonic() - started
        finally:
            for proc, _ in workers:
                stop(proc)
        stats = emulator.stats()
        verdicts = {channel: world.check() for channel, world in worlds.items()}
    per_worker = {
        log.stem: sum(log.read_text(errors="replace").count(str(r.id)) > 0 for r in runs)
        for _, log in workers
    }
    return NightResult(
        verdicts=verdicts,
        stats=stats,
        limits_output=limits.stdout,
        waves=waves,
        seconds=seconds,
        runs=[_described(r, workers) for r in runs],
        runs_per_worker=per_worker,
        load=os.getloadavg(),
    )


def _described(run: Any, workers: list[tuple[Any, Path]]) -> dict[str, Any]:
    """A run's name and state; for one that did not complete, its state's message and the
    workers' log lines naming it too (what a failure of the night test needs to be read)."""
    state = run.state
    out: dict[str, Any] = {"name": run.name, "state": state.type.value if state else None}
    if state is None or not state.is_completed():
        out["message"] = state.message if state else None
        out["log"] = [
            f"{log.stem}: {line}"
            for _, log in workers
            for line in log.read_text(errors="replace").splitlines()
            if str(run.id) in line or run.name in line
        ][-20:]
    return out


def _start_wave(server: Any, deployments: Mapping[str, Any], copies: int) -> list[Any]:
    with server.client() as client:
        return [
            client.create_flow_run_from_deployment(d.id)
            for _ in range(copies)
            for d in deployments.values()
        ]


def _wait_for(
    server: Any, wave: list[Any], timeout: float, workers: list[tuple[Any, Path]]
) -> list[Any]:
    """Poll the server until every run of the wave is final (or fail after ``timeout``)."""
    deadline = time.monotonic() + timeout
    with server.client() as client:
        while True:
            runs = [client.read_flow_run(r.id) for r in wave]
            if all(r.state is not None and r.state.is_final() for r in runs):
                return runs
            for proc, log in workers:
                assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, [
                (r.name, r.state.type if r.state else None) for r in runs
            ]
            time.sleep(0.5)  # polling the server's view, not synchronisation
