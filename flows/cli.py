"""The ``gemini-ledger`` command: thin; domain errors become a message and exit code here.

A mistake the user can fix (any ``ledger.GeminiLedgerError``: a ledger or settings error, a
usage error, a missing API key) is one line on stderr and exit code 1, its traceback only
under ``--debug``. A tick stopped by SIGTERM or SIGINT (``flows._stop.Stopped``) is one line
and exit code ``128 + signal`` (143, 130). Every parameter and the ledger itself are checked
before a flow starts, so Prefect never logs a traceback for them. Anything else is a bug: it
keeps its traceback and exits with 2.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from enum import StrEnum
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flows._stop import Stopped
from flows.errors import UsageError
from ledger import GeminiLedgerError, Ledger, LedgerConfigError, UnknownJob, morning_view

if TYPE_CHECKING:  # the tick's module imports Prefect: only when a tick runs
    from flows._channel import TickReport
    from flows.settings import Settings

__all__ = ["app", "main"]

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

# Piped or in CI, Rich assumes 80 columns and cuts table cells (`exhausted:missing_from_out…`):
# off a terminal, lines may be as long as they need.
console = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
F = TypeVar("F", bound=Callable[..., Any])

EXIT_DOMAIN_ERROR = 1
EXIT_BUG = 2
_OURS = Path(__file__).resolve().parent.parent  # the checkout or site-packages holding us
_PACKAGES = ("flows", "ledger", "emulator")


class _Options:
    debug = False
    # The command's settings: loaded and validated once by handles_errors before it runs
    # (the CLI is an entry point; everything it calls takes them as an argument).
    settings: Settings | None = None


def _settings() -> Settings:
    """The settings of the command that is running (see :func:`handles_errors`)."""
    if _Options.settings is None:  # a command without handles_errors: a bug of ours
        raise RuntimeError("the command's settings were not loaded")
    return _Options.settings


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
                _Options.settings = load_settings()
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


def reports_settings(func: F) -> F:
    """Mark a command that loads the settings itself and reports a bad one (``doctor``)."""
    func._reports_settings = True  # type: ignore[attr-defined]
    return func


@contextlib.contextmanager
def _prefect() -> Iterator[str | None]:
    """The Prefect API a flow-running command reports to (a temporary server if none is set);
    a halt's line is left to :func:`handles_errors` to print, once."""
    from flows._halt import told_once
    from flows._prefect_api import prefect_api

    def announce(line: str) -> None:
        err.print(f"[dim]{line}[/]", highlight=False, soft_wrap=True)

    with prefect_api(announce, startup_s=_settings().prefect_startup_s) as url, told_once():
        yield url


def _day(value: str | None, option: str = "--day") -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option} {value!r} is not a date: use YYYY-MM-DD") from None


def _existing_ledger(*, write: bool = False) -> Ledger:
    """The configured ledger for a command that reads it: refused when there is none (never
    created here), opened (so an unreachable or damaged one fails now, as one line, before
    any flow starts) and, for ``write``, checked to be writable."""
    from flows._ledger import open_ledger
    from ledger import ledger_exists, missing_ledger_message

    url = _settings().database_url
    if not ledger_exists(url):
        raise LedgerConfigError(missing_ledger_message(url))
    ledger = open_ledger(url)
    if write:
        ledger.check_writable()
    return ledger


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


@db_app.command("upgrade")
@handles_errors
def db_upgrade() -> None:
    """Create or upgrade the ledger schema (LEDGER_DATABASE_URL, default var/ledger.db)."""
    from ledger import make_engine, upgrade

    engine = make_engine(_settings().database_url)
    upgrade(engine)
    console.print(f"ledger at {engine.url.render_as_string(hide_password=True)} is up to date")


