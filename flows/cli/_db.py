"""``gemini-ledger db``: create, upgrade and inspect the ledger's schema."""

from __future__ import annotations

from flows.cli._app import command_settings, console, db_app, handles_errors


@db_app.command("upgrade")
@handles_errors
def db_upgrade() -> None:
    """Create or upgrade the ledger schema (LEDGER_DATABASE_URL or the Secret block
    LEDGER_DATABASE_URL_BLOCK names; default var/ledger.db)."""
    from ledger import make_engine, upgrade

    engine = make_engine(command_settings().database_url)
    upgrade(engine)
    console.print(f"ledger at {engine.url.render_as_string(hide_password=True)} is up to date")


@db_app.command("current")
@handles_errors
def db_current() -> None:
    """Show the ledger's schema revision and the newest one this version knows."""
    from ledger import LedgerMissing, ledger_exists, make_engine, missing_ledger_message
    from ledger._db import current_revision, head_revision

    url = command_settings().database_url
    if not ledger_exists(url):
        raise LedgerMissing(missing_ledger_message(url))  # connecting would create the file
    engine = make_engine(url)
    console.print(
        f"ledger at {engine.url.render_as_string(hide_password=True)}:"
        f" revision {current_revision(engine) or 'none (empty)'}, head {head_revision()}"
    )
