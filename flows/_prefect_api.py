"""A Prefect API for a command that runs a flow: the configured server, or a temporary one.

With ``PREFECT_API_URL`` set, flows report to that server and nothing is started. Without
it, Prefect would start its own temporary server, which a ``tick`` killed with SIGKILL (a cron
timeout, the OOM killer) leaves running for good, and whose start-up timeout a busy 2-core
machine exceeds. So the command starts it here instead:

- the server process is tied to this one by ``PR_SET_PDEATHSIG``: the kernel kills it when
  this process dies, however it dies;
- its start-up may take ``GEMINI_LEDGER_PREFECT_STARTUP_S`` seconds (default 180);
- its telemetry is off (there is no network to send it to, and its errors are noise);
- one line on stderr says it is temporary and how to use a real server instead.

A configured server is asked for its health first: a mistyped or unreachable
``PREFECT_API_URL`` is one :class:`PrefectApiUnreachable` line with the URL and the fix, before
any work, instead of Prefect's traceback midway through the flow's start.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from ledger import ConfigurationError, TransientError

__all__ = [
    "STARTUP_ENV",
    "PrefectApiUnreachable",
    "TemporaryServerError",
    "api_available",
    "check_api",
    "prefect_api",
    "prefect_api_fault",
    "temporary_api_url",
]

STARTUP_ENV = "GEMINI_LEDGER_PREFECT_STARTUP_S"
_PR_SET_PDEATHSIG = 1


class TemporaryServerError(TransientError, RuntimeError):
    """The temporary Prefect server did not start."""


class PrefectApiUnreachable(ConfigurationError, RuntimeError):
    """``PREFECT_API_URL`` names no Prefect API that answers (mistyped, or the server is down)."""


_FIX_START = (
    "start the server (prefect server start) or correct PREFECT_API_URL; unset it to run"
    " a command on a temporary server"
)
_temporary: list[str] = []  # the URL of the temporary server this process started, if any


def temporary_api_url() -> str | None:
    """The URL of the temporary server :func:`prefect_api` runs now, or None."""
    return _temporary[-1] if _temporary else None


def _unreachable(url: str, problem: BaseException) -> PrefectApiUnreachable:
    """The one line for a Prefect API that did not answer as one: what it said, the fix."""
    from prefect.exceptions import PrefectHTTPStatusError

    response = getattr(problem, "response", None)
    code = getattr(response, "status_code", None)
    if isinstance(problem, (httpx.UnsupportedProtocol, httpx.InvalidURL)) or not url.startswith(
        ("http://", "https://")
    ):
        return PrefectApiUnreachable(
            f"PREFECT_API_URL={url} is not an http(s) URL. Fix: correct it (a local server's is"
            " http://127.0.0.1:4200/api)"
        )
    if code in (401, 403):
        return PrefectApiUnreachable(
            f"the Prefect API at {url} (PREFECT_API_URL) refused the request ({code}). Fix:"
            " check PREFECT_API_KEY or PREFECT_API_AUTH_STRING"
        )
    if isinstance(problem, (PrefectHTTPStatusError, httpx.HTTPStatusError)) or code is not None:
        parts = urlsplit(url)
        api = f"{parts.scheme}://{parts.netloc}/api"
        suggestion = (
            f"set PREFECT_API_URL={api} (the API is under /api)"
            if parts.path.rstrip("/") != "/api"
            else "correct PREFECT_API_URL (a local server's is http://HOST:4200/api)"
        )
        return PrefectApiUnreachable(
            f"PREFECT_API_URL={url} answers, but not as a Prefect API (GET /health: {code})."
            f" Fix: {suggestion}"
        )
    detail = " ".join(str(problem).split())[:120] or type(problem).__name__
    return PrefectApiUnreachable(
        f"cannot reach the Prefect API at {url} (PREFECT_API_URL): {detail}. Fix: {_FIX_START}"
    )


def check_api(url: str) -> None:
    """Raise :class:`PrefectApiUnreachable` unless the Prefect API at ``url`` answers."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            problem = client.api_healthcheck()
    except Exception as exc:  # the client's own start-up check failed
        # Prefect wraps it: "Failed to reach API at URL", the transport's error as its cause.
        problem = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
    if problem is not None:
        raise _unreachable(url, problem) from problem


