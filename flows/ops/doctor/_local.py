"""The free checks that need no Prefect server: settings, the ledger, pipelines, secrets."""

from __future__ import annotations

import contextlib
import re
import uuid
from pathlib import Path

from flows.crash import CRASH_AT_ENV
from flows.ops.doctor._report import Check
from flows.settings import Settings

__all__ = [
    "API_KEY_FIX",
    "check_api_key",
    "check_api_settings",
    "check_ledger",
    "check_pipelines",
    "check_prices",
    "check_settings",
    "check_webhook_secret",
    "pipeline_specs",
]

API_KEY_FIX = "gemini-ledger secret set api-key  (or export GEMINI_API_KEY where the worker starts)"

# What an AI Studio key looks like; anything else is only a warning (the emulator takes any key).
_GOOGLE_KEY = re.compile(r"AIza[0-9A-Za-z_\-]{35}")


def check_settings(settings: Settings, problems: list[str]) -> Check:
    """Every setting parses, so no run fails on it at 3 am. ``problems``: the variables
    ``flows.settings.load_settings_reporting`` refused (the very validation every command
    and flow run applies; ``settings`` has their defaults instead)."""
    from flows.crash import crash_armed
    from flows.gemini._pricing import load_prices

    problems = list(problems)
    if settings.prices_file is not None:
        try:
            load_prices(settings.prices_file)
        except ValueError as exc:
            problems.append(str(exc))
    if crash_armed():
        problems.append(f"{CRASH_AT_ENV} is set: it kills runs on purpose (tests only)")
    if problems:
        return Check.fail(
            "settings",
            "; ".join(problems),
            "correct or unset them (README, Settings)",
        )
    return Check.ok("settings", "every setting parses")


def check_ledger(settings: Settings, unreadable: str | None = None) -> list[Check]:
    """Reachable, migrated to this version's head, and writable (a write rolled back).
    ``unreadable``: why the Secret block holding the ledger's URL could not be read (then
    there is no URL to check)."""
    from sqlalchemy import insert
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from ledger import database_url, make_engine
    from ledger._db import current_revision, head_revision
    from ledger._models import WebhookDelivery

    if unreadable is not None:  # the Secret block holding its URL is missing or unreadable
        return [Check.fail("ledger", unreadable, "gemini-ledger secret set ledger-url")]
    url = database_url(settings.database_url)
    shown = make_url(url).render_as_string(hide_password=True)
    upgrade_fix = "gemini-ledger db upgrade"
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(str(parsed.database))
        if not path.exists():
            # Connecting would create an empty file: say so instead.
            return [
                Check.fail("ledger", f"{shown} does not exist yet", upgrade_fix),
            ]
    engine = make_engine(url)
    try:
        try:
            current = current_revision(engine)
        except SQLAlchemyError as exc:
            return [
                Check.fail(
                    "ledger",
                    f"cannot reach {shown}: {type(exc).__name__}: {getattr(exc, 'orig', exc)}",
                    "check LEDGER_DATABASE_URL and that the database server is running",
                )
            ]
        checks = [Check.ok("ledger reachable", shown)]
        head = head_revision()
        if current != head:
            found = current or "empty (no schema)"
            return [
                *checks,
                Check.fail(
                    "ledger migrated",
                    f"at revision {found}, this version needs {head}",
                    upgrade_fix,
                ),
            ]
        checks.append(Check.ok("ledger migrated", f"revision {head}"))
        try:
            with engine.connect() as conn:
                tx = conn.begin()
                conn.execute(
                    insert(WebhookDelivery.__table__).values(  # type: ignore[attr-defined]
                        webhook_id=f"doctor:{uuid.uuid4().hex}", event_type="doctor"
                    )
                )
                tx.rollback()  # a probe: nothing stays
        except SQLAlchemyError as exc:
            checks.append(
                Check.fail(
                    "ledger writable",
                    f"{type(exc).__name__}: {getattr(exc, 'orig', exc)}",
                    "give the worker's user write access to the database (and its directory)",
                )
            )
        else:
            checks.append(Check.ok("ledger writable", "a probe write was rolled back"))
        return checks
    finally:
        engine.dispose()


def pipeline_specs(settings: Settings, extra: list[str]) -> list[str]:
    """The shipped examples, GEMINI_LEDGER_PIPELINES' names, then ``extra`` (module:attr)."""
    from flows.registry import pipeline_names

    names = list(pipeline_names())
    names += [n for n in settings.pipeline_specs if n not in names]
    return names + [e for e in extra if e not in names]


