"""Engines, the one place that owns commit and rollback, and schema migrations."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError, SQLAlchemyError

from ledger._errors import LedgerBusy, LedgerConfigError, LedgerMissing

__all__ = [
    "DEFAULT_DATABASE_URL",
    "atomic",
    "database_url",
    "is_transient",
    "ledger_exists",
    "make_engine",
    "missing_ledger_message",
    "one_line",
    "require_schema",
    "upgrade",
]

DEFAULT_DATABASE_URL = "sqlite:///var/ledger.db"
_MIGRATIONS = Path(__file__).with_name("migrations")
_SQLITE_BUSY_TIMEOUT_S = 60.0
# Writers leave checkpoints to a helper thread (_Checkpointer); SQLite's own automatic
# checkpoint stays as a backstop at ten times its default, should that thread fall behind.
_SQLITE_AUTOCHECKPOINT_PAGES = 10_000
_CHECKPOINTER_IDLE_S = 5.0
# Bigger pages than SQLite's 4 KiB: fewer page splits and log frames per bulk chunk. Measured
# with bench/ledger.py on 1,000,000 jobs: enroll, reserve+bind and apply all 5-25% faster.
_SQLITE_PAGE_SIZE = 16_384
# Serialises schema upgrades on PostgreSQL across processes (an arbitrary fixed lock id).
_PG_MIGRATION_LOCK = 0x6C656467


def database_url(url: str) -> str:
    """The ledger URL normalised (the driver we ship, a SQLite path made absolute). The core
    reads no environment: ``flows.settings`` gives the URL (``LEDGER_DATABASE_URL``)."""
    chosen = url or DEFAULT_DATABASE_URL
    try:
        parsed = make_url(chosen)
    except ArgumentError as exc:
        raise LedgerConfigError(f"LEDGER_DATABASE_URL is not a database URL: {exc}") from None
    if parsed.drivername == "postgresql":
        # psycopg 3 is the driver we ship; plain postgresql:// would look for psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if (
        parsed.get_backend_name() == "sqlite"
        and parsed.database not in (None, "", ":memory:")
        and not _is_uri(parsed)
    ):
        path = Path(parsed.database).expanduser().resolve()
        parsed = parsed.set(database=str(path))
    return parsed.render_as_string(hide_password=False)


def _is_uri(parsed: Any) -> bool:
    """``sqlite:///file:path?mode=ro&uri=true``: SQLite's own URI form, passed through."""
    return str(parsed.query.get("uri", "")).lower() in ("true", "1")


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite ledger URL (None for PostgreSQL and in-memory databases)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if _is_uri(parsed):
        path = parsed.database.removeprefix("file:").partition("?")[0]
        return None if not path or "memory" in path else Path(path).expanduser()
    return Path(parsed.database)


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the current directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def one_line(exc: BaseException) -> str:
    """The driver's own message of a database error, first line only (no SQL, no links)."""
    inner = getattr(exc, "orig", None) or exc
    text_ = str(inner).strip().splitlines()
    return f"{text_[0] if text_ else type(inner).__name__}"


def ledger_exists(url: str) -> bool:
    """Whether there is a ledger to read: a SQLite file, or a PostgreSQL schema made by
    ``db upgrade`` (or a first tick). Creates nothing."""
    resolved = database_url(url)
    path = _sqlite_file(resolved)
    if path is not None:
        return path.is_file()
    if make_url(resolved).get_backend_name() != "postgresql":
        return True  # in-memory SQLite: make_engine decides
    engine = create_engine(resolved, pool_pre_ping=True)
    try:
        return current_revision(engine) is not None
    except SQLAlchemyError as exc:
        raise LedgerConfigError(
            f"cannot reach the ledger at {engine.url.render_as_string(hide_password=True)}:"
            f" {one_line(exc)}"
        ) from exc
    finally:
        engine.dispose()


def missing_ledger_message(url: str) -> str:
    """The one line for a command that reads a ledger which is not there."""
    resolved = database_url(url)
    path = _sqlite_file(resolved)
    where = (
        _shown(path)
        if path is not None
        else make_url(resolved).render_as_string(hide_password=True)
    )
    return (
        f"no ledger at {where}: run from your project's directory or set LEDGER_DATABASE_URL;"
        " to start a new ledger there, run `gemini-ledger db upgrade`"
    )


