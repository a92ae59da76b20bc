"""The ``gemini-ledger`` Typer app, its one error boundary, and what every command uses.

Domain errors become a message and exit code here, in :func:`handles_errors`.

A mistake the user can fix (any ``ledger.GeminiLedgerError``: a ledger or settings error, a
usage error, a missing API key) is one line on stderr and exit code 1, its traceback only
under ``--debug``. A tick stopped by SIGTERM or SIGINT (``flows.run._stop.Stopped``) is one line
and exit code ``128 + signal`` (143, 130). Every parameter and the ledger itself are checked
before a flow starts, so Prefect never logs a traceback for them. Anything else is a bug: it
keeps its traceback and exits with 2.
"""

from __future__ import annotations

import contextlib
import json
import sys
import traceback
from collections.abc import Callable, Iterator
from datetime import date
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flows.errors import UsageError
from flows.run._stop import Stopped
from flows.settings import Settings
from ledger import GeminiLedgerError, Ledger, LedgerConfigError

app = typer.Typer(
    help="Unattended Gemini pipelines on Prefect: nothing lost, nothing billed or published twice.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

db_app = typer.Typer(help="The ledger database.", no_args_is_help=True)

webhook_app = typer.Typer(help="Gemini completion webhooks.", no_args_is_help=True)

secret_app = typer.Typer(
    help="Secrets kept in Prefect Secret blocks, where a worker finds them.", no_args_is_help=True
)

app.add_typer(db_app, name="db")

app.add_typer(webhook_app, name="webhook")

app.add_typer(secret_app, name="secret")

limits_app = typer.Typer(
    help="One Gemini quota for every worker: per-model limits on the Prefect server.",
    no_args_is_help=True,
)

app.add_typer(limits_app, name="limits")

automations_app = typer.Typer(
    help="Prefect automations beside the deployments: alerts, and dead runs marked Crashed.",
    no_args_is_help=True,
)

app.add_typer(automations_app, name="automations")

worker_app = typer.Typer(
    help="Prefect's process worker, stopped gently by Ctrl-C or SIGTERM.", no_args_is_help=True
)

app.add_typer(worker_app, name="worker")


# Piped or in CI, Rich assumes 80 columns and cuts table cells (`exhausted:missing_from_out…`):
# off a terminal, lines may be as long as they need.
console = Console(width=None if sys.stdout.isatty() else 200)

err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

F = TypeVar("F", bound=Callable[..., Any])

EXIT_DOMAIN_ERROR = 1

EXIT_BUG = 2

_OURS = Path(__file__).resolve().parents[2]  # the checkout or site-packages holding us

_PACKAGES = ("flows", "ledger", "emulator")


class _Options:
    debug = False
    # The command's settings: loaded and validated once by handles_errors before it runs
    # (the CLI is an entry point; everything it calls takes them as an argument).
    settings: Settings | None = None


def command_settings() -> Settings:
    """The settings of the command that is running (loaded by :func:`handles_errors`)."""
    if _Options.settings is None:  # a command without handles_errors: a bug of ours
        raise RuntimeError("the command's settings were not loaded")
    return _Options.settings


def reports_settings(func: F) -> F:
    """Mark a command that loads the settings itself and reports a bad one (``doctor``)."""
    func._reports_settings = True  # type: ignore[attr-defined]
    return func


def without_ledger_block(func: F) -> F:
    """Mark a command that opens no ledger, so its settings are loaded without reading the
    ledger URL's Secret block (``secret set`` stores that block; ``emulator`` needs no
    Prefect server)."""
    func._without_ledger_block = True  # type: ignore[attr-defined]
    return func


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"gemini-ledger {version('gemini-ledger')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback behind an error message.")
    ] = False,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Unattended Gemini pipelines on Prefect: nothing lost, nothing billed or published twice."""
    _Options.debug = debug


class CliError(UsageError):
    """A mistake in how a command was called: printed as one line."""


def _domain_errors() -> tuple[type[BaseException], ...]:
    # The root of the one error tree (ledger._errors draws it): every leaf, one place.
    return (GeminiLedgerError,)


def _configuration_fault(exc: BaseException) -> GeminiLedgerError | None:
    """A configuration mistake behind an exception raised outside our code (the Prefect API
    of PREFECT_API_URL gone or never there): one line, never "a bug"."""
    from flows._prefect_api import prefect_api_fault

    return prefect_api_fault(exc)


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def _culprit(exc: BaseException) -> tuple[str, bool]:
    """Where an unexpected exception came from (file:line) and whether that is our code:
    the innermost frame outside the standard library and installed packages."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        path = Path(frame.filename)
        if "site-packages" in path.parts or frame.filename.startswith("<"):
            continue
        if path.is_relative_to(Path(sys.base_prefix)) or path.is_relative_to(Path(sys.prefix)):
            continue
        ours = path.resolve().is_relative_to(_OURS) and path.resolve().relative_to(_OURS).parts[
            :1
        ] in [(p,) for p in _PACKAGES]
        return f"{frame.filename}:{frame.lineno}", ours
    last = frames[-1] if frames else None
    return (f"{last.filename}:{last.lineno}" if last else "?"), True


