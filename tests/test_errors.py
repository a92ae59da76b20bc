"""Every mistake a user can make is one `error:` line and exit code 1, checked before any
flow starts; a bug keeps its traceback and says so."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from flows import registry
from flows.cli import app
from flows.settings import Settings, load_settings
from ledger import Ledger

runner = CliRunner()


def _refused(args: list[str]) -> str:
    """Run a command that must be refused: exit code 1, one error line, no traceback."""
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty project directory as the current one, with no ledger configured."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the loader may add the directory
    return tmp_path


_BROKEN = {
    "RuntimeError": ("x = 1\nraise RuntimeError('no config file')\n", "no config file", 2),
    "ZeroDivisionError": ("\n\nratio = 1 / 0\n", "division by zero", 3),
    "SyntaxError": ("def broken(:\n    pass\n", "invalid syntax", 1),
}


@pytest.mark.parametrize("kind", sorted(_BROKEN))
def test_a_pipeline_module_that_fails_to_import_is_one_line(project, kind):
    """An exception while importing a pipeline: its type, message and file:line, exit 1."""
    source, message, line = _BROKEN[kind]
    module = f"broken_{kind.lower()}"
    (project / f"{module}.py").write_text(source)
    error = _refused(["tick", f"{module}:pipeline"])
    assert kind in error and message in error
    assert f"{module}.py:{line}" in error
    assert not (project / "var").exists()  # nothing touched


def test_debug_shows_the_traceback_behind_the_line(project):
    """`--debug` prints the traceback as well as the error line."""
    (project / "noisy.py").write_text("raise RuntimeError('boom')\n")
    result = runner.invoke(app, ["--debug", "tick", "noisy:pipeline"])
    assert result.exit_code == 1
    assert "Traceback" in result.output and "error: " in result.output


def test_module_attr_resolves_from_the_current_directory(project):
    """`tick translate:pipeline` next to translate.py finds it, as `python -m` would."""
    (project / "translate_here.py").write_text(
        "from dataclasses import replace\n"
        "from flows.examples.articles import pipeline as _p\n"
        "pipeline = replace(_p, name='translate')\n"
    )
    assert registry.get_pipeline("translate_here:pipeline", Settings.given()).name == "translate"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["replay", "--limit", "0"], "--limit"),
        (["replay", "--limit", "-1"], "--limit"),
        (["replay", "--rate", "0"], "--rate"),
        (["replay", "--rate", "-2"], "--rate"),
        (["replay", "--rate", "nan"], "--rate"),
        (["replay", "--rate", "inf"], "--rate"),
        (["replay", "--rate", "-inf"], "--rate"),
        (["replay", "--error-class", "a\x00b"], "NUL"),
        (["dead-letter", "--day", "2026-13-01"], "--day"),
        (["tick", "reviews", "--day", "yesterday"], "--day"),
    ],
)
def test_parameters_are_refused_before_any_flow_starts(project, monkeypatch, args, words):
    """A bad parameter is one line naming it; no flow (and no Prefect server) is started."""

    def no_flow(*_a, **_k):
        raise AssertionError("a flow was started")

    import flows.ops.replay
    import flows.tick

    monkeypatch.setattr(flows.ops.replay, "replay", no_flow)
    monkeypatch.setattr(flows.tick, "run_tick", no_flow)
    assert words in _refused(args)


@pytest.mark.parametrize(
    "args",
    [["status"], ["dead-letter"], ["replay"], ["replay", "--execute"], ["reconcile", "batches/x"]],
)
def test_reading_commands_refuse_a_missing_ledger_and_create_none(project, args):
    """Outside a project, commands that read the ledger say where they looked; no file appears."""
    error = _refused(args)
    assert error == (
        "error: no ledger at var/ledger.db: run from your project's directory"
        " or set LEDGER_DATABASE_URL; to start a new ledger there, run `gemini-ledger db upgrade`"
    )
    assert not (project / "var").exists()


def test_a_corrupt_ledger_file_is_one_line(project, monkeypatch):
    """A file that is not a SQLite database: one line, not the driver's traceback."""
    bad = project / "ledger.db"
    bad.write_bytes(b"this is not a database" * 300)
    monkeypatch.setenv("LEDGER_DATABASE_URL", f"sqlite:///{bad}")
    for args in (["status"], ["dead-letter"], ["db", "upgrade"]):
        assert "not a database" in _refused(args)


