"""After a small night (batch and background ticks in real subprocesses, the emulator's signed
webhooks received by ``gemini-ledger webhook serve``), neither the API key nor the webhook
secret appears in the ledger's files, the processes' output, Prefect's logs, runs and
artifacts, or the side-effect outputs."""

from __future__ import annotations

import base64
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from emulator.testing import RunningEmulator, free_port
from tests.webhooks.signing import wait_until

from .harness import ROOT, World
from .matrix import SCENARIO


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], deadline_s: float = 60) -> None:
    import time

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"receiver exited with {proc.returncode}")
        try:
            if httpx.get(url + "healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)  # polling a condition with a deadline, not synchronising on time
    raise TimeoutError("receiver not healthy")


def _prefect_texts() -> list[str]:
    """Everything Prefect kept about the runs: logs, artifacts, run parameters and states."""
    from prefect.client.orchestration import get_client

    def every(read: Any) -> list[Any]:
        found: list[Any] = []
        while True:
            page = read(limit=200, offset=len(found))
            found += page
            if len(page) < 200:
                return found

    with get_client(sync_client=True) as client:
        texts = [f"{log.name} {log.message}" for log in every(client.read_logs)]
        for read in (client.read_artifacts, client.read_flow_runs, client.read_task_runs):
            texts += [record.model_dump_json() for record in every(read)]
    return texts


def test_no_secret_anywhere_after_a_night(tmp_path: Path, prefect_api: str) -> None:
    """The API key and the webhook secret never reach the ledger, logs, artifacts or outputs."""
    api_key = f"AIzaProof{secrets.token_hex(16)}"
    secret_bytes = secrets.token_bytes(24)
    webhook_secret = "whsec_" + base64.b64encode(secret_bytes).decode()
    needles = {
        "api key": api_key.encode(),
        "webhook secret": webhook_secret.encode(),
        "webhook secret body": webhook_secret.removeprefix("whsec_").encode(),
    }
    port = free_port()
    receiver_url = f"http://127.0.0.1:{port}/"
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    outputs: list[str] = []
    with RunningEmulator(
        scenario=SCENARIO,
        seed=7,
        webhook_url=receiver_url + "webhook",
        webhook_secret=webhook_secret,
    ) as emu:
        worlds = [
            World(
                channel=channel,
                root=tmp_path,
                ledger_url=ledger_url,
                emulator=emu,
                prefect_api=prefect_api,
                items=6,
                extra_env={"GEMINI_API_KEY": api_key},
            )
            for channel in ("batch", "background")
        ]
        env = worlds[0].subprocess_env(LEDGER_WEBHOOK_SECRET=webhook_secret)
        rx_log = (tmp_path / "receiver.log").open("w+b")
        receiver = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "webhook", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=rx_log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_healthy(receiver_url, receiver)
            for world in worlds:
                for _ in range(5):
                    run = world.tick_subprocess()
                    assert run.returncode == 0, run.stderr[-3000:]
                    outputs += [run.stdout, run.stderr]
                    if world.settled():
                        break
                verdict = world.check()
                assert verdict.ok, verdict.problems
                assert verdict.parked_by_class == {"permanent:400": 1}
            # The receiver really accepted signed deliveries (sent after the response, so
            # polled for with a deadline).
            wait_until(lambda: emu.stats()["webhooks_sent"] >= 1, what="a delivered webhook")
        finally:
            receiver.terminate()
            receiver.wait(timeout=30)
        rx_log.seek(0)
        outputs.append(rx_log.read().decode(errors="replace"))
        rx_log.close()

    places: dict[str, bytes] = {}
    db = tmp_path / "ledger.db"
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = Path(f"{db}{suffix}")
        if path.exists():
            places[path.name] = path.read_bytes()
    assert places["ledger.db"]  # the ledger really is there
    for n, text in enumerate(outputs):
        places[f"process output {n}"] = text.encode()
    for n, text in enumerate(_prefect_texts()):
        places[f"prefect record {n}"] = text.encode()
    for path in tmp_path.rglob("*"):
        if path.is_file() and (path.parent.name == "out" or path.name == "completions.log"):
            places[f"output {path.name}"] = path.read_bytes()
    assert any(name.startswith("output ") for name in places)
    assert any(name.startswith("prefect record") for name in places)
    leaks = [
        f"{what} in {where}"
        for where, data in places.items()
        for what, needle in needles.items()
        if needle in data
    ]
    assert not leaks, leaks
