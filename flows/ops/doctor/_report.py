"""One check's outcome and how a list of them is printed: a line each, or JSON."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Check", "Outcome", "exit_code", "render_line", "to_json"]


class Outcome(enum.StrEnum):
    OK = "ok"
    WARN = "warn"  # works here, but may not where the worker runs: does not fail the doctor
    SKIP = "skip"  # could not be checked because an earlier check failed or it does not apply
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    """What was checked, what was found and, when it is wrong, the command that fixes it."""

    name: str
    outcome: Outcome
    detail: str = ""
    fix: str = ""

    @classmethod
    def ok(cls, name: str, detail: str = "") -> Check:
        return cls(name, Outcome.OK, detail)

    @classmethod
    def fail(cls, name: str, detail: str, fix: str) -> Check:
        return cls(name, Outcome.FAIL, detail, fix)

    @classmethod
    def warn(cls, name: str, detail: str, fix: str = "") -> Check:
        return cls(name, Outcome.WARN, detail, fix)

    @classmethod
    def skip(cls, name: str, detail: str) -> Check:
        return cls(name, Outcome.SKIP, detail)


def render_line(check: Check) -> str:
    """``ok   name: detail`` or ``FAIL name: detail -> fix: command``."""
    label = check.outcome.value if check.outcome is Outcome.OK else check.outcome.value.upper()
    line = f"{label:<4} {check.name}"
    if check.detail:
        line += f": {check.detail}"
    if check.fix:
        line += f"  -> fix: {check.fix}"
    return line


def exit_code(checks: Iterable[Check]) -> int:
    """0 when nothing failed, 1 otherwise (warnings and skips do not fail)."""
    return 1 if any(c.outcome is Outcome.FAIL for c in checks) else 0


def to_json(checks: Iterable[Check], **extra: Any) -> dict[str, Any]:
    """``{"ok": bool, "checks": [{name, outcome, detail, fix}], ...extra}``."""
    listed = list(checks)
    return {
        "ok": exit_code(listed) == 0,
        "checks": [asdict(c) | {"outcome": c.outcome.value} for c in listed],
        **extra,
    }
