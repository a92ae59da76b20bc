"""Commands and the temporary Prefect server: started only to run a flow, said in one line,
and gone with the command however it ends."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from ledger import Ledger, NewJob
from tests.child_env import child_env
from tests.webhooks.signing import wait_until

ROOT = Path(__file__).resolve().parents[1]
SERVER_APP = "prefect.server.api.server:create_app"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = child_env(drop=lambda k: k == "PREFECT_API_URL")
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger(ledger_url, create=True).dispose()  # a tick never creates a ledger
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        LEDGER_DATABASE_URL=ledger_url,
        ARTICLES_DIR=str(tmp_path / "articles"),
        **extra,
    )
    return env


def _servers_under(pid: int) -> list[int]:
    """Live processes serving Prefect's API whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ")".
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z" and SERVER_APP in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_tick_killed_with_sigkill_leaves_no_server_behind(tmp_path, emulator):
    """SIGKILL a tick while its temporary server runs: the server process dies with it."""
    log = (tmp_path / "tick.log").open("wb")
    tick = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "tick", "articles"],
        cwd=ROOT,
        env=_env(tmp_path, **emulator.env()),
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        (server,) = wait_until(lambda: _servers_under(tick.pid), timeout=120, what="the server")
        tick.send_signal(signal.SIGKILL)
        tick.wait(timeout=30)
        wait_until(lambda: not _alive(server), timeout=30, what="the orphaned server to die")
    finally:
        if tick.poll() is None:
            tick.kill()
            tick.wait()
        log.close()
    assert not _alive(server)


def test_a_tick_without_a_server_says_so_in_one_line_and_logs_no_errors(tmp_path, emulator):
    """The temporary server is announced once; no telemetry or other ERROR lines appear."""
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "tick", "articles"],
        cwd=ROOT,
        env=_env(tmp_path, **emulator.env()),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    said = [line for line in lines if "starting a temporary one" in line]
    assert len(said) == 1 and "PREFECT_API_URL" in said[0]
    assert not [line for line in lines if "ERROR" in line or "telemetry" in line.lower()]


def test_read_only_commands_start_no_prefect_server(tmp_path):
    """status, dead-letter and a dry-run replay answer from the ledger alone."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", create=True)
    ledger.enroll([NewJob("ro:1", {"text": "x"})], pipeline="reviews", channel="batch", model="m")
    ledger.dispose()
    env = _env(tmp_path)
    for command in (["status"], ["dead-letter"], ["replay"], ["replay", "--json"]):
        done = subprocess.run(
            [sys.executable, "-m", "flows.cli", *command],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, (command, done.stderr)
        assert "temporary" not in done.stderr, command
        # A Prefect server, temporary or not, creates its database in PREFECT_HOME.
        assert not list((tmp_path / "prefect-home").glob("*.db")), command
