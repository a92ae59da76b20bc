"""The transition table is the one place job states are written: checked against the source."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import ledger
from ledger import BatchState, Status
from ledger.testing import TRANSITIONS, transition

LEDGER_DIR = Path(ledger.__file__).parent
# Files under the ledger package whose SQL may not spell a state (migrations are frozen
# history: they describe the schema as it was, so they keep their own literals).
SOURCES = sorted(p for p in LEDGER_DIR.glob("*.py") if p.name != "_transitions.py")
STATES = {s.value for s in Status} | {b.value for b in BatchState}
QUOTED = re.compile("'(" + "|".join(sorted(STATES)) + ")'")
# A verb that writes jobs.status: ``SET status =``, ``status = CASE`` or the shared failure SET.
SETS_STATUS = re.compile(r"(SET status = |status = CASE|FAILURE_SET)")


def test_no_status_literal_outside_the_table() -> None:
    """No ledger module quotes a job or batch state in its source; they come from the table."""
    found = [
        f"{path.name}:{n}: {line.strip()}"
        for path in SOURCES
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if QUOTED.search(line)
    ]
    assert found == []


def _verbs_writing_status() -> set[str]:
    """Public methods of the ledger's classes whose source writes jobs.status."""
    verbs: set[str] = set()
    for path in SOURCES:
        text = path.read_text()
        for cls in ast.walk(ast.parse(text)):
            if not isinstance(cls, ast.ClassDef):
                continue
            for fn in cls.body:
                if (
                    isinstance(fn, ast.FunctionDef)
                    and not fn.name.startswith("_")
                    and SETS_STATUS.search(ast.get_source_segment(text, fn) or "")
                ):
                    verbs.add(fn.name)
    return verbs


def test_every_verb_that_moves_a_job_is_declared() -> None:
    """Each public Ledger method whose SQL sets jobs.status has a row in TRANSITIONS."""
    writing = _verbs_writing_status()
    # The scan itself must see the verbs it is meant to check.
    assert {"reserve", "bind_handle", "consume", "replay", "park"} <= writing
    assert writing - set(TRANSITIONS) == set()
    assert set(TRANSITIONS) <= set(dir(ledger.Ledger))


def test_table_states_are_statuses() -> None:
    """Every source and target in the table is a Status, and no verb is a no-op."""
    for t in TRANSITIONS.values():
        assert all(isinstance(s, Status) for s in (*t.source, *t.target))
        assert t.target, t.verb


def test_refuses_an_undeclared_move() -> None:
    """Rendering a target the table does not declare for a verb is refused."""
    with pytest.raises(ValueError, match="consume never moves a job to parked"):
        transition("consume").to(Status.PARKED)
    assert transition("consume").to(Status.CONSUMED) == "'consumed'"
    assert transition("reserve").sql_source == "'pending', 'retryable'"


def test_architecture_doc_lists_every_verb() -> None:
    """docs/architecture.md's verb table has a row naming each verb of the transition table."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    named = {
        word
        for line in doc.splitlines()
        if line.startswith("| `")
        for word in re.findall(r"`(\w+)`", line.split("|")[1])
    }
    assert set(TRANSITIONS) - named == set()


def test_no_flow_calls_the_verbs_the_doc_says_only_tests_use() -> None:
    """docs/architecture.md says no flow calls ``park`` or ``purge``: no module of flows/ does
    (a flow parks through the verb of its move, e.g. ``park_keys`` before a batch is sent)."""
    flows_dir = LEDGER_DIR.parent / "flows"
    calls = [
        f"{path.relative_to(flows_dir.parent)}:{node.lineno}: .{node.func.attr}("
        for path in sorted(flows_dir.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("park", "purge")
    ]
    assert calls == []