def make_engine(url: str, *, create_dir: bool = False) -> Engine:
    """An engine for the ledger, tuned per backend (SQLite: WAL, busy timeout, IMMEDIATE).

    Connecting creates a missing SQLite file (never its directory unless ``create_dir``):
    only :func:`upgrade` and :func:`require_schema` connect, and the latter refuses a file
    that is not there first.
    """
    resolved = database_url(url)
    backend = make_url(resolved).get_backend_name()
    if backend == "sqlite":
        if create_dir and (file := _sqlite_file(resolved)) is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            resolved, connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
        )
        _tune_sqlite(engine)
        path = make_url(resolved).database
        if path and path != ":memory:":
            _checkpointers[engine] = _Checkpointer(path)
        return engine
    if backend == "postgresql":
        return create_engine(resolved, pool_pre_ping=True, pool_size=5, max_overflow=10)
    raise LedgerConfigError(f"unsupported ledger backend {backend!r}: use sqlite or postgresql")


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves, so that writers take the lock up front
        # (BEGIN IMMEDIATE) instead of failing to upgrade a read lock mid-transaction.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # Takes effect only on a new, empty file (and must precede WAL mode there).
        cursor.execute(f"PRAGMA page_size={_SQLITE_PAGE_SIZE}")
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable against a killed process under WAL; only an OS crash can lose
        # the last transactions.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(_SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA wal_autocheckpoint={_SQLITE_AUTOCHECKPOINT_PAGES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


# SQLSTATEs of a refusal for now: deadlock_detected, serialization_failure, lock_not_available.
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001", "55P03"})
# SQLite's messages for a lock still held when busy_timeout ran out.
_TRANSIENT_SQLITE = ("database is locked", "database table is locked", "database is busy")


def is_transient(exc: BaseException) -> bool:
    """A lock, deadlock or serialization failure: the same transaction later may succeed."""
    orig = getattr(exc, "orig", None) or exc
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(state, str) and state in _TRANSIENT_SQLSTATES:
        return True
    return isinstance(orig, sqlite3.OperationalError) and str(orig).strip().lower().startswith(
        _TRANSIENT_SQLITE
    )


def _is_corrupt(exc: BaseException) -> bool:
    """A SQLite file that is not a database or is malformed (not a constraint, a bug of ours)."""
    orig = getattr(exc, "orig", exc)
    return type(orig) is sqlite3.DatabaseError


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


class _Checkpointer:
    """Copies a SQLite ledger's write-ahead log back into the database from a helper thread.

    Left to itself, the connection that commits past SQLite's threshold does the checkpoint
    (a copy and an fsync) before its commit returns: a sixth of bulk enrollment's time. Here
    a thread with its own connection runs a PASSIVE checkpoint after each write transaction,
    which never blocks writers or readers, while the writer goes on (sqlite3 releases the
    GIL). The thread starts on demand and ends after a few idle seconds, closing its
    connection. A killed process loses nothing: the log is the durable copy until then.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._state = threading.Condition()
        self._asked = 0  # pokes so far
        self._done = 0  # pokes covered by a finished checkpoint
        self._thread: threading.Thread | None = None

    def poke(self) -> None:
        """A write transaction committed: checkpoint soon."""
        with self._state:
            self._asked += 1
            self._state.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="ledger-checkpoint", daemon=True
                )
                self._thread.start()

    def settle(self, timeout: float = 60.0) -> bool:
        """Wait until every write so far is checkpointed (for tests and benchmarks)."""
        with self._state:
            return self._state.wait_for(lambda: self._done >= self._asked, timeout)

    def _run(self) -> None:
        try:
            # mode=rw: never create a file, should the ledger's have been removed meanwhile.
            uri = Path(self._path).resolve().as_uri() + "?mode=rw"
            db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            with self._state:
                self._done, self._thread = self._asked, None
                self._state.notify_all()
            return
        try:
            db.execute(f"PRAGMA busy_timeout={int(_SQLITE_BUSY_TIMEOUT_S * 1000)}")
            while True:
                with self._state:
                    if not self._state.wait_for(
                        lambda: self._asked > self._done, _CHECKPOINTER_IDLE_S
                    ):
                        self._thread = None
                        return
                    asked = self._asked
                # Best effort: should it fail, SQLite's automatic checkpoint still runs.
                with contextlib.suppress(sqlite3.Error):
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                with self._state:
                    self._done = asked
                    self._state.notify_all()
        finally:
            db.close()


def checkpointer(engine: Engine) -> _Checkpointer | None:
    """The helper that checkpoints a SQLite file's log (None for PostgreSQL and in-memory)."""
    return _checkpointers.get(engine)


