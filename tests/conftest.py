"""Shared fixtures: ledgers on a real SQLite file and a real PostgreSQL, the emulator in a real
subprocess, and a real Prefect API (the test harness) for flow tests."""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Iterator

# Prefect reads its settings at import: point it at a throwaway home before anything imports it.
_PREFECT_HOME = tempfile.mkdtemp(prefix="gl-prefect-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_BATCH_INTERVAL", "0.3")
os.environ.pop("PREFECT_API_URL", None)
os.environ.setdefault("GEMINI_API_KEY", "test-api-key-not-secret-0000")

import pytest  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

POSTGRES_URL = os.environ.get(
    "LEDGER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A ledger URL for a fresh SQLite file."""
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A ledger URL for a fresh PostgreSQL database, dropped afterwards.

    Never skipped: if the server is down the test fails, so CI cannot go green without it.
    """
    admin_url = make_url(POSTGRES_URL)
    name = f"gl_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - the message is the point
        raise RuntimeError(
            f"PostgreSQL at {admin_url.render_as_string()} is not reachable ({exc}); start it"
            " (see README) or set LEDGER_TEST_POSTGRES_URL"
        ) from exc
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request) -> str:
    """A fresh ledger URL on each backend."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return request.getfixturevalue(fixture)


@pytest.fixture(scope="session")
def emulator_server():
    """One emulator subprocess for the session (reset per test by ``emulator``)."""
    from emulator.testing import RunningEmulator

    with RunningEmulator(scenario="clean", seed=7) as running:
        yield running


@pytest.fixture
def emulator(emulator_server, monkeypatch):
    """The session's emulator, reset to the clean scenario, with the SDK pointed at it."""
    emulator_server.reset()
    emulator_server.set_scenario("clean", seed=7)
    for name, value in emulator_server.env().items():
        monkeypatch.setenv(name, value)
    return emulator_server


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A real Prefect API (the test harness's temporary server); yields its URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


_postgres_ran = {"n": 0}


def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed and "postgres" in report.keywords:
        _postgres_ran["n"] += 1


def pytest_sessionfinish(session, exitstatus):
    """With LEDGER_REQUIRE_POSTGRES=1 (CI), a run in which no PostgreSQL test passed fails."""
    required = os.environ.get("LEDGER_REQUIRE_POSTGRES") == "1"
    if required and not _postgres_ran["n"] and exitstatus == 0 and session.testscollected:
        print("\nLEDGER_REQUIRE_POSTGRES=1 but no PostgreSQL test ran", file=sys.stderr)
        session.exitstatus = 1
