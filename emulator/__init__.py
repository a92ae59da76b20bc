"""A local Gemini API emulator that the real google-genai SDK talks to over HTTP."""

from __future__ import annotations

import time

from ._app import KEY_HEADER, KEY_LABEL, create_app
from ._scenario import BUILTINS, Scenario, ScenarioError, load_scenario

__all__ = [
    "BUILTINS",
    "KEY_HEADER",
    "KEY_LABEL",
    "Scenario",
    "ScenarioError",
    "create_app",
    "load_scenario",
    "serve",
]


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    scenario: Scenario | str = "clean",
    seed: int = 0,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
) -> None:
    """Serve the emulator with uvicorn until interrupted (blocking)."""
    import uvicorn

    app = create_app(
        scenario=scenario,
        seed=seed,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        clock=time.time,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
