"""Pre-warmed CLI processes: ``python -m flows.cli ...`` without paying the imports each time.

A tick in a fresh interpreter spends seconds of CPU importing Prefect, the SDK and the flows
before it does anything; the crash matrix starts one or two per test. Instead, one process
per test process (the *zygote*, ``python -m tests.prewarmed``) imports all of that
once, and for each tick forks a child: a real, separate process with its own pid, its own
environment (replaced whole, Prefect's settings re-read from it), its own working directory
and its own stdout and stderr, which runs ``flows.cli`` as ``python -m flows.cli`` would and
ends as that would (a SIGKILL at a crash point is a real SIGKILL of that child; its exit
status is what ``subprocess`` would report). Only the imports are shared, and only those a
fresh interpreter would have done the same way: the zygote serves a tick only if every
``PREFECT_*`` variable (Prefect reads some at import) and ``PYTHONPATH`` are those it was
started with, else :func:`run_cli` starts another zygote for them.

Protocol (one JSON object a line): the zygote prints ``{"ready": threads}`` once imported
(a fork is only safe with one thread: with more, :func:`run_cli` falls back to a plain
subprocess); then for each request ``{"args", "env", "cwd", "out", "err"}`` it prints
``{"pid": n}`` at the fork and ``{"returncode": n}`` once the child has exited. It exits
when its stdin closes (the test process ended).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

__all__ = ["CliRun", "run_cli"]

ROOT = Path(__file__).resolve().parents[1]
_IMPORT_TIME = ("PYTHONPATH",)  # besides every PREFECT_* variable


def _import_key(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(
        sorted((k, v) for k, v in env.items() if k.startswith("PREFECT_") or k in _IMPORT_TIME)
    )


class CliRun:
    """What a finished CLI process left: as ``subprocess.run(..., capture_output=True)``."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


class _Zygote:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.key = _import_key(env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.prewarmed"],
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = self._read(timeout=300)
        self.usable = ready.get("ready") == 1  # one thread: safe to fork

    def _read(self, *, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise subprocess.TimeoutExpired(self.proc.args, timeout)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the pre-warmed process exited ({self.proc.poll()})")
        found: dict[str, Any] = json.loads(line)
        return found

    def run(self, args: list[str], *, env: Mapping[str, str], cwd: Path, timeout: float) -> CliRun:
        assert self.proc.stdin is not None
        with tempfile.TemporaryDirectory(prefix="gl-prewarmed-") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            request = {"args": args, "env": dict(env), "cwd": str(cwd)}
            request |= {"out": str(out), "err": str(err)}
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            pid = int(self._read(timeout=60)["pid"])
            try:
                returncode = int(self._read(timeout=timeout)["returncode"])
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self._read(timeout=60)  # the zygote reaps it
                raise
            read = lambda p: p.read_text(encoding="utf-8", errors="replace")  # noqa: E731
            return CliRun(returncode, read(out), read(err))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


_zygotes: dict[tuple[tuple[str, str], ...], _Zygote] = {}
_lock = threading.Lock()
_KEEP = 2  # zygotes kept at once (one per import-time environment)


@atexit.register
def _close_all() -> None:
    while _zygotes:
        _zygotes.popitem()[1].close()


def run_cli(args: list[str], *, env: Mapping[str, str], cwd: Path, timeout: float) -> CliRun:
    """``python -m flows.cli *args`` in a process of its own, forked from a pre-warmed one
    (or started fresh, if a fork would not be safe)."""
    key = _import_key(env)
    with _lock:
        zygote = _zygotes.get(key)
        if zygote is None:
            while len(_zygotes) >= _KEEP:  # an environment seen once is unlikely to return
                _zygotes.pop(next(iter(_zygotes))).close()
            zygote = _zygotes[key] = _Zygote(env)
        if zygote.usable:
            try:
                return zygote.run(args, env=env, cwd=cwd, timeout=timeout)
            except BaseException:
                del _zygotes[key]  # in an unknown state: the next run starts another
                zygote.close()
                raise
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CliRun(done.returncode, done.stdout, done.stderr)


# -- the zygote --------------------------------------------------------------------------


def _child(request: dict[str, Any], proto: IO[str]) -> None:
    """In the forked child: become ``python -m flows.cli ARGS`` in the request's world."""
    import runpy

    import prefect.context

    proto.close()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, path in ((1, request["out"]), (2, request["err"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    os.chdir(request["cwd"])
    sys.path[0] = request["cwd"]  # where ``python -m`` looks first: its working directory
    os.environ.clear()
    os.environ.update(request["env"])
    prefect.context.refresh_global_settings_context()  # what a fresh import would read
    sys.argv = [sys.executable, *request["args"]]
    # As in a fresh ``python -m flows.cli``: what runs as __main__ (the package's __main__
    # module) is not imported under its own name too, and runpy has no stale copy to warn of.
    sys.modules.pop("flows.cli.__main__", None)
    # Anything raised leaves the interpreter as it would leave ``python -m flows.cli``:
    # SystemExit with the CLI's code, or a traceback and 1; atexit handlers run either way.
    runpy.run_module("flows.cli", run_name="__main__", alter_sys=True)
    raise SystemExit(0)


# What a tick imports (Prefect and the SDK among them), so that a fork starts where a fresh
# tick's imports end; importing only, nothing run.
_WARM = (
    "flows.cli",
    "flows.tick",
    "flows.reconcile",
    "flows.channels.background",
    "flows.channels.batch",
    "flows.channels.direct",
    "flows.gemini.gateway",
    "google.genai",
    "tests.proof.pipelines",
)


def _serve() -> None:
    import importlib

    for name in _WARM:
        importlib.import_module(name)

    proto = os.fdopen(os.dup(1), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(2, 1)  # stray prints from the zygote must not reach the protocol

    def say(**fields: Any) -> None:
        proto.write(json.dumps(fields) + "\n")
        proto.flush()

    say(ready=threading.active_count())
    for line in sys.stdin:
        request = json.loads(line)
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, proto)  # never returns: the child exits from there
        say(pid=pid)
        _, status = os.waitpid(pid, 0)
        say(returncode=os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    _serve()
