"""The receiver driven by the emulator's own signed, at-least-once webhooks, and the CLI."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from google.genai import types

from emulator.testing import RunningEmulator, free_port
from tests.child_env import child_env
from tests.emulator.helpers import MODEL, upload_and_create

from .conftest import SECRET, Receiver, signed, wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_emulator_webhooks_duplicates_processed_once(
    serve_receiver: Callable[..., Receiver],
) -> None:
    """Every event sent twice: each batch reconciles once, the interaction is only recorded."""
    receiver = serve_receiver()
    with RunningEmulator(
        scenario={"webhook_duplicate_rate": 1.0},
        seed=3,
        webhook_url=receiver.url,
        webhook_secret=SECRET,
    ) as emu:
        client = emu.client()
        jobs = [upload_and_create(client, {"a": "x"}, f"hooked-{i}") for i in range(2)]
        # Batches this ledger made (it ignores any other batch of the project); the
        # emulator sends a job's event when a poll first sees it finished, just below.
        receiver.know(*(str(job.name) for job in jobs))
        for job in jobs:
            assert client.batches.get(name=job.name).state == types.JobState.JOB_STATE_SUCCEEDED
        interaction = client.interactions.create(
            model=MODEL, input="x", background=True, labels={"gemini_ledger_key": "k1"}
        )
        client.interactions.get(interaction.id)
        # Three events, each delivered twice, all acknowledged with a 2xx.
        wait_until(lambda: emu.stats()["webhooks_sent"] >= 6, what="six deliveries")
        assert emu.stats()["webhooks_failed"] == 0
    wait_until(lambda: len(receiver.calls) >= 2, what="two reconciles")
    assert sorted(receiver.calls) == sorted(job.name for job in jobs)
    rows = receiver.deliveries()
    assert sorted((r["event_type"], r["subject"]) for r in rows) == sorted(
        [("batch.succeeded", job.name) for job in jobs]
        + [("interaction.completed", interaction.id)]
    )


def _cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _base_env(sqlite_url: str) -> dict[str, str]:
    return child_env(
        {"LEDGER_DATABASE_URL": sqlite_url},
        drop=lambda k: k.startswith("LEDGER_") or k == "PREFECT_API_URL",
    )


def test_cli_serve_receives_and_never_prints_the_secret(sqlite_url: str) -> None:
    """`webhook serve` answers signed deliveries and keeps the secret out of its output."""
    port = free_port()
    env = {**_base_env(sqlite_url), "LEDGER_WEBHOOK_SECRET": SECRET}
    proc = _cli(["webhook", "serve", "--host", "127.0.0.1", "--port", str(port)], env)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=5.0) as http:

            def healthy() -> bool:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                try:
                    return http.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(healthy, timeout=30, what="the receiver to start")
            body = '{"type": "interaction.completed", "data": {"id": "int-cli"}}'
            resp = http.post("/webhook", content=body, headers=signed(body, msg_id="msg_cli"))
            assert resp.status_code == 200
            forged = http.post("/webhook", content=body, headers=signed(body, secret="whsec_eA=="))
            assert forged.status_code == 401
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    output = (out + err).decode(errors="replace")
    assert "msg_cli" in output
    assert SECRET not in output and SECRET.removeprefix("whsec_") not in output


def test_cli_serve_without_secret_exits_with_an_error(sqlite_url: str) -> None:
    """With no secret configured the command says what to set and exits 1."""
    proc = _cli(["webhook", "serve", "--port", str(free_port())], _base_env(sqlite_url))
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert b"LEDGER_WEBHOOK_SECRET" in err
