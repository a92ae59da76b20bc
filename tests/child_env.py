"""The environment of a child process a test starts (a tick, the CLI, a worker, a server).

Code in the test's own process is configured with ``Settings.given(...)``; a child process is
configured as a deployment configures a worker, through its environment: this process's,
less what ``drop`` refuses, plus ``values``. The one place a fast-tier test reads
``os.environ`` (pyproject's TID251 allowlist names it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

__all__ = ["child_env", "parent_value"]


def child_env(
    values: Mapping[str, str] | None = None, *, drop: Callable[[str], bool] | None = None
) -> dict[str, str]:
    """This process's environment without the variables ``drop`` refuses, ``values`` on top."""
    env = {k: v for k, v in os.environ.items() if drop is None or not drop(k)}
    env.update(values or {})
    return env


def parent_value(name: str, default: str = "") -> str:
    """A variable of this process's environment, to hand on to a child process."""
    return os.environ.get(name, default)
