"""The two test tiers of scripts/test.sh: the fast default run and the system tier."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import SYSTEM_TIER

ROOT = Path(__file__).resolve().parents[1]


def test_every_system_tier_file_exists() -> None:
    """A renamed system test file is not silently moved into the fast tier."""
    missing = sorted(path for path in SYSTEM_TIER if not (ROOT / path).is_file())
    assert missing == []


def test_the_scripts_run_the_tiers() -> None:
    """The default run deselects the system tier; --all (what CI runs) keeps both."""
    script = (ROOT / "scripts" / "test.sh").read_text()
    assert 'tier=(-m "not system")' in script
    assert "--all) tier=() ;;" in script
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith("bash scripts/test.sh --all")
