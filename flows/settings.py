"""Every setting of gemini-ledger in one typed object, read from the environment once.

Each field names the variable it comes from, its type and its default; secrets are
``SecretStr`` so they print masked. :func:`load_settings` validates them all when a command
or a flow run starts, so a bad value fails before any work, naming the variable, instead of
midway through a night. ``gemini-ledger config`` prints the effective settings and where
each came from.

Prefect's own settings (``PREFECT_API_URL``, ...) stay Prefect's; the example pipelines'
settings (``REVIEWS_RESULTS_URL``, ``ARTICLES_DIR``, ``RECEIPTS_DIR``) belong to the examples.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ledger import LedgerConfigError, register_secret

__all__ = [
    "Settings",
    "SettingsError",
    "describe",
    "load_settings",
    "load_settings_reporting",
    "read_ledger_block",
]


class SettingsError(LedgerConfigError, ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def _env(*names: str) -> Any:
    return AliasChoices(*names) if len(names) > 1 else names[0]


class Settings(BaseSettings):
    """gemini-ledger's settings (environment variables; see the README's settings table)."""

    # populate_by_name: code and tests build Settings(database_url=...) by field name.
    model_config = SettingsConfigDict(
        extra="ignore", case_sensitive=True, frozen=True, populate_by_name=True
    )

    database_url: str = Field(
        "sqlite:///var/ledger.db", validation_alias=_env("LEDGER_DATABASE_URL")
    )
    # The Prefect Secret block holding the ledger's URL; when set, its value is database_url
    # (load_settings reads it), whatever LEDGER_DATABASE_URL says.
    database_url_block: str | None = Field(None, validation_alias=_env("LEDGER_DATABASE_URL_BLOCK"))
    api_key: SecretStr | None = Field(
        None, validation_alias=_env("GEMINI_API_KEY", "GOOGLE_API_KEY")
    )
    # None: the default block, gemini-api-key (flows.gateway says a named block is missing).
    api_key_block: str | None = Field(None, validation_alias=_env("GEMINI_API_KEY_BLOCK"))
    gemini_base_url: str | None = Field(None, validation_alias=_env("GOOGLE_GEMINI_BASE_URL"))
    webhook_secret: SecretStr | None = Field(None, validation_alias=_env("LEDGER_WEBHOOK_SECRET"))
    webhook_secret_block: str | None = Field(
        None, validation_alias=_env("LEDGER_WEBHOOK_SECRET_BLOCK")
    )
    reconcile_deployment: str | None = Field(
        None, validation_alias=_env("LEDGER_RECONCILE_DEPLOYMENT")
    )
    prices_file: Path | None = Field(None, validation_alias=_env("LEDGER_PRICES_FILE"))
    pipelines: str | None = Field(None, validation_alias=_env("GEMINI_LEDGER_PIPELINES"))
    # Stale ages: a reservation or delivery claim unrenewed this long is a dead pass's and is
    # taken over. A live pass renews what it holds every quarter of the age (flows.run._renewal),
    # even inside one long call, so the age can be short: the next tick takes a dead
    # tick's rows over.
    batch_stale_s: float = Field(120.0, ge=0, validation_alias=_env("GEMINI_LEDGER_BATCH_STALE_S"))
    background_stale_s: float = Field(
        120.0, ge=0, validation_alias=_env("GEMINI_LEDGER_BACKGROUND_STALE_S")
    )
    direct_backoff_s: float = Field(
        2.0, ge=0, validation_alias=_env("GEMINI_LEDGER_DIRECT_BACKOFF_S")
    )
    direct_jitter: float = Field(
        0.2, ge=0, le=1, validation_alias=_env("GEMINI_LEDGER_DIRECT_JITTER")
    )
    direct_max_wait_s: float = Field(
        120.0, ge=0, validation_alias=_env("GEMINI_LEDGER_DIRECT_MAX_WAIT_S")
    )
    direct_stale_s: float = Field(
        300.0, ge=0, validation_alias=_env("GEMINI_LEDGER_DIRECT_STALE_S")
    )
    batch_submitted_s: float = Field(
        72 * 3600.0, gt=0, validation_alias=_env("GEMINI_LEDGER_BATCH_SUBMITTED_S")
    )
    batch_output_grace_s: float = Field(
        3600.0, ge=0, validation_alias=_env("GEMINI_LEDGER_BATCH_OUTPUT_GRACE_S")
    )
    batch_lost_polls: int = Field(3, ge=1, validation_alias=_env("GEMINI_LEDGER_BATCH_LOST_POLLS"))
    batch_lost_after_s: float = Field(
        600.0, ge=0, validation_alias=_env("GEMINI_LEDGER_BATCH_LOST_AFTER_S")
    )
    batch_refused_halt: int = Field(
        6, ge=1, validation_alias=_env("GEMINI_LEDGER_BATCH_REFUSED_HALT")
    )
    # The deadline's fallback (flows.channels._deadline): time kept in hand beyond what the
    # direct channel needs; a direct call's time when none was measured yet; how long the
    # switch-over waits for cancelled batch jobs to end.
    deadline_margin_s: float = Field(
        900.0, ge=0, validation_alias=_env("GEMINI_LEDGER_DEADLINE_MARGIN_S")
    )
    deadline_call_s: float = Field(
        10.0, gt=0, validation_alias=_env("GEMINI_LEDGER_DEADLINE_CALL_S")
    )
    deadline_cancel_wait_s: float = Field(
        300.0, ge=0, validation_alias=_env("GEMINI_LEDGER_DEADLINE_CANCEL_WAIT_S")
    )
    delivery_cap: int = Field(5, ge=1, validation_alias=_env("GEMINI_LEDGER_DELIVERY_CAP"))
    webhook_max_body_bytes: int = Field(
        1024 * 1024, ge=1, validation_alias=_env("LEDGER_WEBHOOK_MAX_BODY_BYTES")
    )
    reconcile_writer: Literal["auto", "inline", "thread", "process"] = Field(
        "auto", validation_alias=_env("GEMINI_LEDGER_RECONCILE_WRITER")
    )
    prefect_startup_s: float = Field(
        180.0, gt=0, validation_alias=_env("GEMINI_LEDGER_PREFECT_STARTUP_S")
    )
    # The most one night (a tick's day) may spend across every pipeline of the ledger, in
    # USD at the price table's estimate (flows.run._budget); unset: no daily total.
    daily_budget_usd: float | None = Field(
        None, ge=0, validation_alias=_env("GEMINI_LEDGER_DAILY_BUDGET_USD")
    )

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # An exported-but-empty variable means "not set", as a shell user expects.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "batch_stale_s",
        "batch_submitted_s",
        "batch_output_grace_s",
        "batch_lost_after_s",
        "background_stale_s",
        "direct_backoff_s",
        "direct_jitter",
        "direct_max_wait_s",
        "direct_stale_s",
        "prefect_startup_s",
        "daily_budget_usd",
        "deadline_margin_s",
        "deadline_call_s",
        "deadline_cancel_wait_s",
    )
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("pipelines")
    @classmethod
    def _pairs(cls, value: str | None) -> str | None:
        _parse_pairs(value)  # a bad pair fails here, when the settings are loaded
        return value

    @classmethod
    def given(cls, **values: Any) -> Settings:
        """Settings from ``values`` (by field or variable name) and the defaults alone, the
        environment unread: how tests and in-process callers configure code without
        patching the environment."""
        return _Given(**values)

    @property
    def api_key_variable(self) -> str:
        """The variable the environment's key came from (for the fix a fault names)."""
        names = _variables("api_key")
        return next((n for n in names if os.environ.get(n, "").strip()), names[0])

    @property
    def pipeline_specs(self) -> dict[str, str]:
        """``GEMINI_LEDGER_PIPELINES`` as name -> ``module:attribute`` (parsed here only)."""
        return _parse_pairs(self.pipelines)


