"""The ledger a test's flow runs were pointed at, for reading back what they did.

A test that runs a flow (a tick, replay, reconcile) configures it as a worker would, through
the environment its fixtures set (``LEDGER_DATABASE_URL``): the flow loads its settings once
when it starts. Reading the outcome back goes through the same settings.
"""

from __future__ import annotations

from flows.settings import load_settings
from flows.testing import open_ledger
from ledger import Ledger

__all__ = ["run_ledger"]


def run_ledger() -> Ledger:
    """The ledger a flow run started now in this process would open."""
    return open_ledger(load_settings().database_url)
