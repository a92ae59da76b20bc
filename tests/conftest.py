"""Shared fixtures: ledgers on a real SQLite file and a real PostgreSQL, the emulator in a real
subprocess, and a real Prefect API (the test harness) for flow tests."""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


def _create_database(admin_url, name: str, *, template: str | None = None) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    clause = f' TEMPLATE "{template}"' if template else ""
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"{clause}'))
    except Exception as exc:  # pragma: no cover - the message is the point
        raise RuntimeError(
            f"PostgreSQL at {admin_url.render_as_string()} is not reachable ({exc}); start it"
            " (see README) or set LEDGER_TEST_POSTGRES_URL"
        ) from exc
    finally:
        admin.dispose()


def _drop_database(admin_url, name: str) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def _migrate(url: str) -> None:
    from ledger import make_engine, upgrade

    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


# Running the Alembic migrations for every test that wants a fresh ledger costs more than
# the test itself on the small ones: the session migrates one template of each backend and
# each test gets a copy (a file copy; PostgreSQL's CREATE DATABASE ... TEMPLATE).


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory) -> Path:
    """A SQLite ledger file at the latest schema, every write in the main file."""
    path = tmp_path_factory.mktemp("ledger-template") / "template.db"
    _migrate(f"sqlite:///{path}")
    # Fold the write-ahead log into the file, so that copying the file alone copies it all
    # (the ledger's checkpoint thread may still hold a connection: TRUNCATE does not care).
    db = sqlite3.connect(path, isolation_level=None)
    try:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        db.close()
    assert busy == 0, "the template ledger's log could not be checkpointed"
    return path


@pytest.fixture(scope="session")
def _postgres_template() -> Iterator[str]:
    """The name of a PostgreSQL database at the latest schema, for CREATE DATABASE TEMPLATE."""
    admin_url = make_url(POSTGRES_URL)
    name = f"gl_template_{uuid.uuid4().hex[:12]}"
    _create_database(admin_url, name)
    try:
        # The engine is disposed before any copy: a template must have no open connection.
        _migrate(admin_url.set(database=name).render_as_string(hide_password=False))
        yield name
    finally:
        _drop_database(admin_url, name)


@pytest.fixture
def unmigrated_sqlite_url(tmp_path) -> str:
    """A ledger URL for a SQLite file that does not exist yet (no schema at all)."""
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def sqlite_url(_sqlite_template, tmp_path) -> str:
    """A ledger URL for a fresh SQLite file, at the latest schema, with no rows."""
    path = tmp_path / "ledger.db"
    shutil.copyfile(_sqlite_template, path)
    return f"sqlite:///{path}"


@contextmanager
def _scratch_database(template: str | None) -> Iterator[str]:
    admin_url = make_url(POSTGRES_URL)
    name = f"gl_test_{uuid.uuid4().hex[:12]}"
    _create_database(admin_url, name, template=template)
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        _drop_database(admin_url, name)


@pytest.fixture
def unmigrated_postgres_url() -> Iterator[str]:
    """A ledger URL for a fresh, empty PostgreSQL database (no schema), dropped afterwards.

    Never skipped: if the server is down the test fails, so CI cannot go green without it.
    """
    with _scratch_database(None) as url:
        yield url