@db_app.command("current")
@handles_errors
def db_current() -> None:
    """Show the ledger's schema revision and the newest one this version knows."""
    from ledger import LedgerMissing, ledger_exists, make_engine, missing_ledger_message
    from ledger._db import current_revision, head_revision

    url = _settings().database_url
    if not ledger_exists(url):
        raise LedgerMissing(missing_ledger_message(url))  # connecting would create the file
    engine = make_engine(url)
    console.print(
        f"ledger at {engine.url.render_as_string(hide_password=True)}:"
        f" revision {current_revision(engine) or 'none (empty)'}, head {head_revision()}"
    )


@app.command()
@handles_errors
def status(
    key: Annotated[
        str | None, typer.Argument(help="One job's idempotency key: show that row.")
    ] = None,
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Counts by status and error class, attempts and tokens; rows in flight and their age.

    With KEY: that one row (status, attempts, error, tokens, model and model version)."""
    ledger = _existing_ledger()
    if key is not None:
        _show_job(ledger, key, as_json=as_json)
        return
    counts = ledger.counts(pipeline=pipeline)
    # Per non-final state, the oldest row's time in it: what is stuck shows as an age.
    in_flight = ledger.in_flight(pipeline=pipeline)
    # Batch submissions the API keeps refusing (their rows wait, pending): per pipeline.
    names = [pipeline] if pipeline else [v.pipeline for v in morning_view(ledger)]
    refused = {n: r for n in names if (r := ledger.submission_refusals(n)).refused}
    if as_json:
        _print_json(
            {
                **counts.as_dict(),
                "in_flight": {
                    state: {"rows": n, "oldest_age_s": round(age, 1)}
                    for state, (n, age) in sorted(in_flight.items())
                },
                "batch_submission_refused": {
                    n: {"times": r.refused, "since": r.since, "last": r.last_reason}
                    for n, r in refused.items()
                },
            }
        )
        return
    table = Table(title=f"ledger{f' - {pipeline}' if pipeline else ''}")
    table.add_column("status")
    table.add_column("jobs", justify="right")
    table.add_column("oldest in this state", justify="right")
    for name, n in sorted(counts.by_status.items()):
        age = in_flight[name][1] if name in in_flight else None
        table.add_row(name, str(n), "" if age is None else _age(age))
    console.print(table)
    if counts.by_error_class or counts.retrying_by_class:
        classes = Table(title="by error class")
        classes.add_column("class")
        classes.add_column("parked", justify="right")
        classes.add_column("retrying", justify="right")
        for cls in sorted(set(counts.by_error_class) | set(counts.retrying_by_class)):
            classes.add_row(
                cls,
                str(counts.by_error_class.get(cls, 0)),
                str(counts.retrying_by_class.get(cls, 0)),
            )
        console.print(classes)
    console.print(
        f"attempts {counts.attempts}  tokens {counts.total_tokens}"
        f" (prompt {counts.prompt_tokens} of which cached {counts.usage.cached_tokens},"
        f" answer {counts.candidates_tokens}, thinking {counts.usage.thoughts_tokens})"
        f"  possible duplicates {counts.possible_duplicates}  replayed {counts.replayed}"
    )
    for name, r in refused.items():
        since = datetime.fromtimestamp(r.since or 0, UTC)
        console.print(
            f"{name}: batch submission refused {r.refused} times since {since:%Y-%m-%d %H:%M}"
            f" UTC (last: {r.last_reason}); its rows wait, pending and unbilled",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def _job_dict(view: Any) -> dict[str, Any]:
    """One row as ``status KEY`` / ``dead-letter KEY`` show it (never the payload or result)."""
    return {
        "key": view.key,
        "pipeline": view.pipeline,
        "channel": view.channel,
        "status": view.status,
        "model": view.model,
        "model_version": view.model_version,
        "response_id": view.response_id,
        "attempts": view.attempts,
        "attempts_since_replay": view.attempts - view.attempts_base,
        "error_class": view.error_class,
        "error_message": view.error_message,
        "tokens": {
            "prompt": view.prompt_tokens,
            "candidates": view.candidates_tokens,
            "total": view.total_tokens,
            "thoughts": view.thoughts_tokens,
            "cached": view.cached_tokens,
            "audio": view.audio_tokens,
        },
        "possible_duplicates": view.possible_duplicates,
        "replayed": view.replayed,
        "handle": view.handle,
    }


def _show_job(ledger: Ledger, key: str, *, as_json: bool) -> None:
    """Print one row; an unknown key is one error line (exit 1)."""
    try:
        view = ledger.get(key)
    except UnknownJob:
        raise UsageError(f"no job with key {key!r} in {ledger.url}") from None
    job = _job_dict(view)
    if as_json:
        _print_json(job)
        return
    t = job["tokens"]
    version = job["model_version"] or "(no answer recorded)"
    lines = [
        f"{job['key']}  ({job['pipeline']}, {job['channel']})",
        f"status        {job['status']}"
        + (f"  {job['error_class']}" if job["error_class"] else ""),
        f"model         {job['model']}",
        f"model version {version}"
        + (f"  response {job['response_id']}" if job["response_id"] else ""),
        f"attempts      {job['attempts']} ({job['attempts_since_replay']} since the last replay,"
        f" replayed {job['replayed']}, possible duplicates {job['possible_duplicates']})",
        f"tokens        {t['total']} (prompt {t['prompt']} of which cached {t['cached']},"
        f" answer {t['candidates']}, thinking {t['thoughts']})",
    ]
    if job["error_message"]:
        lines.append(f"last error    {job['error_message']}")
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


@app.command()
@handles_errors
def config(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The effective settings and where each came from (secrets masked); reads nothing else."""
    from flows.settings import describe

    rows = describe(_settings())
    if as_json:
        _print_json([{"variable": v, "value": val, "source": src} for v, val, src in rows])
        return
    table = Table(title="settings")
    for column in ("variable", "value", "from"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@app.command()
@handles_errors
def emulator(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    scenario: Annotated[
        str, typer.Option(help="Built-in name (default, clean, ...) or a JSON/YAML file.")
    ] = "default",
    seed: Annotated[int, typer.Option(help="Seed for every random decision.")] = 0,
    webhook_url: Annotated[str | None, typer.Option(help="Where to POST completions.")] = None,
    webhook_secret: Annotated[
        str | None, typer.Option(help="whsec_... secret to sign webhooks with.")
    ] = None,
) -> None:
    """Serve the local Gemini API emulator (point the SDK at it with GOOGLE_GEMINI_BASE_URL)."""
    import emulator as emu

    try:
        emu.serve(
            host=host,
            port=port,
            scenario=scenario,
            seed=seed,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
        )
    except emu.ScenarioError as exc:
        raise UsageError(str(exc)) from exc
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


@app.command()
@handles_errors
def tick(
    pipeline: Annotated[
        str, typer.Argument(help="Pipeline name (reviews, articles) or module:attr.")
    ],
    day: Annotated[
        str | None, typer.Option(help="Day whose items to enroll (YYYY-MM-DD), default today.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Run one tick of a pipeline: the same flow its schedule runs, then exit."""
    from flows._ledger import open_ledger
    from flows.identity import claim_pipeline
    from flows.registry import load_pipeline
    from flows.tick import run_tick

    the_day = _day(day)
    settings = _settings()
    load_pipeline(pipeline, settings)  # a pipeline that cannot load touches no ledger
    ledger = open_ledger(settings.database_url)  # refuses a missing ledger (db upgrade makes one)
    ledger.check_writable()
    # Refused here, before Prefect starts, when another definition owns the name.
    claim_pipeline(pipeline, ledger=ledger, settings=settings)
    with _prefect():
        report = run_tick(pipeline, day=the_day)
    if as_json:
        _print_json(report.as_dict())
    else:
        _print_tick(report, ledger)


def _print_tick(report: TickReport, ledger: Ledger) -> None:
    """What the tick did, then where the pipeline stands in the ledger: a few lines."""
    from flows.summary import pipeline_standing

    def by_class(counts: dict[str, int]) -> str:
        return ", ".join(f"{c} {n}" for c, n in counts.items())

    console.print(
        f"[bold]{report.pipeline}[/] ({report.channel}) tick for {report.day},"
        f" {report.seconds:.1f} s: recovered {report.recovered}, answers done"
        f" {report.completed}, delivered {report.delivered}, enrolled {report.enrolled},"
        f" submitted {report.submitted}"
    )
    if report.parked:
        console.print(f"  parked this tick: {by_class(report.parked)}")
    if report.retryable:
        console.print(f"  to be sent again: {by_class(report.retryable)}")
    if report.delivery_failed:
        console.print(f"  side effects failed (left for the next tick): {report.delivery_failed}")
    enrolled = report.enroll
    for n, what, examples in (
        (enrolled.refused, "items refused at enrollment", enrolled.refused_examples),
        (enrolled.duplicates, "items with a key an earlier item gave", enrolled.duplicate_examples),
    ):
        if n:
            console.print(
                f"  {what}: {n} (e.g. {escape(examples[0])})", soft_wrap=True, highlight=False
            )
    try:
        from flows._pricing import load_prices

        now = pipeline_standing(ledger, report.pipeline, load_prices(_settings().prices_file))
    except UsageError as exc:  # e.g. a bad price file: the tick itself did its work
        console.print(f"  (where the pipeline stands cannot be shown: {escape(str(exc))})")
        now = None
    if now is not None:
        oldest = f" (oldest {now['oldest_in_flight']})" if now["oldest_in_flight"] else ""
        console.print(
            f"  ledger now: delivered {now['delivered']}, parked {now['parked']}, retrying"
            f" {now['retrying']}, in flight {now['in_flight']}{oldest},"
            f" cost ${now['cost_usd']:.4f}; `--json` shows every counter"
        )
        if now.get("batch_submission_refused"):
            console.print(
                f"  batch submission refused {now['batch_submission_refused']} times since"
                f" {now['batch_submission_refused_since']} (rows kept pending, unbilled)"
            )


@app.command()
@handles_errors
def reconcile(
    job_name: Annotated[str, typer.Argument(help="Batch job name, e.g. batches/123abc.")],
    pipeline: Annotated[
        str | None,
        typer.Option(help="Pipeline (name or module:attr); default: the one the ledger recorded."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Reconcile one finished batch job into the ledger and deliver its results (safe to repeat)."""
    from flows.batch import reconcile as reconcile_flow

    if _existing_ledger(write=True).batch_named(job_name) is None:
        raise UsageError(f"no batch job named {job_name!r} in the ledger")
    if pipeline is not None:
        from flows.registry import get_pipeline

        get_pipeline(pipeline, _settings())
    with _prefect():
        report = reconcile_flow(job_name=job_name, pipeline=pipeline)
    _print_report(report, title=f"reconcile {job_name}", as_json=as_json)


def _print_report(report: Any, *, title: str, as_json: bool) -> None:
    """A flow's report as JSON, or as a two-column table of its flattened entries."""
    if as_json:
        _print_json(report)
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


@webhook_app.command("serve")
@handles_errors
def webhook_serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8780,
) -> None:
    """Receive Gemini's completion webhooks; a finished batch starts its reconcile.

    The secret comes from LEDGER_WEBHOOK_SECRET or the Prefect Secret block named by
    LEDGER_WEBHOOK_SECRET_BLOCK; LEDGER_RECONCILE_DEPLOYMENT names the reconcile deployment.
    """
    from flows.webhooks import serve

    serve(_settings(), host=host, port=port)


class SecretKind(StrEnum):
    API_KEY = "api-key"
    WEBHOOK_SECRET = "webhook-secret"


@secret_app.command("set")
@handles_errors
def secret_set(
    which: Annotated[SecretKind, typer.Argument(help="api-key or webhook-secret.")],
    block: Annotated[
        str | None,
        typer.Option(
            help="Block name (default: GEMINI_API_KEY_BLOCK or gemini-api-key;"
            " LEDGER_WEBHOOK_SECRET_BLOCK or gemini-webhook-secret)."
        ),
    ] = None,
) -> None:
    """Store the Gemini API key or the webhook secret in a Prefect Secret block.

    The value is read from standard input (or asked for, hidden, on a terminal), never from
    the command line, so it stays out of shell history. Needs PREFECT_API_URL: a block on a
    temporary server would vanish with it.
    """
    import getpass

    from prefect.blocks.system import Secret
    from prefect.settings import get_current_settings
    from pydantic import SecretStr

    from flows._prefect_api import check_api
    from flows.gateway import API_KEY_BLOCK_ENV, DEFAULT_API_KEY_BLOCK

    api_url = get_current_settings().api.url
    if not api_url:
        raise CliError(
            "no Prefect server configured: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)"
            " to the server your worker uses"
        )
    check_api(api_url)
    if which is SecretKind.API_KEY:
        name = block or _settings().api_key_block or DEFAULT_API_KEY_BLOCK
    else:
        name = block or _settings().webhook_secret_block or "gemini-webhook-secret"
    if sys.stdin.isatty():
        value = getpass.getpass(f"{which.value} (input hidden): ")
    else:
        value = sys.stdin.readline()
    value = value.strip()
    if not value:
        raise CliError(f"no {which.value} given on standard input")
    Secret(value=SecretStr(value)).save(name, overwrite=True)
    console.print(f"stored the {which.value} in the Prefect Secret block {name!r} on {api_url}")
    if which is SecretKind.WEBHOOK_SECRET:
        console.print(f"the receiver reads it with LEDGER_WEBHOOK_SECRET_BLOCK={name}")
    elif name != DEFAULT_API_KEY_BLOCK:
        console.print(f"workers read it with {API_KEY_BLOCK_ENV}={name}")


@app.command()
@handles_errors
def demo(
    scenario: Annotated[str, typer.Option(help="Emulator scenario for the night.")] = "default",
    seed: Annotated[int, typer.Option(help="Emulator seed.")] = 2026,
) -> None:
    """Run a whole night against the local emulator and print the morning report (var/demo/)."""
    from flows.demo import run_demo

    run_demo(scenario=scenario, seed=seed, console=console)


@app.command()
@handles_errors
def pipelines(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The pipelines the ledger records (module:attr, channel, model, schema revision, jobs),
    then the shipped examples not run yet; reads the ledger, never creates it."""
    from flows.registry import BUILTIN, get_pipeline
    from ledger import Status, ledger_exists, missing_ledger_message
    from ledger._transitions import ACTIVE

    settings = _settings()
    exists = ledger_exists(settings.database_url)
    recorded = _recorded_pipelines(_existing_ledger()) if exists else []
    names = {r["name"] for r in recorded}
    examples = []
    for name in sorted(set(BUILTIN) - names):
        p = get_pipeline(name, settings)
        examples.append(
            {
                "name": name,
                "spec": BUILTIN[name],
                "channel": str(p.channel),
                "model": p.model,
                "description": p.description,
            }
        )
    if as_json:
        _print_json({"recorded": recorded, "examples": examples})
        return
    # One line per pipeline (soft-wrapped): a table of nine columns folds every cell at 80.
    if recorded:
        console.print("pipelines in the ledger:")
        for r in recorded:
            by_status = r["by_status"]
            where = (
                f"{r['spec']}, {r['channel']} channel, model {r['model']},"
                f" schema revision {r['revision']}"
                if r["spec"]
                else "not recorded (jobs enrolled before pipelines were recorded)"
            )
            console.print(
                f"  {escape(r['name'])}: {escape(where)}; {r['jobs']} jobs:"
                f" {by_status.get(Status.CONSUMED, 0)} consumed,"
                f" {by_status.get(Status.PARKED, 0)} parked,"
                f" {sum(by_status.get(s, 0) for s in ACTIVE)} in flight",
                soft_wrap=True,
            )
    elif not exists:
        console.print(
            f"no pipeline recorded: {missing_ledger_message(settings.database_url)}",
            soft_wrap=True,
        )
    else:
        console.print("no pipeline recorded in the ledger yet")
    if examples:
        console.print("shipped examples:")
        for e in examples:
            console.print(
                f"  {e['name']}: {e['channel']} channel, model {e['model']}. {e['description']}",
                soft_wrap=True,
            )


def _recorded_pipelines(ledger: Ledger) -> list[dict[str, Any]]:
    """Each recorded pipeline with its jobs by status; a pipeline with jobs but no record
    (jobs enrolled before pipelines were recorded) is listed too, without a spec."""
    counts = ledger.counts_by_pipeline()
    rows: list[dict[str, Any]] = [
        {
            "name": rec.name,
            "spec": rec.spec,
            "channel": rec.channel,
            "model": rec.model,
            "revision": rec.revision,
            "by_status": counts.get(rec.name, {}),
        }
        for rec in ledger.pipelines()
    ]
    known = {r["name"] for r in rows}
    for name in sorted(set(counts) - known):
        rows.append(
            {
                "name": name,
                "spec": None,
                "channel": "",
                "model": "",
                "revision": None,
                "by_status": counts[name],
            }
        )
    for r in rows:
        r["jobs"] = sum(r["by_status"].values())
    return sorted(rows, key=lambda r: r["name"])


@app.command()
@handles_errors
def replay(
    execute: Annotated[
        bool, typer.Option("--execute", help="Replay for real (default: a dry run).")
    ] = False,
    limit: Annotated[int, typer.Option(help="At most this many jobs, oldest first.")] = 20,
    error_class: Annotated[
        str | None, typer.Option(help="Only jobs parked with this class (e.g. exhausted:429).")
    ] = None,
    pipeline: Annotated[
        str | None, typer.Option(help="Only this pipeline (name or module:attr).")
    ] = None,
    rate: Annotated[float, typer.Option(help="At most this many jobs per second.")] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Return parked jobs to their channel: a dry run that lists them unless --execute."""
    from flows.replay import MAX_LIMIT, check_text, dry_run
    from flows.replay import replay as replay_flow

    if not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"--limit must be between 1 and {MAX_LIMIT}, got {limit}")
    if not (math.isfinite(rate) and rate > 0):
        raise UsageError(f"--rate must be a positive, finite number of jobs a second, got {rate}")
    check_text("--error-class", error_class)
    check_text("--pipeline", pipeline)
    _existing_ledger(write=execute)
    if not execute:
        # Only reads the ledger: no flow, so no Prefect server is needed or started.
        report = dry_run(_settings(), limit=limit, error_class=error_class, pipeline=pipeline)
    else:
        with _prefect():
            report = replay_flow(
                execute=execute,
                limit=limit,
                error_class=error_class,
                pipeline=pipeline,
                rate_per_second=rate,
            )
    if as_json:
        _print_json(report)
        return
    table = Table(title="replay" if execute else "replay (dry run: nothing changed)")
    for column in ("key", "pipeline", "channel", "error class", "attempts", "action"):
        table.add_column(column)
    if execute:
        table.add_column("outcome")
    for job in report["jobs"]:
        row = [
            job["key"],
            job["pipeline"],
            job["channel"],
            str(job["error_class"]),
            str(job["attempts"]),
            job["action"],
        ]
        table.add_row(*row, *([str(job.get("outcome"))] if execute else []))
    console.print(table)
    if execute:
        console.print(
            f"scanned {report['scanned']}  recovered {report['recovered']}"
            f" (called {report['recovered_direct']}, returned to queue"
            f" {report['returned_to_queue']})  still failing {report['still_failing']}"
        )
    else:
        console.print(
            f"scanned {report['scanned']}: would call {report['would_call']}, would return"
            f" {report['would_queue']} to their queue; run again with --execute"
        )


@app.command("dead-letter")
@handles_errors
def dead_letter(
    key: Annotated[
        str | None, typer.Argument(help="One job's idempotency key: show that row.")
    ] = None,
    day: Annotated[
        str | None, typer.Option(help="Day to report on (YYYY-MM-DD), default today (UTC).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Parked jobs by error class with the change since yesterday, attempts, tokens, cost.

    With KEY: that one row, with its class, last error and the model version that answered.
    Read-only: unlike the summary flow it stores no snapshot and publishes nothing.
    """
    from flows._channel import today_utc
    from flows.summary import LOOKBACK_DAYS, build_summary, halt_lines, refusal_lines

    if key is not None:
        _show_job(_existing_ledger(), key, as_json=as_json)
        return
    the_day = _day(day) or today_utc()
    from flows._pricing import load_prices

    report = build_summary(_existing_ledger(), the_day, load_prices(_settings().prices_file))
    if as_json:
        _print_json(report)
        return
    parked = report["parked"]
    morning = Table(title=f"morning report for {report['day']}")
    for column in ("pipeline", "delivered", "parked", "retrying", "in flight", "oldest", "cost"):
        morning.add_column(column, justify="left" if column == "pipeline" else "right")
    for p in report["pipelines"]:
        morning.add_row(
            p["pipeline"],
            str(p["delivered"]),
            str(p["parked"]),
            str(p["retrying"]),
            str(p["in_flight"]),
            p["oldest_in_flight"] or "-",
            f"${p['cost_usd']:.4f}",
        )
    console.print(morning)
    for p in report["pipelines"]:
        for c in p["parked_by_class"]:
            example = " ".join(str(c["example"] or "").split())[:100]
            console.print(f"  {p['pipeline']}: {c['jobs']} parked {c['error_class']}: {example}")
    for line in halt_lines(report["halts"]) + refusal_lines(report):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    table = Table(title=f"dead letters on {report['day']}: {parked['total']} parked")
    for column in ("error class", "parked", "previous", "change"):
        table.add_column(column, justify="left" if column == "error class" else "right")
    for row in report["parked_by_class"]:
        table.add_row(
            row["error_class"], str(row["parked"]), str(row["previous"]), f"{row['delta']:+d}"
        )
    console.print(table)
    since = report["baseline_day"] or f"zero (no summary in the last {LOOKBACK_DAYS} days)"
    console.print(f"change: {parked['delta']:+d} since {since}")
    statuses = "  ".join(f"{s} {n}" for s, n in report["by_status"].items())
    console.print(f"jobs {report['jobs']}: {statuses or 'none'}")
    tokens, cost = report["tokens"], report["cost"]
    console.print(
        f"attempts {report['attempts']}  tokens {tokens['total']} (prompt {tokens['prompt']},"
        f" cached {tokens['cached']}, answer {tokens['candidates']},"
        f" thinking {tokens['thoughts']})  estimated cost ${cost['usd']:.4f}",
        highlight=False,
    )
    if cost["unpriced"]:
        console.print(cost["unpriced"], highlight=False, markup=False, soft_wrap=True)
    for poison in report["poison_inputs"]:
        console.print(
            f"poison input {poison['fingerprint']}: parked under {poison['keys']} keys"
            f" ({poison['error_class']})"
        )


@app.command()
@handles_errors
@reports_settings
def doctor(
    pipelines: Annotated[
        list[str] | None, typer.Argument(help="More pipelines to check (module:attr).")
    ] = None,
    live: Annotated[
        bool, typer.Option("--live", help="Also make a few real API calls (spends tokens).")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", help="Spend the --live tokens without asking.")
    ] = False,
    pipeline: Annotated[
        str | None, typer.Option(help="Pipeline whose model and schema --live uses.")
    ] = None,
    shapes_out: Annotated[
        str, typer.Option(help="Where --live records the structure of the answers.")
    ] = "var/doctor-shapes.json",
    compare_shapes: Annotated[
        str | None,
        typer.Option(help="Compare a shape file from --live with what the emulator serves."),
    ] = None,
    batch_timeout: Annotated[
        float, typer.Option(help="Seconds --live waits for its 3-row batch to finish.")
    ] = 600.0,
    prefect_file: Annotated[
        str | None, typer.Option(help="The prefect.yaml whose deployments to check.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check the setup before the first night: one line per check, exit 1 if any fails."""
    from pathlib import Path

    import flows.doctor as dr
    from flows.settings import load_settings_reporting

    # A refused setting is the settings check's finding, not the end of the command: the
    # other checks run on its default.
    settings, problems = load_settings_reporting()
    spec = pipeline or (pipelines[0] if pipelines else "reviews")
    if compare_shapes is not None:
        recorded = dr.load_shapes(Path(compare_shapes))
        served, _ = dr.emulator_shapes(settings, spec)
        drift = dr.diff_shapes(recorded, served)
        if as_json:
            _print_json({"ok": not drift, "drift": [d.__dict__ for d in drift]})
        else:
            for d in drift:
                console.print(str(d), highlight=False, markup=False)
            console.print(f"{len(drift)} field(s) differ" if drift else "no drift", highlight=False)
        raise typer.Exit(1 if drift else 0)
    if live:
        from flows.registry import get_pipeline

        target = get_pipeline(spec, settings)
        note = (
            f"doctor --live makes {dr.estimate_requests()} requests to {target.model} (one"
            " generate_content, a 3-row batch, one background interaction): at most about"
            f" {dr.estimate_tokens(target.output.model_json_schema()):,} tokens"
        )
        err.print(note, highlight=False, markup=False, soft_wrap=True)
        if not yes:
            if not sys.stdin.isatty():
                raise CliError("doctor --live spends tokens: pass --yes to confirm")
            typer.confirm("go on?", abort=True)
    checks = dr.run_checks(
        list(pipelines or []),
        settings=settings,
        problems=problems,
        prefect_yaml=Path(prefect_file) if prefect_file else None,
    )
    extra: dict[str, Any] = {}
    if live:
        run = dr.run_live(spec, settings, batch_timeout_s=batch_timeout)
        checks += run.checks
        out = Path(shapes_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        dr.write_shapes(out, run.recorder.as_json(), pipeline=spec)
        extra = {"tokens": run.tokens, "shapes": str(out)}
    if as_json:
        _print_json(dr.to_json(checks, **extra))
    else:
        for check in checks:
            console.print(dr.render_line(check), highlight=False, markup=False, soft_wrap=True)
        if live:
            console.print(
                f"live: {extra['tokens']} tokens spent; answer shapes in {extra['shapes']}"
                " (gemini-ledger doctor --compare-shapes FILE compares them with the emulator)",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
    raise typer.Exit(dr.exit_code(checks))


@limits_app.command("apply")
@handles_errors
def limits_apply(
    rpm: Annotated[
        int | None, typer.Option(help="Requests a minute per model, across every worker.")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Requests in flight per model, across every worker.")
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(help="A model to limit (repeatable); default: every known pipeline's."),
    ] = None,
) -> None:
    """Create or update the Prefect global concurrency limits every worker honours."""
    from flows.quota import apply_limits
    from flows.registry import get_pipeline, pipeline_names

    if rpm is None and concurrency is None:
        raise CliError("give --rpm, --concurrency or both")
    models = model or sorted({get_pipeline(name, _settings()).model for name in pipeline_names()})
    for applied in apply_limits(models, rpm=rpm, concurrency=concurrency):
        console.print(applied.describe(), highlight=False, markup=False, soft_wrap=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
