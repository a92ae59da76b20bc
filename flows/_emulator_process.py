"""The bundled emulator as a separate process, for the demo and ``doctor --compare-shapes``.

``flows`` never imports the ``emulator`` package (``tests/test_layers.py`` holds it): the
emulator stands apart, as the real API does. What needs one runs ``python -m emulator`` on a
free loopback port, waits until it answers, and talks to it over HTTP only: the SDK through
``base_url``, the demo's counters through ``GET /_emulator/stats``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from types import TracebackType
from typing import IO, Any

import httpx

__all__ = ["EmulatorProcess", "ServedProcess", "emulator_command", "free_port"]

# The emulator's control route that answers once it serves (emulator/_app.py).
_READY_PATH = "/_emulator/stats"


def emulator_command(
    *,
    host: str,
    port: int,
    scenario: str,
    seed: int,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
) -> list[str]:
    """The argv of ``python -m emulator`` serving ``scenario`` on ``host:port``."""
    cmd = [sys.executable, "-m", "emulator", "--host", host, "--port", str(port)]
    cmd += ["--scenario", scenario, "--seed", str(seed)]
    if webhook_url:
        cmd += ["--webhook-url", webhook_url]
    if webhook_secret:
        cmd += ["--webhook-secret", webhook_secret]
    return cmd


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServedProcess:
    """``python -m emulator`` (``cmd``) as a subprocess, its stderr in a temporary file (never
    a pipe: a full pipe would block the server), and the wait until it answers.

    Shared by :class:`EmulatorProcess` and ``emulator.testing.RunningEmulator`` (the tests'
    emulator), so the start, the readiness poll and the stop are written once."""

    def __init__(self, cmd: list[str], *, env: dict[str, str]) -> None:
        self._log: IO[bytes] | None = tempfile.TemporaryFile(prefix="emulator-stderr-")  # noqa: SIM115 (closed in stop)
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=self._log
        )

    def wait_ready(self, http: httpx.Client, *, startup_s: float) -> None:
        """Return once ``GET /_emulator/stats`` answers 200 on ``http``'s base URL; stop the
        process and raise if it exits first or does not answer within ``startup_s``."""
        deadline = time.monotonic() + startup_s
        while True:
            proc = self._proc
            assert proc is not None, "the process was stopped"
            if proc.poll() is not None:
                code, said = proc.returncode, self.stderr()
                self.stop()
                raise RuntimeError(f"the emulator exited with {code}: {said.strip()}")
            try:
                if http.get(_READY_PATH, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the emulator did not answer on {http.base_url}")
            time.sleep(0.05)  # a poll interval, bounded by the deadline above

    def stderr(self) -> str:
        """What the process wrote to stderr so far (for the message of a failure)."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        """Terminate the process (killed if it does not exit within 5 s); idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None


class EmulatorProcess:
    """Context manager: ``python -m emulator`` on a free loopback port, ready on entry,
    terminated on exit."""

    def __init__(self, *, scenario: str = "clean", seed: int = 0, startup_s: float = 30.0):
        self.scenario = scenario
        self.seed = seed
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.startup_s = startup_s
        self._served: ServedProcess | None = None
        self._http = httpx.Client(base_url=self.base_url, timeout=10.0)

    def __enter__(self) -> EmulatorProcess:
        cmd = emulator_command(
            host="127.0.0.1", port=self.port, scenario=self.scenario, seed=self.seed
        )
        self._served = ServedProcess(cmd, env=dict(os.environ))
        self._served.wait_ready(self._http, startup_s=self.startup_s)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()
        self._http.close()

    def env(self) -> dict[str, str]:
        """Environment variables that point the SDK at this emulator."""
        return {"GOOGLE_GEMINI_BASE_URL": self.base_url, "GEMINI_API_KEY": "test-key"}

    def stats(self) -> dict[str, Any]:
        """The emulator's counters (``GET /_emulator/stats``)."""
        resp = self._http.get(_READY_PATH)
        resp.raise_for_status()
        result: dict[str, Any] = resp.json()
        return result

    def _stop(self) -> None:
        served, self._served = self._served, None
        if served is not None:
            served.stop()
