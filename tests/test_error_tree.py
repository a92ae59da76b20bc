"""One error tree: every public error descends from ``ledger.GeminiLedgerError``, and a held
database lock is a transient error, never a configuration error."""

from __future__ import annotations

import importlib
import pkgutil
import sqlite3

import pytest

import flows
import ledger
from ledger import (
    ConfigurationError,
    GeminiLedgerError,
    LedgerBusy,
    LedgerConfigError,
    SetupKind,
    TransientError,
    make_engine,
    setup_fault,
)
from ledger.testing import atomic, sqlite_busy_timeout

# Control flow that never reaches the command line: carriers of one row's failure inside a
# channel (a row's media upload's too, caught by flows.run._uploads.RowUploads), and the
# webhook receiver's refusals (each becomes an HTTP response).
_CARRIERS = {
    "ledger._failure.ClassifiedError",
    "flows.channels.direct.AttemptFailed",
    "flows.run._uploads.FileUnusable",
    "flows.run._uploads.UploadBusy",
    "flows.webhooks._app.BadRequest",
    "flows.webhooks._app.TooLarge",
    "flows.webhooks._app.Unauthorized",
}


def _public_errors() -> dict[str, type[BaseException]]:
    modules = [ledger, importlib.import_module("ledger.testing")]
    for info in pkgutil.walk_packages(flows.__path__, "flows."):
        modules.append(importlib.import_module(info.name))
    found: dict[str, type[BaseException]] = {}
    for module in modules:
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name, None)
            if isinstance(obj, type) and issubclass(obj, BaseException):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_every_public_error_descends_from_the_root():
    """Each exception class a module of ledger/ or flows/ exports is a GeminiLedgerError."""
    errors = _public_errors()
    assert len(errors) >= 15, sorted(errors)  # the walk found the tree, not an empty list
    outside = sorted(
        name
        for name, cls in errors.items()
        if not issubclass(cls, GeminiLedgerError) and name not in _CARRIERS
    )
    assert outside == []


def test_the_tree_keeps_the_bases_callers_catch():
    """Leaves keep the builtin bases callers relied on (ValueError, RuntimeError, LookupError)."""
    from flows.cli import CliError
    from flows.errors import UsageError
    from flows.gemini.gateway import GatewayConfigError
    from flows.registry import UnknownPipeline
    from flows.settings import SettingsError
    from flows.testing import PrefectApiUnreachable, TemporaryServerError

    assert issubclass(UsageError, ValueError) and issubclass(CliError, ValueError)
    assert issubclass(SettingsError, ValueError) and issubclass(SettingsError, LedgerConfigError)
    assert issubclass(UnknownPipeline, LookupError) and issubclass(UnknownPipeline, UsageError)
    assert issubclass(GatewayConfigError, RuntimeError)
    assert issubclass(GatewayConfigError, ConfigurationError)
    assert issubclass(TemporaryServerError, TransientError)
    # A mistyped or unreachable PREFECT_API_URL is the user's to fix: one line, never "a bug".
    assert issubclass(PrefectApiUnreachable, ConfigurationError)
    assert issubclass(LedgerBusy, TransientError)
    assert not issubclass(LedgerBusy, ConfigurationError)


def test_a_locked_sqlite_ledger_is_transient_not_configuration(sqlite_url):
    """SQLite's "database is locked" becomes LedgerBusy (transient) and halts as ledger_busy."""
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    with sqlite_busy_timeout(0.01):  # fail the wait fast
        engine = make_engine(sqlite_url)
        try:
            with pytest.raises(LedgerBusy) as caught, atomic(engine) as conn:
                conn.exec_driver_sql("SELECT 1")
        finally:
            holder.rollback()
            holder.close()
            engine.dispose()
    assert "database is locked" in str(caught.value)
    assert not isinstance(caught.value, LedgerConfigError)
    fault = setup_fault(caught.value)
    assert fault is not None and fault.kind is SetupKind.LEDGER_BUSY
