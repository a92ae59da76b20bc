"""What `gemini-ledger tick` prints: a few lines a person reads, every counter under --json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from flows.settings import load_settings
from tests.child_env import child_env
from tests.direct import pipelines
from tests.direct.conftest import DAY, SPEC, key_of, scripted

ROOT = Path(__file__).resolve().parents[2]


def _tick(prefect_api: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = child_env({"PREFECT_API_URL": prefect_api, "PYTHONPATH": str(ROOT)})
    cmd = [sys.executable, "-m", "flows.cli", "tick", SPEC, "--day", DAY.isoformat(), *extra]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)


def test_tick_prints_delivered_parked_by_class_in_flight_and_cost(
    direct_env, monkeypatch, prefect_api
):
    """The human report says what was delivered and parked (by class) this tick, then where
    the pipeline stands: delivered, parked, retrying, in flight and cost."""
    scripted(direct_env, {"good": ["ok"], "bad": ["400"], "unsafe": ["safety"]})
    monkeypatch.setenv(pipelines.ITEMS_ENV, "good,bad,unsafe")

    result = _tick(prefect_api)

    assert result.returncode == 0, result.stderr[-3000:]
    out = " ".join(result.stdout.split())  # rich may wrap a long line
    assert f"direct-test (direct) tick for {DAY.isoformat()}" in out
    assert "answers done 1, delivered 1, enrolled 3, submitted 3" in out
    assert "parked this tick: permanent:400 1, safety 1" in out
    assert "ledger now: delivered 1, parked 2, retrying 0, in flight 0" in out
    assert "cost $" in out
    assert len(result.stdout.splitlines()) <= 8


def test_tick_json_has_every_step_of_the_one_report(direct_env, monkeypatch, prefect_api):
    """`tick --json` is the same TickReport: totals, then each step's own counters."""
    scripted(direct_env, {"good": ["ok"]})
    monkeypatch.setenv(pipelines.ITEMS_ENV, "good")

    result = _tick(prefect_api, "--json")

    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert (report["channel"], report["delivered"], report["submitted"]) == ("direct", 1, 1)
    assert set(report["steps"]) == {"recover", "collect", "deliver", "enroll", "submit"}
    assert report["steps"]["submit"]["outcomes"] == {"done": 1}
    assert report["steps"]["enroll"]["enrolled"] == 1


def test_tick_says_how_many_rows_a_dead_tick_held_and_when_it_last_held_them(
    direct_env, monkeypatch, prefect_api, tmp_path
):
    """Done rows whose delivery claims a dead tick left behind are taken over, delivered once,
    and the tick says how many and when the dead tick last held them, in its lines and --json."""
    from datetime import UTC, datetime

    from ledger import Ledger, NewJob, ResultRow

    keys = [key_of(item) for item in ("a", "b", "c")]
    monkeypatch.setenv(pipelines.ITEMS_ENV, "a,b,c")
    delivered = tmp_path / "delivered.txt"
    monkeypatch.setenv("DIRECT_TEST_DELIVERED", str(delivered))
    held_at = datetime(2026, 11, 21, 2, 14, 5, tzinfo=UTC).timestamp()
    # What a tick killed in its delivery pass leaves: done rows claimed under its token, the
    # claims last renewed at 02:14:05 (its clock then).
    dead = Ledger(load_settings().database_url, clock=lambda: held_at)
    dead.enroll(
        [NewJob(k, {"text": k}) for k in keys], pipeline="direct-test", channel="direct", model="m"
    )
    dead.reserve(pipeline="direct-test", limit=3, reservation="r", batch_model="m")
    dead.bind_batch("r", name="batches/r")
    answer = '{"label": "ok", "confidence": 0.9}'
    dead.apply_results([ResultRow(k, answer) for k in keys], handle="batches/r")
    assert len(dead.claim_done(pipeline="direct-test", token="dead-pass")) == 3
    dead.dispose()

    result = _tick(prefect_api, "--json")

    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["delivered"] == 3
    assert report["taken_over"] == {
        "delivery_claims": {"rows": 3, "last_held": "2026-11-21T02:14:05+00:00"}
    }
    assert sorted(delivered.read_text().split()) == sorted(keys)  # each once
    line = (
        "3 delivery claims held by a dead tick (last held at 2026-11-21 02:14:05 UTC), taken over"
    )
    assert line in " ".join(result.stderr.split())  # the run's log says it as it happens

    again = _tick(prefect_api)  # nothing is left to take over
    assert again.returncode == 0, again.stderr[-3000:]
    assert "held by a dead tick" not in again.stdout + again.stderr


def test_tick_says_how_many_calls_a_dead_tick_left_and_when(direct_env, monkeypatch, prefect_api):
    """A reservation a dead tick never sent and a call it was making when it died are taken
    back by the next tick, which says how many and when the dead tick last held them."""
    from datetime import UTC, datetime

    from ledger import Ledger, NewJob

    scripted(direct_env, {"a": ["ok"], "b": ["ok"]})
    monkeypatch.setenv(pipelines.ITEMS_ENV, "a,b")
    held_at = datetime(2026, 11, 21, 3, 0, 1, tzinfo=UTC).timestamp()
    # What a tick killed while calling leaves: one row reserved and not sent, one being called.
    dead = Ledger(load_settings().database_url, clock=lambda: held_at)
    items = [NewJob(key_of(i), {"text": i}) for i in ("a", "b")]
    dead.enroll(items, pipeline="direct-test", channel="direct", model="gemini-2.5-flash")
    dead.reserve(pipeline="direct-test", limit=1, reservation="direct-dead1", keys=[key_of("a")])
    dead.reserve(pipeline="direct-test", limit=1, reservation="direct-dead2", keys=[key_of("b")])
    dead.bind_handle(key_of("b"), reservation="direct-dead2", handle="direct:dead2")
    dead.dispose()

    result = _tick(prefect_api, "--json")

    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["steps"]["recover"]["took_over"] == {
        "rows": 2,
        "last_held": "2026-11-21T03:00:01+00:00",
    }
    assert report["taken_over"]["reservations"]["rows"] == 2