def test_a_malformed_ledger_file_is_one_line(project, monkeypatch, sqlite_url):
    """A SQLite ledger whose pages are damaged: one line naming the damage."""
    ledger = Ledger(sqlite_url)
    from ledger import NewJob

    ledger.enroll(
        (NewJob(f"k{i}", {"t": "x" * 200}) for i in range(2000)),
        pipeline="p",
        channel="batch",
        model="m",
    )
    ledger.dispose()
    from ledger.testing import checkpointer

    path = Path(sqlite_url.removeprefix("sqlite:///"))
    cp = checkpointer(ledger.engine)
    assert cp is None or cp.settle()
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    page = 16_384
    for offset in range(page * 2, len(data) - page, page * 3):
        data[offset : offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    assert "malformed" in _refused(["status"])


def test_a_read_only_ledger_is_refused_before_a_tick_starts(project, monkeypatch, sqlite_url):
    """A ledger this process may not write: `tick` and `replay --execute` refuse in one line."""
    Ledger(sqlite_url).dispose()
    path = sqlite_url.removeprefix("sqlite:///")
    monkeypatch.setenv("LEDGER_DATABASE_URL", f"sqlite:///file:{path}?mode=ro&uri=true")
    assert "readonly" in _refused(["tick", "reviews"])
    assert "readonly" in _refused(["replay", "--execute"])
    assert "readonly" in _refused(["reconcile", "batches/x"])


def test_an_unreachable_ledger_is_one_line(project, monkeypatch):
    """A PostgreSQL ledger nobody listens for: one line naming the server, for every command."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/ledger")
    for args in (["status"], ["tick", "reviews"], ["replay"], ["db", "upgrade"]):
        assert "127.0.0.1" in _refused(args)


def test_a_bug_of_ours_keeps_its_traceback_and_says_so(project, monkeypatch, sqlite_url):
    """An unexpected exception inside our code is not dressed as a user error: exit 2."""
    Ledger(sqlite_url).dispose()
    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    monkeypatch.setattr(Ledger, "counts", lambda self, **_kw: None)  # cli.py then fails
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 2
    assert "Traceback" in result.output
    assert "AttributeError" in result.output and "bug in gemini-ledger" in result.output


def test_a_value_error_from_pipeline_code_is_not_a_user_error(project, monkeypatch):
    """A ValueError raised by a pipeline's own code keeps its traceback (it used to be shown
    as a one-line user error, hiding where it came from)."""
    (project / "valuey.py").write_text(
        "from dataclasses import replace\n"
        "from flows.examples.reviews import pipeline as _p\n"
        "def load(day):\n"
        "    return [int('not a number')]\n"
        "pipeline = replace(_p, name='valuey', load_items=load)\n"
    )
    Ledger(load_settings().database_url, create=True).dispose()  # a tick never creates one
    import flows.tick

    def tick(name, *, day=None, params=None, **_options):
        p = registry.get_pipeline(name, load_settings())
        return list(p.load_items(day))

    monkeypatch.setattr(flows.tick, "run_tick", tick)
    result = runner.invoke(app, ["tick", "valuey:pipeline"])
    assert result.exit_code == 2
    assert "Traceback" in result.output and "valuey.py:4" in result.output
    assert "outside gemini-ledger" in result.output


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _prefect_api_url(url: str) -> Iterator[None]:
    """PREFECT_API_URL as a user exported it (Prefect's settings are read once per process)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


@pytest.mark.parametrize(
    "args",
    [
        ["tick", "reviews"],
        ["replay", "--execute"],
        ["limits", "apply", "--rpm", "5"],
        ["secret", "set", "api-key"],
    ],
)
def test_an_unreachable_prefect_api_is_one_line_with_the_url_and_the_fix(
    project, monkeypatch, sqlite_url, args
):
    """PREFECT_API_URL where nothing listens: one line with the URL and the fix, exit 1; not
    Prefect's traceback and "unexpected RuntimeError ... this is a bug", exit 2."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    url = f"http://127.0.0.1:{_closed_port()}/api"
    with _prefect_api_url(url):
        error = _refused(args)
    assert f"cannot reach the Prefect API at {url} (PREFECT_API_URL)" in error, error
    assert "Fix: start the server (prefect server start) or correct PREFECT_API_URL" in error
    assert "bug" not in error


def test_a_prefect_api_url_without_its_path_says_where_the_api_is(
    project, monkeypatch, sqlite_url, prefect_api
):
    """PREFECT_API_URL naming a real server but not its API (no /api): one line with the URL
    that works."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    server = prefect_api.removesuffix("/api")
    with _prefect_api_url(server):
        error = _refused(["tick", "reviews"])
    assert f"PREFECT_API_URL={server} answers, but not as a Prefect API" in error, error
    assert f"Fix: set PREFECT_API_URL={prefect_api}" in error


def test_a_mistyped_prefect_api_scheme_is_one_line(project, monkeypatch, sqlite_url):
    """A URL that is not http(s) (htp://): one line saying so."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    with _prefect_api_url("htp://127.0.0.1:4200/api"):
        error = _refused(["tick", "reviews"])
    assert "PREFECT_API_URL=htp://127.0.0.1:4200/api is not an http(s) URL" in error, error


def test_a_prefect_api_gone_midway_is_one_line_not_a_bug(
    project, monkeypatch, sqlite_url, prefect_api
):
    """The Prefect API answers before the flow starts, then goes away: Prefect's "Failed to
    reach API" becomes the same one line (exit 1), never "this is a bug"."""
    import flows.tick

    def gone(*_a, **_k):
        try:
            raise httpx.ConnectError("[Errno 111] Connection refused")
        except httpx.ConnectError as exc:
            raise RuntimeError(f"Failed to reach API at {prefect_api}/") from exc

    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    monkeypatch.setattr(flows.tick, "run_tick", gone)
    error = _refused(["tick", "reviews"])
    assert f"cannot reach the Prefect API at {prefect_api}" in error, error
    assert "Connection refused" in error and "bug" not in error