class _Given(Settings):
    """:meth:`Settings.given`: the same fields and checks, read from the arguments only."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _parse_pairs(value: str | None) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (value or "").split(","))):
        name, sep, spec = part.partition("=")
        if not sep or not name.strip() or ":" not in spec:
            raise ValueError(f"{part!r} is not name=module:attribute")
        pairs[name.strip()] = spec.strip()
    return pairs


def _variables(field: str) -> tuple[str, ...]:
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(str(c) for c in alias.choices)
    return (str(alias),)


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    """(variable, "variable: what is wrong (got value)") for each refused setting."""
    problems = []
    for error in exc.errors():
        variable = ".".join(str(part) for part in error["loc"]) or "settings"
        problems.append((variable, f"{variable}: {error['msg']} (got {error.get('input')!r})"))
    return problems


def read_ledger_block(settings: Settings) -> Settings:
    """``settings`` with ``database_url`` read from the Prefect Secret block that
    ``LEDGER_DATABASE_URL_BLOCK`` names (unchanged without one); a missing or unreadable block
    raises ``LedgerConfigError``, one line naming it and the command that stores it."""
    if not settings.database_url_block:
        return settings
    from flows._ledger import url_from_block

    block_url = url_from_block(settings.database_url_block.strip())
    return settings.model_copy(update={"database_url": block_url})


def _registered(settings: Settings) -> Settings:
    # Secrets are known from here on: redact() hides them in every message we store or print.
    for field in Settings.model_fields:
        value = getattr(settings, field)
        if isinstance(value, SecretStr):
            register_secret(value.get_secret_value())
    return settings


def load_settings(*, read_blocks: bool = True) -> Settings:
    """Read and validate every setting now; a bad one raises :class:`SettingsError`.

    Called once where a command, a flow run or the receiver starts; everything below takes
    the :class:`Settings` it returned as an argument. With ``read_blocks`` the ledger's URL
    is read here from its Secret block (:func:`read_ledger_block`), so ``database_url`` is the
    one to open; without, only the variables are read (no request: a command that stores
    the block, or a module import).
    """
    try:
        settings = Settings()  # type: ignore[call-arg]  # every field has a default
    except ValidationError as exc:
        problems = [line for _, line in _problems(exc)]
        raise SettingsError("bad setting: " + "; ".join(problems)) from None
    settings = _registered(settings)
    return read_ledger_block(settings) if read_blocks else settings


def load_settings_reporting() -> tuple[Settings, list[str]]:
    """The settings with each refused variable replaced by its default, and one line per
    refused variable: what ``doctor`` runs on, so a bad setting is one of its findings and
    the other checks still run. Variables only: the doctor reads the ledger URL's block
    itself (:func:`read_ledger_block`), to report a missing one as the ledger's finding."""
    try:
        return _registered(Settings()), []  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = _problems(exc)
    defaults: dict[str, Any] = {}
    for variable, _ in problems:
        for field, info in Settings.model_fields.items():
            if variable in _variables(field):
                for name in _variables(field):  # an init value outranks the environment
                    defaults[name] = info.default
    try:
        settings = Settings(**defaults)
    except ValidationError as exc:  # a problem no single variable owns
        raise SettingsError("bad setting: " + "; ".join(p for _, p in _problems(exc))) from None
    return _registered(settings), [line for _, line in problems]


def _without_password(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def describe(settings: Settings) -> list[tuple[str, str, str]]:
    """(variable, effective value, where it came from) for every setting, secrets masked."""
    rows = []
    for field in Settings.model_fields:
        names = _variables(field)
        source = next((f"environment ({n})" for n in names if os.environ.get(n, "").strip()), None)
        value = getattr(settings, field)
        if field == "database_url" and settings.database_url_block:
            source = f"Secret block {settings.database_url_block!r}"
        if isinstance(value, SecretStr):
            shown = "********"
        elif field == "database_url":
            shown = _without_password(str(value))
        elif value is None:
            shown = "(unset)"
        else:
            shown = str(value)
        rows.append((" / ".join(names), shown, source or "default"))
    return rows