def check_pipelines(
    settings: Settings, extra: list[str], deployed: dict[str, list[str]] | None = None
) -> list[Check]:
    """Each named pipeline imports, is a Pipeline, and carries the name it is registered by;
    ``deployed`` gives the deployments naming a pipeline, said with its failure."""
    from flows.registry import UnknownPipeline, get_pipeline

    configured = settings.pipeline_specs
    checks = []
    for spec in pipeline_specs(settings, extra):
        name = f"pipeline {spec}"
        users = (deployed or {}).get(spec)
        by = f" (named by deployment {', '.join(users)})" if users else ""
        try:
            found = get_pipeline(spec, settings)
        except UnknownPipeline as exc:
            checks.append(
                Check.fail(
                    name,
                    f"{exc}{by}",
                    "fix the module:attribute (importable from the worker's directory)",
                )
            )
            continue
        except Exception as exc:  # the user's module raised while importing
            checks.append(
                Check.fail(
                    name,
                    f"importing it raised {type(exc).__name__}: {exc}{by}",
                    f"python -c 'import {spec.split(':')[0]}'",
                )
            )
            continue
        if spec in configured and found.name != spec:
            checks.append(
                Check.fail(
                    name,
                    f"GEMINI_LEDGER_PIPELINES names it {spec!r}, the pipeline's name is"
                    f" {found.name!r}",
                    f"use {found.name}={configured[spec]} (the ledger records pipelines by name)",
                )
            )
            continue
        named = "" if found.name == spec else f"{found.name}: "
        checks.append(Check.ok(name, f"{named}{found.channel} channel, model {found.model}"))
    return checks


def check_prices(settings: Settings, extra: list[str], *, read_ledger: bool = True) -> Check:
    """Every model the pipelines use, and every model with rows in the ledger, has a price:
    an unpriced one would be a silent $0 in the morning's cost (a warning, not a failure).
    Without ``read_ledger`` (its URL unknown) only the pipelines' models."""
    from flows.gemini._pricing import PRICES_FILE_ENV, load_prices
    from flows.registry import get_pipeline
    from ledger import Ledger, ledger_exists

    name = "prices"
    try:
        prices = load_prices(settings.prices_file)
    except ValueError:
        return Check.skip(name, f"{PRICES_FILE_ENV} is broken (see the settings check)")
    rows: dict[str, int] = {}
    for spec in pipeline_specs(settings, extra):
        with contextlib.suppress(Exception):  # an unloadable pipeline is its own check
            rows.setdefault(get_pipeline(spec, settings).model, 0)
    with contextlib.suppress(Exception):  # an unreachable or old ledger is its own check
        if read_ledger and ledger_exists(settings.database_url):
            ledger = Ledger(settings.database_url, migrate=False)
            try:
                for usage in ledger.usage_by_model():
                    rows[usage.model] = rows.get(usage.model, 0) + usage.rows
            finally:
                ledger.engine.dispose()
    missing = [(m, n) for m, n in sorted(rows.items()) if prices.price_of(m) is None]
    if missing:
        listed = "; ".join(f"model {m}, {n} row{'' if n == 1 else 's'}" for m, n in missing)
        return Check.warn(
            name,
            f"unpriced: {listed}: the cost estimate leaves them out",
            f"add each to a JSON price file named by {PRICES_FILE_ENV} (README, Settings)",
        )
    return Check.ok(name, f"{len(rows)} models priced ({prices.source})")