def prefect_api_fault(exc: BaseException) -> PrefectApiUnreachable | None:
    """The configured Prefect API's failure behind ``exc`` (it went away mid-command), or None.

    Prefect says "Failed to reach API at URL"; a client call raises the transport's error.
    """
    from prefect.settings import get_current_settings

    url = str(get_current_settings().api.url or temporary_api_url() or "")
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, RuntimeError) and str(current).startswith("Failed to reach API"):
            return _unreachable(
                url or str(current).rsplit(" ", 1)[-1], current.__cause__ or current
            )
        if url and isinstance(current, httpx.TransportError):
            request = getattr(current, "_request", None)
            if request is None or str(request.url).startswith(url.rstrip("/")):
                return _unreachable(url, current)
        current = current.__cause__ or current.__context__
    return None


def api_available() -> bool:
    """A Prefect API to ask: a configured server, or the one a running flow talks to."""
    from prefect.context import FlowRunContext
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url) or FlowRunContext.get() is not None


def _die_with_parent(parent: int) -> Callable[[], None]:
    def arm() -> None:  # runs in the child between fork and exec
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the line above took effect
            os._exit(1)

    return arm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_command(port: int) -> list[str]:
    import prefect

    # What Prefect's own temporary server runs (prefect.server.api.server), started by us.
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(Path(prefect.__file__).parent.parent),
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as http:
        while True:
            if proc.poll() is not None:
                raise TemporaryServerError(
                    f"the temporary Prefect server exited with code {proc.returncode}"
                    " while starting; set PREFECT_API_URL to a running server instead"
                )
            try:
                if http.get(f"{url}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TemporaryServerError(
                    f"the temporary Prefect server did not answer within {timeout_s:.0f} s"
                    f" (raise {STARTUP_ENV}, or set PREFECT_API_URL to a running server)"
                )
            time.sleep(0.2)  # polling a port, not synchronising with our own code


def _drain_to(url: str) -> None:
    """Send the logs and events still queued while the server is up (as Prefect's test
    harness does); stopping it first leaves them retrying against a closed port for minutes."""
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        with contextlib.suppress(RuntimeError):  # no log worker was ever started
            drained: Any = APILogWorker.instance().drain()
            if inspect.isawaitable(drained):
                await drained
        events: Any = EventsWorker.drain_all()
        if inspect.isawaitable(events):
            await events

    run_coro_as_sync(drain())


@contextlib.contextmanager
def prefect_api(announce: Callable[[str], None], *, startup_s: float) -> Iterator[str | None]:
    """Yield the configured API URL, or start a temporary server for the block's duration.

    ``announce`` receives the one line telling the user a temporary server is used;
    ``startup_s``: how long it may take to start (``GEMINI_LEDGER_PREFECT_STARTUP_S``).
    """
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    configured = get_current_settings().api.url
    if configured:
        check_api(configured)
        yield configured
        return
    timeout_s = startup_s
    announce(
        "no Prefect server configured: starting a temporary one for this run (its runs vanish"
        " with it); to keep them, run `prefect server start` and set"
        " PREFECT_API_URL=http://127.0.0.1:4200/api"
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        **get_current_settings().to_environment_variables(exclude_unset=True),
        "PREFECT_UI_ENABLED": "0",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    proc = subprocess.Popen(
        _server_command(port),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent(os.getpid()),
        # Its own session: a Ctrl-C (SIGINT to the terminal's process group) or a group's
        # SIGTERM asks the tick to stop between rows (flows.run._stop), which still needs this
        # server; it is stopped below when the command ends, or killed with it.
        start_new_session=True,
    )
    try:
        _wait_healthy(proc, url, timeout_s)
        _temporary.append(url)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                _temporary.remove(url)
                _drain_to(url)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