def handles_errors(func: F) -> F:
    """Turn the errors a user can fix into one clear line and exit code 1; a bug keeps its
    traceback, says so, and exits with 2. Every setting is loaded and checked first, naming
    a bad variable (``doctor`` reports a bad one as a finding instead: :func:`reports_settings`)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            from flows.settings import load_settings

            _Options.settings = None
            if not getattr(func, "_reports_settings", False):
                # The ledger URL's block is read here too, once, unless the command needs
                # no ledger (`secret set` stores that block).
                blocks = not getattr(func, "_without_ledger_block", False)
                _Options.settings = load_settings(read_blocks=blocks)
            return func(*args, **kwargs)
        except (typer.Exit, click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Stopped as exc:  # asked to stop (SIGTERM): what it began is recorded
            err.print(f"[bold yellow]{escape(_one_line(exc))}[/]", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except _domain_errors() as exc:
            if _Options.debug:
                traceback.print_exc()
            err.print(
                f"[bold red]error:[/] {escape(_one_line(exc))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(EXIT_DOMAIN_ERROR) from None
        except Exception as exc:
            if (fault := _configuration_fault(exc)) is not None:
                if _Options.debug:
                    traceback.print_exc()
                err.print(
                    f"[bold red]error:[/] {escape(_one_line(fault))}",
                    highlight=False,
                    soft_wrap=True,
                )
                raise typer.Exit(EXIT_DOMAIN_ERROR) from None
            traceback.print_exc()
            where, ours = _culprit(exc)
            whose = (
                "this is a bug in gemini-ledger: please report it with the traceback above"
                if ours
                else "raised by code outside gemini-ledger (your pipeline's own code?)"
            )
            err.print(
                f"[bold red]error:[/] unexpected {type(exc).__name__} at {escape(where)}: {whose}",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_BUG) from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def prefect_for_flows() -> Iterator[str | None]:
    """The Prefect API a flow-running command reports to (a temporary server if none is set);
    a halt's line is left to :func:`handles_errors` to print, once, and a flow's own ending
    (a halt, a stop) reaches it as itself, even when Prefect's answer lost it."""
    from flows._prefect_api import prefect_api
    from flows.run._ending import own_endings
    from flows.run._halt import told_once

    def announce(line: str) -> None:
        err.print(f"[dim]{line}[/]", highlight=False, soft_wrap=True)

    startup_s = command_settings().prefect_startup_s
    with prefect_api(announce, startup_s=startup_s) as url, told_once(), own_endings():
        yield url


def parse_day(value: str | None, option: str = "--day") -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option} {value!r} is not a date: use YYYY-MM-DD") from None


def existing_ledger(*, write: bool = False) -> Ledger:
    """The configured ledger for a command that reads it: refused when there is none (never
    created here), opened (so an unreachable or damaged one fails now, as one line, before
    any flow starts) and, for ``write``, checked to be writable."""
    from flows._ledger import open_ledger
    from ledger import ledger_exists, missing_ledger_message

    url = command_settings().database_url
    if not ledger_exists(url):
        raise LedgerConfigError(missing_ledger_message(url))
    ledger = open_ledger(url)
    if write:
        ledger.check_writable()
    return ledger


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def print_report(report: Any, *, title: str, as_json: bool) -> None:
    """A flow's report as JSON, or as a two-column table of its flattened entries."""
    if as_json:
        print_json(report)
        return
    table = Table(title=title)
    table.add_column("what")
    table.add_column("value", justify="right")
    for name, value in _flatten(report):
        table.add_row(name, str(value))
    console.print(table)


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, dict):
        rows: list[tuple[str, Any]] = []
        for key, value in data.items():
            rows.extend(_flatten(value, f"{prefix}{key}."))
        return rows
    if isinstance(data, list) and any(isinstance(item, dict) for item in data):
        # e.g. one entry per batch job reconciled: one block of rows each, numbered.
        rows = []
        for i, item in enumerate(data):
            rows.extend(_flatten(item, f"{prefix}{i}."))
        return rows
    if isinstance(data, list):
        return [(prefix.rstrip("."), ", ".join(str(item) for item in data))]
    return [(prefix.rstrip("."), data)]


def main() -> None:
    app()