def _prefect_api_url() -> str | None:
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def check_api_key(settings: Settings) -> Check:
    """The key is where a worker looks (the Secret block first, else its environment)."""
    from flows.gemini.gateway import GatewayConfigError, _block_name, _key_from_block

    name = "api key"
    block = _block_name(settings)
    given = settings.api_key.get_secret_value() if settings.api_key is not None else ""
    env_var = settings.api_key_variable if given else None
    value: str | None = None
    where = ""
    if _prefect_api_url():
        try:
            value = _key_from_block(block)
        except GatewayConfigError as exc:
            return Check.fail(name, exc.cause, exc.fix)
        where = f"Prefect Secret block {block!r}"
    if value is None and env_var is not None:
        value = given.strip()
        where = env_var
    if value is None:
        if not _prefect_api_url():
            return Check.fail(
                name,
                "not found (looked in GEMINI_API_KEY, GOOGLE_API_KEY)",
                "export GEMINI_API_KEY=... where flows run (with a Prefect server:"
                " gemini-ledger secret set api-key)",
            )
        return Check.fail(
            name,
            f"not found (looked in Prefect Secret block {block!r}, GEMINI_API_KEY, GOOGLE_API_KEY)",
            API_KEY_FIX,
        )
    problem = _malformed(value)
    if problem:
        return Check.fail(name, f"the key in {where} {problem}", API_KEY_FIX)
    if where == env_var and _prefect_api_url():
        return Check.warn(
            name,
            f"only in this shell's {env_var}: a worker sees it only if started with it",
            "gemini-ledger secret set api-key",
        )
    if not settings.gemini_base_url and not _GOOGLE_KEY.fullmatch(value):
        return Check.warn(
            name, f"in {where}, but it does not look like a Gemini key (AIza..., 39 characters)"
        )
    return Check.ok(name, f"in {where}")


def _malformed(value: str) -> str | None:
    if not value:
        return "is empty"
    if any(c.isspace() for c in value) or value[0] in "'\"" or value[-1] in "'\"":
        return "contains spaces or quotes"
    if not value.isascii() or not value.isprintable():
        return "contains characters no API key has"
    return None


def check_webhook_secret(settings: Settings) -> Check:
    """Optional; when configured, it resolves and is a valid Standard Webhooks secret."""
    from standardwebhooks.webhooks import Webhook

    from flows.webhooks.receiver import resolve_secret

    name = "webhook secret"
    env, block = "LEDGER_WEBHOOK_SECRET", "LEDGER_WEBHOOK_SECRET_BLOCK"
    fix = "gemini-ledger secret set webhook-secret  (the whsec_... value from webhooks.create)"
    given = settings.webhook_secret
    in_env = given is not None and bool(given.get_secret_value().strip())
    if not in_env and not (settings.webhook_secret_block or "").strip():
        return Check.skip(
            name, f"webhooks not configured ({env} / {block} unset): ticks poll instead"
        )
    try:
        secret = resolve_secret(settings)
    except Exception as exc:  # a missing block, an unreachable API: all say "not found here"
        return Check.fail(name, f"{type(exc).__name__}: {exc}", fix)
    try:
        Webhook(secret)
    except Exception as exc:  # not base64 after whsec_
        return Check.fail(name, f"not a valid signing secret ({type(exc).__name__})", fix)
    where = f"env {env}" if in_env else f"Prefect Secret block {settings.webhook_secret_block!r}"
    return Check.ok(name, f"in {where}")


def check_api_settings(settings: Settings, *, read_ledger: bool = True) -> Check:
    """This machine's Gemini API (base URL and key) is the one the workers bind batch jobs at:
    a webhook receiver started here with another one is refused (``flows.gemini._api_settings``).
    Without ``read_ledger`` (its URL unknown) skipped."""
    from flows.gemini._api_settings import current_api_settings, mismatch
    from ledger import GeminiLedgerError, Ledger

    name = "api settings"
    if not read_ledger:
        return Check.skip(name, "no ledger to compare with (its URL's Secret block is unreadable)")
    try:
        ledger = Ledger(settings.database_url, migrate=False)  # never creates nor upgrades one
    except GeminiLedgerError as exc:
        return Check.skip(name, f"no ledger to compare with ({type(exc).__name__})")
    try:
        found = mismatch(ledger, current_api_settings(settings), settings)
        pipelines = len(ledger.api_settings(since=ledger.clock() - settings.batch_submitted_s))
    except Exception as exc:  # an unmigrated or unreachable ledger: check_ledger says why
        return Check.skip(name, f"cannot read the ledger's api_settings ({type(exc).__name__})")
    finally:
        ledger.dispose()
    if found is not None:
        return Check.fail(
            name,
            found,
            "use the workers' GOOGLE_GEMINI_BASE_URL and API key here (a webhook receiver"
            " started with these settings is refused), or set LEDGER_RECONCILE_DEPLOYMENT so"
            " that the workers reconcile",
        )
    if pipelines == 0:
        hours = settings.batch_submitted_s / 3600
        return Check.skip(name, f"no batch job bound in the last {hours:g} h to compare with")
    return Check.ok(name, f"the workers' of {pipelines} pipeline(s) with recent batch jobs")
