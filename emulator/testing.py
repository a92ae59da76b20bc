"""Run the emulator as a real subprocess for tests and benchmarks.

Usage::

    with RunningEmulator(scenario="clean", seed=1) as emu:
        client = emu.client()
        client.models.generate_content(model="gemini-2.5-flash", contents="hi")
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

# The start, readiness poll and stop the demo's and doctor's emulator process shares (a test
# helper may import flows; the emulator's own modules never do: tests/test_layers.py).
from flows._emulator_process import ServedProcess, emulator_command, free_port

# The emulator's parts its own unit tests and the benches reach (the answers it generates,
# its rate meter, the error bodies it sends, its state core, its media limits): named here
# so a test never imports a private ``emulator._x`` module (``tests/test_private_imports.py``).
from ._answers import answer_text, count_tokens, generate_value, rng_for
from ._errors import (
    daily_quota,
    help_only_429,
    model_not_found,
    no_quota,
    project_fault,
    step_status,
)
from ._media import REQUEST_LIMIT
from ._rates import RateMeter
from ._scenario import Scenario, load_scenario
from ._state import FILE_TTL_S, ApiError, Core, FileRec

__all__ = [
    "FILE_TTL_S",
    "REQUEST_LIMIT",
    "ApiError",
    "Core",
    "FileRec",
    "RateMeter",
    "RunningEmulator",
    "answer_text",
    "count_tokens",
    "daily_quota",
    "free_port",
    "generate_value",
    "help_only_429",
    "load_scenario",
    "model_not_found",
    "no_quota",
    "project_fault",
    "rng_for",
    "step_status",
]


class RunningEmulator:
    """Context manager: ``python -m emulator`` on a free loopback port, ready on entry."""

    def __init__(
        self,
        *,
        scenario: Scenario | dict[str, Any] | str = "clean",
        seed: int = 0,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        port: int | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        self._scenario = scenario
        self.seed = seed
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.startup_timeout = startup_timeout
        self._served: ServedProcess | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._http = httpx.Client(base_url=self.base_url, timeout=10.0)

    # ------------------------------------------------------------------ lifecycle
    def _scenario_arg(self) -> str:
        scenario = self._scenario
        if isinstance(scenario, str):
            return scenario
        data = scenario.model_dump() if isinstance(scenario, Scenario) else scenario
        self._tmp = tempfile.TemporaryDirectory(prefix="emulator-")
        path = Path(self._tmp.name) / "scenario.json"
        path.write_text(json.dumps(data), encoding="utf-8")
        return str(path)

    def start(self) -> RunningEmulator:
        cmd = emulator_command(
            host="127.0.0.1",
            port=self.port,
            scenario=self._scenario_arg(),
            seed=self.seed,
            webhook_url=self.webhook_url,
            webhook_secret=self.webhook_secret,
        )
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._served = ServedProcess(cmd, env=env)
        try:
            self._served.wait_ready(self._http, startup_s=self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        served, self._served = self._served, None
        if served is not None:
            served.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def stderr(self) -> str:
        """What the emulator process wrote to stderr so far (for debugging a failure)."""
        return "" if self._served is None else self._served.stderr()

    def __enter__(self) -> RunningEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self._http.close()

    # ------------------------------------------------------------------ control
    def stats(self) -> dict[str, Any]:
        """The emulator's counters (``GET /_emulator/stats``)."""
        resp = self._http.get("/_emulator/stats")
        resp.raise_for_status()
        result: dict[str, Any] = resp.json()
        return result

    def received(self) -> dict[str, dict[str, Any]]:
        """The generation settings each key's last request carried, in one form whatever
        the channel sent (``GET /_emulator/received``; ``emulator._settings``)."""
        resp = self._http.get("/_emulator/received")
        resp.raise_for_status()
        result: dict[str, dict[str, Any]] = resp.json()
        return result

    def cached(self) -> dict[str, str]:
        """The cache (``cachedContents/...``) each key's last request named, by key
        (``GET /_emulator/cached``); keys whose requests named none are absent."""
        resp = self._http.get("/_emulator/cached")
        resp.raise_for_status()
        result: dict[str, str] = resp.json()
        return result

    def caches_stored(self) -> int:
        """How many context caches the emulator holds now (live: not deleted, not expired)."""
        return int(self.stats()["caches"]["stored"])

    def reset(self) -> None:
        """Clear all state and counters (the scenario stays)."""
        self._http.post("/_emulator/reset").raise_for_status()

    def set_scenario(
        self, scenario: Scenario | dict[str, Any] | str, seed: int | None = None
    ) -> None:
        """Replace the scenario at runtime: a built-in name, a mapping or a Scenario."""
        if isinstance(scenario, str):
            body: dict[str, Any] = {"name": scenario}
        elif isinstance(scenario, Scenario):
            body = scenario.model_dump()
        else:
            body = dict(scenario)
        if seed is not None:
            body["seed"] = seed
        resp = self._http.post("/_emulator/scenario", json=body)
        if resp.status_code != 200:
            raise ValueError(resp.json().get("error", {}).get("message", resp.text))

    def env(self) -> dict[str, str]:
        """Environment variables that point a subprocess's SDK at this emulator."""
        return {"GOOGLE_GEMINI_BASE_URL": self.base_url, "GEMINI_API_KEY": "test-key"}

    def client(self, api_key: str = "test-key", **http_options: Any) -> Any:
        """A ``google.genai.Client`` for this emulator, with the SDK's retries turned off."""
        from google import genai
        from google.genai import types

        options: dict[str, Any] = {
            "base_url": self.base_url,
            "retry_options": types.HttpRetryOptions(attempts=1),
        }
        options.update(http_options)
        return genai.Client(api_key=api_key, http_options=types.HttpOptions(**options))
