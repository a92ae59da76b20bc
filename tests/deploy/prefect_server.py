"""A real `prefect server start` subprocess for deployment tests: own home, fresh database."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import Deployment

from emulator.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
POOL = "gemini-ledger"

# Keys a test process may carry that a worker must not inherit (it reads the Secret block).
_KEY_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")


@dataclass
class Server:
    """The running server: its API URL and the environment that points the CLI at it."""

    url: str
    env: dict[str, str]
    home: Path

    def client(self) -> SyncPrefectClient:
        return SyncPrefectClient(self.url)

    def cli(
        self, *args: str, timeout: float = 180, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the prefect CLI from the repo root against this server."""
        return subprocess.run(
            [PREFECT, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )

    def deploy_all(self) -> dict[str, Deployment]:
        """The process pool created and `prefect --no-prompt deploy --all` run from the root."""
        pool = self.cli("work-pool", "create", POOL, "--type", "process")
        assert pool.returncode == 0, pool.stdout + pool.stderr
        result = self.cli("--no-prompt", "deploy", "--all")
        assert result.returncode == 0, result.stdout + result.stderr
        with self.client() as client:
            return {d.name: d for d in client.read_deployments()}

    def store_secret(self, which: str, value: str) -> None:
        """``gemini-ledger secret set <which>`` against this server, the value on stdin."""
        stored = subprocess.run(
            [sys.executable, "-m", "flows.cli", "secret", "set", which],
            cwd=ROOT,
            env=self.env,
            input=value + "\n",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert stored.returncode == 0, stored.stdout + stored.stderr
        assert value not in stored.stdout + stored.stderr

    def deployment(self, name: str) -> Deployment | None:
        with self.client() as client:
            found = [d for d in client.read_deployments() if d.name == name]
        return found[0] if found else None


@contextlib.contextmanager
def prefect_server(*, services: bool, extra_env: dict[str, str] | None = None) -> Iterator[Server]:
    """`prefect server start` on a free loopback port; with ``services`` its scheduler runs."""
    home = tempfile.mkdtemp(prefix="gl-deploy-prefect-")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PREFECT_") and k not in _KEY_VARIABLES
    }
    env.update(
        PREFECT_HOME=home,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        **(extra_env or {}),
    )
    log = open(Path(home) / "server.log", "wb")  # noqa: SIM115 - closed in finally
    command = [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        command if services else [*command, "--no-services"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        with httpx.Client(timeout=2.0) as http:
            while True:
                assert proc.poll() is None, (Path(home) / "server.log").read_text()
                try:
                    if http.get(f"{url}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "Prefect server not healthy in 120 s"
                time.sleep(0.2)
        yield Server(url=url, env={**env, "PREFECT_API_URL": url}, home=Path(home))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def stop(proc: subprocess.Popen[bytes]) -> bytes:
    """Stop a worker or receiver; one slow to stop on SIGTERM is killed (not under test)."""
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err or b""
