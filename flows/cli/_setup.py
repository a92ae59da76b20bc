"""The commands that set up and check a worker's world: ``secret set``, ``webhook serve``,
``limits apply``, ``automations apply``, ``worker start``, ``doctor``."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli._app import (
    CliError,
    app,
    automations_app,
    command_settings,
    console,
    err,
    handles_errors,
    limits_app,
    print_json,
    reports_settings,
    secret_app,
    webhook_app,
    without_ledger_block,
    worker_app,
)


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
    from flows.webhooks.receiver import serve

    serve(command_settings(), host=host, port=port)


class SecretKind(StrEnum):
    API_KEY = "api-key"
    WEBHOOK_SECRET = "webhook-secret"
    LEDGER_URL = "ledger-url"


@secret_app.command("set")
@handles_errors
@without_ledger_block
def secret_set(
    which: Annotated[SecretKind, typer.Argument(help="api-key, webhook-secret or ledger-url.")],
    block: Annotated[
        str | None,
        typer.Option(
            help="Block name (default: GEMINI_API_KEY_BLOCK or gemini-api-key;"
            " LEDGER_WEBHOOK_SECRET_BLOCK or gemini-webhook-secret;"
            " LEDGER_DATABASE_URL_BLOCK or gemini-ledger-database-url)."
        ),
    ] = None,
) -> None:
    """Store the Gemini API key, the webhook secret or the ledger's URL (a PostgreSQL URL
    carries its password) in a Prefect Secret block.

    The value is read from standard input (or asked for, hidden, on a terminal), never from
    the command line, so it stays out of shell history. Needs PREFECT_API_URL: a block on a
    temporary server would vanish with it.
    """
    import getpass

    from prefect.blocks.system import Secret
    from prefect.settings import get_current_settings
    from pydantic import SecretStr

    from flows._ledger import DATABASE_URL_BLOCK_ENV, DEFAULT_DATABASE_URL_BLOCK
    from flows._prefect_api import check_api
    from flows.gemini.gateway import API_KEY_BLOCK_ENV, DEFAULT_API_KEY_BLOCK
    from ledger import database_url, register_secret

    api_url = get_current_settings().api.url
    if not api_url:
        raise CliError(
            "no Prefect server configured: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)"
            " to the server your worker uses"
        )
    check_api(api_url)
    if which is SecretKind.API_KEY:
        name = block or command_settings().api_key_block or DEFAULT_API_KEY_BLOCK
    elif which is SecretKind.LEDGER_URL:
        configured = (command_settings().database_url_block or "").strip()
        name = block or configured or DEFAULT_DATABASE_URL_BLOCK
    else:
        name = block or command_settings().webhook_secret_block or "gemini-webhook-secret"
    if sys.stdin.isatty():
        value = getpass.getpass(f"{which.value} (input hidden): ")
    else:
        value = sys.stdin.readline()
    value = value.strip()
    if not value:
        raise CliError(f"no {which.value} given on standard input")
    if which is SecretKind.LEDGER_URL:
        register_secret(value)
        database_url(value)  # not a database URL: one line (LedgerConfigError), nothing stored
    Secret(value=SecretStr(value)).save(name, overwrite=True)
    console.print(f"stored the {which.value} in the Prefect Secret block {name!r} on {api_url}")
    if which is SecretKind.WEBHOOK_SECRET:
        console.print(f"the receiver reads it with LEDGER_WEBHOOK_SECRET_BLOCK={name}")
    elif which is SecretKind.LEDGER_URL:
        console.print(
            f"runs read it with {DATABASE_URL_BLOCK_ENV}={name} (prefect.yaml's job variables"
            f" give the workers {DATABASE_URL_BLOCK_ENV}={DEFAULT_DATABASE_URL_BLOCK})"
        )
    elif name != DEFAULT_API_KEY_BLOCK:
        console.print(f"workers read it with {API_KEY_BLOCK_ENV}={name}")


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

    import flows.ops.doctor as dr
    from flows.settings import load_settings_reporting, read_ledger_block
    from ledger import LedgerConfigError

    # A refused setting is the settings check's finding, not the end of the command: the
    # other checks run on its default. So is a ledger URL's Secret block that cannot be read.
    settings, problems = load_settings_reporting()
    ledger_unreadable: str | None = None
    try:
        settings = read_ledger_block(settings)
    except LedgerConfigError as exc:
        ledger_unreadable = str(exc)
    spec = pipeline or (pipelines[0] if pipelines else "reviews")
    if compare_shapes is not None:
        recorded = dr.load_shapes(Path(compare_shapes))
        served, _ = dr.emulator_shapes(settings, spec)
        drift = dr.diff_shapes(recorded, served)
        if as_json:
            print_json({"ok": not drift, "drift": [d.__dict__ for d in drift]})
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
        ledger_unreadable=ledger_unreadable,
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
        print_json(dr.to_json(checks, **extra))
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
@without_ledger_block
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
    from flows.gemini.quota import apply_limits
    from flows.registry import get_pipeline, pipeline_names

    if rpm is None and concurrency is None:
        raise CliError("give --rpm, --concurrency or both")
    models = model or sorted(
        {get_pipeline(name, command_settings()).model for name in pipeline_names()}
    )
    for applied in apply_limits(models, rpm=rpm, concurrency=concurrency):
        console.print(applied.describe(), highlight=False, markup=False, soft_wrap=True)


@automations_app.command("apply")
@handles_errors
@without_ledger_block
def automations_apply(
    block: Annotated[
        str | None,
        typer.Option(
            help="The notification block the alerts send to, as TYPE/NAME"
            " (slack-webhook/ops-alerts); without it, only the automations that notify"
            " no one are applied."
        ),
    ] = None,
    folder: Annotated[
        Path | None,
        typer.Option("--dir", help="The folder of automation files (default: automations/)."),
    ] = None,
) -> None:
    """Create or update the automations declared in automations/*.yaml, delete the ones it
    created that no file declares any more (idempotent; hand-made ones are left alone)."""
    from flows.ops.automations import AUTOMATIONS_DIR, apply_automations

    for applied in apply_automations(folder or AUTOMATIONS_DIR, block=block):
        console.print(applied.describe(), highlight=False, markup=False, soft_wrap=True)


@worker_app.command(
    "start",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def worker_start(ctx: typer.Context) -> None:
    """`prefect worker start ARGS` (e.g. --pool gemini-ledger); on Ctrl-C or SIGTERM its flow
    runs stop between rows and end Cancelled, then the worker exits (a second one: at once)."""
    from flows.ops.worker import run_worker

    raise typer.Exit(run_worker(ctx.args))