@pytest.fixture
def postgres_url(_postgres_template) -> Iterator[str]:
    """A ledger URL for a fresh PostgreSQL database at the latest schema, dropped afterwards.

    Never skipped: if the server is down the test fails, so CI cannot go green without it.
    """
    with _scratch_database(_postgres_template) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request) -> str:
    """A fresh ledger URL (latest schema, no rows) on each backend."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return request.getfixturevalue(fixture)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def unmigrated_ledger_url(request) -> str:
    """A ledger URL with no schema at all on each backend: for migration and upgrade tests."""
    fixture = "unmigrated_sqlite_url" if request.param == "sqlite" else "unmigrated_postgres_url"
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


# The system tier (scripts/test.sh --all or --system): files whose tests start real Prefect
# servers and workers, kill real processes at crash points, or run whole nights. Besides these,
# a test is in it when marked `system`, `slow` or `alone`. Everything else is the fast tier,
# the default `bash scripts/test.sh`.
SYSTEM_TIER = frozenset(
    {
        "tests/background/test_concurrency.py",  # two tick processes at once
        "tests/background/test_crash.py",  # SIGKILL at the background crash points
        "tests/batch/test_night.py",  # a whole night of batch ticks, both backends
        "tests/batch/test_recovery.py",  # SIGKILL at the batch crash points
        "tests/deploy/test_dead_runs.py",  # a worker and its run SIGKILLed on a real server
        "tests/test_upload_crash.py",  # SIGKILL right after a media upload
        "tests/batch/test_deadline_crash.py",  # SIGKILL in a deadline's switch-over
        "tests/test_cache_crash.py",  # SIGKILL around the night's context cache
        "tests/test_cache_ticks.py",  # nights with a cached prefix, direct and batch
        "tests/deploy/test_prefect_yaml.py",  # a `prefect server start`, deploy, worker
        "tests/deploy/test_schedules.py",  # the server's scheduler creates the runs
        "tests/deploy/test_worker_stop.py",  # Ctrl-C on real workers in a delivery
        "tests/direct/test_concurrency.py",  # two direct runs at once
        "tests/direct/test_crash.py",  # SIGKILL inside a direct call
        "tests/embeddings/test_night.py",  # a whole night of the review-embeddings example
        "tests/examples/test_receipts_night.py",  # a whole night of the receipts example
        "tests/doctor/test_prefect.py",  # doctor against a real server and worker
        "tests/multiworker/test_workers.py",  # three workers, one night
        "tests/proof/test_concurrency.py",  # four tick processes at once on every channel
        "tests/proof/test_crash_matrix.py",  # a kill at every crash point, then the night
        "tests/proof/test_secrets.py",  # a whole night, then every file and log searched
        "tests/test_demo.py",  # the whole demo night
        "tests/test_temporary_server.py",  # temporary Prefect servers tied to a process
    }
)


def _xdist_worker(config: pytest.Config) -> bool:
    """True in a pytest-xdist worker process (the controller and a plain run are not)."""
    return hasattr(config, "workerinput")


_SHARED_SCOPES = frozenset({"module", "class", "package"})


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> Iterator[None]:
    """Under ``pytest -n N --dist loadgroup`` (scripts/test.sh), the tests of a module that
    share a module-scoped fixture run on one worker: split across two, each worker would
    start its own copy (a Prefect server subprocess, a deployed prefect.yaml).

    In a worker, the tests are put in the order the workers should take them: the ``alone``
    test (the multi-worker night) first, then the fast tier (which may run beside it: see
    ``pytest_runtest_protocol``), then the other ``slow`` tests (minutes each: the demo, the
    scheduler), then the rest of the system tier; so the long tests start early and the
    other workers take the short ones meanwhile, instead of a long one starting last and
    running alone. A plain run keeps the files' order. The ``system`` marker is added
    (``SYSTEM_TIER``) before ``-m`` deselects by marker: this wrapper runs before the other
    plugins' hooks."""
    for item in items:
        # The tier (scripts/test.sh): see SYSTEM_TIER.
        path = item.nodeid.split("::")[0]
        if path in SYSTEM_TIER or any(item.get_closest_marker(m) for m in ("slow", "alone")):
            item.add_marker(pytest.mark.system)
    if _xdist_worker(config):
        items.sort(key=_start_order)
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None or item.get_closest_marker("xdist_group"):
            continue
        for defs in info.name2fixturedefs.values():
            if any(d.scope in _SHARED_SCOPES for d in defs):
                item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
                break
    yield  # every other plugin's hook, pytest-xdist's among them
    if getattr(config.option, "loadgroup", False):
        _mark_groups_in_node_ids(items)


def _start_order(item: pytest.Item) -> int:
    """Where a test goes in an xdist worker's order (a stable sort keeps the files' order
    within each rank): see pytest_collection_modifyitems."""
    if item.get_closest_marker("alone"):
        return 0
    if not item.get_closest_marker("system"):
        return 1
    return 2 if item.get_closest_marker("slow") else 3


def _mark_groups_in_node_ids(items: list[pytest.Item]) -> None:
    """pytest-xdist 3.8.0 tells its scheduler an item's group by appending ``@group`` to the
    item's node id, but writes it where pytest 9.2 no longer reads it (pytest-xdist issue
    1386), so ``--dist loadgroup`` silently groups nothing. Append it where pytest 9.2 keeps
    the id; the scheduler reads it back from the ids the workers report."""
    from _pytest.nodeid import NodeId

    for item in items:
        groups = sorted({str(m.args[0]) for m in item.iter_markers("xdist_group") if m.args})
        suffix = "@" + "_".join(groups)
        if groups and not item.nodeid.endswith(suffix):
            item._id = NodeId.parse(item.nodeid + suffix)  # type: ignore[attr-defined]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Under xdist, a test marked ``alone`` runs while no other worker runs a system test.

    The multi-worker night starts three Prefect workers and their flow-run processes; beside
    another worker's system tests (servers, workers, killed ticks) on 2 cores it ran past
    its 600 s timeout. Beside the fast tier's tests it leaves the other worker busy instead
    of idle. Every system test takes a shared lock on a file of this run, an ``alone`` test
    an exclusive one, a fast-tier test none; outside pytest-timeout's timer (this wrapper is
    outermost), so waiting is never counted."""
    if not _xdist_worker(item.config) or not item.get_closest_marker("system"):
        return (yield)
    import fcntl

    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", "run")
    path = Path(tempfile.gettempdir()) / f"gl-tests-{run}.lock"
    mode = fcntl.LOCK_EX if item.get_closest_marker("alone") else fcntl.LOCK_SH
    with path.open("a") as lock:
        fcntl.flock(lock, mode)
        try:
            return (yield)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


_postgres_ran = {"n": 0}


def pytest_runtest_logreport(report):
    # Under xdist the controller gets every worker's reports here, keywords included.
    if report.when == "call" and report.passed and "postgres" in report.keywords:
        _postgres_ran["n"] += 1


def pytest_sessionfinish(session, exitstatus):
    """With LEDGER_REQUIRE_POSTGRES=1 (CI), a run in which no PostgreSQL test passed fails."""
    if _xdist_worker(session.config):
        return  # one worker may get none of them; the controller counts them all
    required = os.environ.get("LEDGER_REQUIRE_POSTGRES") == "1"
    if required and not _postgres_ran["n"] and exitstatus == 0 and session.testscollected:
        print("\nLEDGER_REQUIRE_POSTGRES=1 but no PostgreSQL test ran", file=sys.stderr)
        session.exitstatus = 1
