"""The errors a user can fix: the command line prints them as one line, without a traceback.

Anything else that escapes a command is a bug (ours, or in a pipeline's own code) and keeps
its traceback.
"""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(ValueError):
    """A mistake the user can fix: a parameter, a setting, a pipeline definition or module.

    A ``ValueError`` so that callers which caught ``ValueError`` before keep working.
    """
