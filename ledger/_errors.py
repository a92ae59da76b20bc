"""The ledger's exceptions: one hierarchy callers can catch (``LedgerError``)."""

from __future__ import annotations

__all__ = [
    "InvalidTransition",
    "LedgerConfigError",
    "LedgerError",
    "PipelineConflict",
    "UnknownJob",
]


class LedgerError(Exception):
    """Base class of every error the ledger raises on purpose."""


class LedgerConfigError(LedgerError):
    """The ledger cannot be opened as configured (bad URL, unreachable database, bad migration)."""


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


class PipelineConflict(LedgerError):
    """Another pipeline definition (another ``module:attribute``) owns this pipeline name."""

    def __init__(self, name: str, *, owner: str, given: str) -> None:
        super().__init__(
            f"pipeline name {name!r} belongs to {owner} in this ledger, not to {given}:"
            f" give {given} its own name (Pipeline(name=...)), or run {owner}"
        )
        self.name = name
        self.owner = owner
        self.given = given
