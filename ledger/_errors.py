"""gemini-ledger's exceptions: one tree, one root, caught in one place by the command line.

Every error gemini-ledger raises on purpose descends from :class:`GeminiLedgerError`; the CLI
turns any of them into one line and exit code 1, and anything else (a bug, ours or in a
pipeline's own code) keeps its traceback. The categories live here, in the domain core; the
leaves marked ``flows.*`` are defined where they are raised and subclass a category::

    GeminiLedgerError
    ├── ConfigurationError ............... the setup as configured cannot work; fix, then rerun
    │   ├── LedgerConfigError ............ (also LedgerError) bad URL, unreachable or damaged DB
    │   │   ├── LedgerMissing ............ no ledger at the URL (create: `gemini-ledger db upgrade`)
    │   │   └── flows.settings.SettingsError ..... (also ValueError) a setting's bad value
    │   ├── flows.gemini.gateway.GatewayConfigError ..... (also RuntimeError) no Gemini API key
    │   ├── flows.gemini._api_settings.ApiSettingsMismatch  (also RuntimeError) another API than the
    │   │                                  workers' (the webhook receiver refused at start)
    │   └── flows._prefect_api.PrefectApiUnreachable  (also RuntimeError) PREFECT_API_URL
    ├── TransientError ................... try again later: nothing is wrong with the setup
    │   ├── LedgerBusy ................... (also LedgerError) a lock or deadlock; retried,
    │   │                                  never reported as a configuration error
    │   ├── flows._prefect_api.TemporaryServerError  (also RuntimeError)
    │   ├── flows.webhooks.receiver.ReconcileBusy ........... (also RuntimeError)
    │   └── flows.run._stop.Stopped .......... a tick stopped by SIGTERM between rows: the run
    │                                      ends Cancelled, the CLI exits 128 + signal
    ├── LedgerError ...................... the ledger refused an operation
    │   ├── InvalidTransition ............ a compare-and-set found the row in another state
    │   ├── UnknownJob
    │   ├── LedgerConfigError, LedgerBusy  (above)
    │   └── PipelineConflict ............. (also PipelineError)
    ├── PipelineError .................... a pipeline's name or definition
    │   ├── PipelineConflict
    │   └── flows.registry.UnknownPipeline ....... (also UsageError, LookupError)
    ├── SetupFault ....................... (ledger._setup) the API or ledger refused the
    │                                      setup: the tick halts and parks nothing
    └── UsageError ....................... (also ValueError) a parameter, a setting, a module
        ├── flows.cli.CliError
        └── flows.registry.UnknownPipeline

Deliberately outside the tree, as control flow that never reaches the command line:
``ledger._failure.ClassifiedError`` and ``flows.channels.direct.AttemptFailed`` carry one row's
:class:`~ledger.Failure` between a channel's attempt and its retry condition, and the webhook
receiver's refusals (``flows.webhooks._app.BadRequest`` ...) each become an HTTP response.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "GeminiLedgerError",
    "InvalidTransition",
    "LedgerBusy",
    "LedgerConfigError",
    "LedgerError",
    "LedgerMissing",
    "PipelineConflict",
    "PipelineError",
    "TransientError",
    "UnknownJob",
    "UsageError",
]


class GeminiLedgerError(Exception):
    """The root: every error gemini-ledger raises on purpose (one line, no traceback)."""


class ConfigurationError(GeminiLedgerError):
    """The setup as configured cannot work (a setting, a URL, a missing key): fix it, rerun."""


class TransientError(GeminiLedgerError):
    """A passing condition (a held lock, a busy server): the same call later may succeed."""


class LedgerError(GeminiLedgerError):
    """An error the ledger raises on purpose."""


class PipelineError(GeminiLedgerError):
    """A pipeline's name or definition is wrong or unknown."""


class UsageError(GeminiLedgerError, ValueError):
    """A mistake the user can fix: a parameter, a setting, a pipeline definition or module.

    A ``ValueError`` so that callers which caught ``ValueError`` before keep working.
    """


class LedgerConfigError(LedgerError, ConfigurationError):
    """The ledger cannot be opened as configured (bad URL, unreachable database, bad migration)."""


class LedgerMissing(LedgerConfigError):
    """There is no ledger at the configured URL (no SQLite file, or no schema in the database).

    Only ``gemini-ledger db upgrade`` (and the demo) create one: a mistyped URL that made a
    new, empty ledger would send and bill the whole day again.
    """


class LedgerBusy(LedgerError, TransientError):
    """The database refused for now: a lock held too long, a deadlock, a serialization failure.

    Transient by nature: the tick halts without parking anything and the next one retries.
    """


class UnknownJob(LedgerError):
    """No job has this idempotency key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no job with key {key!r} in the ledger")
        self.key = key


class InvalidTransition(LedgerError):
    """A compare-and-set found the row in another state than the transition needs.

    The row is left unchanged; ``actual`` is the state it was found in (None if it is gone).
    """

    def __init__(self, key: str, *, action: str, expected: str, actual: str | None) -> None:
        super().__init__(
            f"cannot {action} job {key!r}: it is {actual or 'missing'}, expected {expected}"
        )
        self.key = key
        self.action = action
        self.expected = expected
        self.actual = actual


class PipelineConflict(LedgerError, PipelineError):
    """Another pipeline definition (another ``module:attribute``) owns this pipeline name."""

    def __init__(self, name: str, *, owner: str, given: str) -> None:
        super().__init__(
            f"pipeline name {name!r} belongs to {owner} in this ledger, not to {given}:"
            f" give {given} its own name (Pipeline(name=...)), or run {owner}"
        )
        self.name = name
        self.owner = owner
        self.given = given
