"""The ``gemini-ledger`` command: thin; domain errors become a message and exit code in one
place (``_app.handles_errors``). One module per command group; importing them registers
their commands on ``app``."""

from flows.cli import _db, _inspect, _plan, _run, _setup  # noqa: F401  (registers the commands)
from flows.cli._app import CliError, app, main

__all__ = ["CliError", "app", "main"]
