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


class _Item:
    """As much of a pytest item as the ordering reads: its markers."""

    def __init__(self, *markers: str) -> None:
        self.markers = set(markers)

    def get_closest_marker(self, name: str) -> object | None:
        return name if name in self.markers else None


def test_workers_take_the_night_first_then_the_fast_tier_beside_it() -> None:
    """Under xdist the alone test starts first, the fast tier next (it may run beside the
    night), then the other slow tests, then the rest of the system tier."""
    from tests.conftest import _start_order

    night = _Item("system", "slow", "alone")
    fast = _Item()
    demo = _Item("system", "slow")
    crash = _Item("system")
    ordered = sorted([crash, demo, fast, night], key=_start_order)  # type: ignore[arg-type]
    assert ordered == [night, fast, demo, crash]
