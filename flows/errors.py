"""The errors a user can fix: the command line prints them as one line, without a traceback.

Anything else that escapes a command is a bug (ours, or in a pipeline's own code) and keeps
its traceback. ``UsageError`` is defined with the whole error tree in ``ledger._errors``.
"""

from __future__ import annotations

from ledger import UsageError

__all__ = ["UsageError"]
