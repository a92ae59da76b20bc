"""Dead-letter tests reuse the direct channel's fixtures (fresh ledger, emulator, Prefect)."""

from __future__ import annotations

from tests.direct.conftest import direct_env

__all__ = ["direct_env"]