_checkpointers: weakref.WeakKeyDictionary[Engine, _Checkpointer] = weakref.WeakKeyDictionary()


@contextmanager
def atomic(engine: Engine, *, write: bool = True) -> Iterator[Connection]:
    """One transaction: commit when the block ends, roll back if it raises.

    Every ledger write goes through here. On SQLite a writing transaction starts with
    ``BEGIN IMMEDIATE`` so two processes never interleave their read-then-update; readers
    use ``BEGIN DEFERRED`` and never block writers (WAL).
    """
    conn = engine.connect()
    if not write and is_sqlite(engine):
        conn = conn.execution_options(sqlite_begin="DEFERRED")
    try:
        with conn.begin():
            yield conn
    except OperationalError as exc:
        if is_transient(exc):
            raise LedgerBusy(f"ledger busy: {one_line(exc)}") from exc
        raise LedgerConfigError(f"ledger database error: {one_line(exc)}") from exc
    except DatabaseError as exc:
        if not _is_corrupt(exc):
            raise
        raise LedgerConfigError(f"the ledger database is damaged: {one_line(exc)}") from exc
    finally:
        conn.close()
    if write and (checkpointer := _checkpointers.get(engine)) is not None:
        checkpointer.poke()


_upgraded: set[str] = set()
_upgrade_lock = threading.Lock()


def _alembic_config(conn: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(None)  # type: ignore[arg-type]
    return ScriptDirectory.from_config(cfg).get_current_head()


def upgrade(engine: Engine, *, revision: str = "head") -> None:
    """Create the ledger or bring its schema to ``revision`` (``gemini-ledger db upgrade``,
    the demo, the tests' fixtures: a ledger is created on purpose only); safe when several
    processes start at once. A SQLite file's directory is created too."""
    from alembic import command

    if (file := _sqlite_file(engine.url.render_as_string(hide_password=False))) is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
    try:
        with engine.connect() as conn, conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            command.upgrade(_alembic_config(conn), revision)
    except (SQLAlchemyError, sqlite3.Error) as exc:
        raise LedgerConfigError(
            f"cannot migrate the ledger at {engine.url.render_as_string(hide_password=True)}:"
            f" {one_line(exc)}"
        ) from exc


def require_schema(engine: Engine, *, create: bool = False) -> None:
    """Check once per process that the ledger exists, and upgrade one that is behind.

    A missing ledger (a SQLite file or its directory absent, a file or PostgreSQL database
    without our schema) is refused with :class:`LedgerMissing`, one line naming the URL and
    ``gemini-ledger db upgrade``: a mistyped ``LEDGER_DATABASE_URL`` must never start a
    second, empty ledger that sends the whole day again. ``create`` (the demo, tests) makes
    one instead, as ``db upgrade`` does.
    """
    rendered = engine.url.render_as_string(hide_password=False)
    if rendered in _upgraded:
        return
    with _upgrade_lock:
        if rendered in _upgraded:
            return
        file = _sqlite_file(rendered)
        in_memory = file is None and engine.dialect.name == "sqlite"
        if file is not None and not file.is_file():
            if not create:
                # Checked before connecting: a connection would create the file.
                raise LedgerMissing(missing_ledger_message(rendered))
            file.parent.mkdir(parents=True, exist_ok=True)
        try:
            current = current_revision(engine)
        except (SQLAlchemyError, sqlite3.Error) as exc:
            # sqlite3.Error: raised raw by the connect-time PRAGMAs on a file that is not a
            # database.
            raise LedgerConfigError(
                f"cannot open the ledger at {engine.url.render_as_string(hide_password=True)}:"
                f" {one_line(exc)}"
            ) from exc
        if current is None and not (create or in_memory):
            raise LedgerMissing(missing_ledger_message(rendered))
        if current != head_revision():
            # An existing ledger of an earlier version is the same ledger: it upgrades.
            upgrade(engine)
        _upgraded.add(rendered)
