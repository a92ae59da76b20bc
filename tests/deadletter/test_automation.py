"""The automations beside the deployments (automations/*.yaml, `gemini-ledger automations
apply`): each file is a valid Prefect automation; applying them twice gives the same
automations; and on a real Prefect server each one's event fires and its action runs: a
Failed (or Crashed) run, a halted channel, a run Running past its bound and parked jobs
rising, and a night that met its budget each send a notification (a custom webhook block
pointed at a local endpoint)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import yaml

from flows.errors import UsageError
from flows.ops.automations import AUTOMATIONS_DIR, apply_automations, declared
from flows.ops.summary import EVENT_NAME, RESOURCE_ID, summary
from ledger import Channel, Failure, NewJob, SetupFault, SetupKind, Verdict
from tests.ledgers import run_ledger

ROOT = Path(__file__).resolve().parents[2]
BLOCK = "custom-webhook/gl-test-ops"
ZOMBIE = "gemini-ledger crash runs whose heartbeats stopped"
NOTIFYING = {
    "gemini-ledger run failed or crashed",
    "gemini-ledger channel halted",
    "gemini-ledger run over its bound",
    "gemini-ledger parked jobs rising",
    "gemini-ledger budget reached",
}


def test_every_automation_file_is_a_prefect_automation_with_its_trigger() -> None:
    """Each file validates as an AutomationCore; the alerts notify, the zombie one crashes
    the run, and its window is at least three of the heartbeats prefect.yaml asks for."""
    from prefect.events.schemas.automations import EventTrigger, Posture

    found = {d.name: d.automation for d in declared(block_id=uuid4())}
    assert set(found) == NOTIFYING | {ZOMBIE}
    for name in NOTIFYING:
        assert [a.type for a in found[name].actions] == ["send-notification"], name
    zombie = found[ZOMBIE]
    assert isinstance(zombie.trigger, EventTrigger)
    assert zombie.trigger.posture == Posture.Proactive
    assert zombie.trigger.after == {"prefect.flow-run.heartbeat"}
    assert zombie.trigger.for_each == {"prefect.resource.id"}
    (action,) = zombie.actions
    assert (action.type, action.state.value) == ("change-flow-run-state", "CRASHED")
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    env = config["definitions"]["work_pool"]["job_variables"]["env"]
    heartbeat = int(env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"])
    assert zombie.trigger.within.total_seconds() >= 3 * heartbeat
    summary_trigger = found["gemini-ledger parked jobs rising"].trigger
    assert isinstance(summary_trigger, EventTrigger)
    assert summary_trigger.expect == {EVENT_NAME}
    assert summary_trigger.match.root == {"prefect.resource.id": RESOURCE_ID}


def test_without_a_block_only_the_automations_that_notify_no_one_are_loaded() -> None:
    """No --block: the alerts are left out (said so by apply), the zombie one is loaded."""
    found = {d.name: d for d in declared()}
    assert {n for n, d in found.items() if d.needs_block} == NOTIFYING
    assert found[ZOMBIE].automation is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\ntrigger: {type: event, posture: Sideways}\nactions: []\n", "not a Prefect"),
        ("- just a list\n", "not an automation"),
        ("name: [unclosed\n", "cannot read it"),
    ],
    ids=["bad-trigger", "not-a-mapping", "bad-yaml"],
)
def test_a_bad_automation_file_is_one_line_naming_it(
    tmp_path: Path, text: str, message: str
) -> None:
    """A file that is not an automation is refused with its name, before the server is asked."""
    (tmp_path / "broken.yaml").write_text(text)
    with pytest.raises(UsageError, match=f"broken.yaml: {message}"):
        declared(tmp_path, uuid4())


@pytest.fixture
def webhook_sink() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local HTTP endpoint that records the JSON bodies POSTed to it."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            received.append(json.loads(body or b"{}"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/notify", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def notify_block(prefect_api: str, webhook_sink: tuple[str, list[dict[str, Any]]]) -> str:
    """A custom webhook notification block, saved on the session's server, posting to the sink."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    url, _ = webhook_sink
    CustomWebhookNotificationBlock(
        name="gl-test", url=url, json_data={"subject": "{{subject}}", "body": "{{body}}"}
    ).save(BLOCK.split("/")[1], overwrite=True)
    return BLOCK


@pytest.fixture
def applied(notify_block: str, tmp_path: Path) -> Iterator[Path]:
    """The shipped automations applied (the run bound shortened to 10 s); removed afterwards,
    since the session's Prefect server is shared."""
    folder = tmp_path / "automations"
    folder.mkdir()
    for path in AUTOMATIONS_DIR.glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        if data["name"] == "gemini-ledger run over its bound":
            data["trigger"]["within"] = 10  # Prefect's least for a proactive trigger
        (folder / path.name).write_text(yaml.safe_dump(data))
    try:
        yield folder
    finally:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            for name in NOTIFYING | {ZOMBIE}:
                for automation in client.read_automations_by_name(name):
                    client.delete_automation(automation.id)


def _arrives(
    received: list[dict[str, Any]], match: Callable[[dict[str, Any]], bool], *, timeout: float = 60
) -> dict[str, Any]:
    """The first notification ``match`` accepts, waited for with a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for body in list(received):
            if match(body):
                return body
        time.sleep(0.2)
    raise AssertionError(f"no such notification within {timeout:.0f} s: got {received}")


def test_apply_twice_gives_the_same_automations(applied: Path, prefect_api: str) -> None:
    """The first apply creates each automation, the second changes nothing, a changed file
    updates its automation in place, and without --block the alerts are skipped, not removed."""
    from prefect.client.orchestration import get_client

    first = {a.name: a for a in apply_automations(applied, block=BLOCK)}
    assert {a.action for a in first.values()} == {"created"}
    again = {a.name: a for a in apply_automations(applied, block=BLOCK)}
    assert {a.action for a in again.values()} == {"unchanged"}
    assert {n: a.id for n, a in again.items()} == {n: a.id for n, a in first.items()}

    path = applied / "channel-halted.yaml"
    data = yaml.safe_load(path.read_text())
    data["description"] = "changed"
    path.write_text(yaml.safe_dump(data))
    changed = {a.name: a.action for a in apply_automations(applied, block=BLOCK)}
    assert changed["gemini-ledger channel halted"] == "updated"
    assert {a for n, a in changed.items() if n != "gemini-ledger channel halted"} == {"unchanged"}

    unblocked = {a.name: a.action for a in apply_automations(applied)}
    assert unblocked == {**dict.fromkeys(NOTIFYING, "skipped"), ZOMBIE: "unchanged"}
    with get_client(sync_client=True) as client:
        for name in NOTIFYING | {ZOMBIE}:
            assert [a.id for a in client.read_automations_by_name(name)] == [first[name].id]
        halted = client.read_automations_by_name("gemini-ledger channel halted")[0]
    assert halted.description == "changed"


def test_apply_deletes_ours_no_file_declares_and_never_a_hand_made_one(
    prefect_api: str, tmp_path: Path
) -> None:
    """An automation apply created whose file is gone, and an untagged one named as an earlier
    version shipped it, are deleted (said so); ones made by hand, even named gemini-ledger
    something, and ones another folder declares are left alone, both ways."""
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore

    base = yaml.safe_load((AUTOMATIONS_DIR / "zombie-runs.yaml").read_text())
    base["enabled"] = False  # the session's server is shared: nothing here may fire

    def automation(name: str) -> dict[str, Any]:
        return {**base, "name": name}

    folder = tmp_path / "automations"
    folder.mkdir()
    (folder / "zombie-runs.yaml").write_text(yaml.safe_dump(automation(ZOMBIE)))
    (folder / "stale.yaml").write_text(yaml.safe_dump(automation("gl-test stale")))
    alerts = tmp_path / "ops" / "alerts"  # a user's own folder, applied with --dir
    alerts.mkdir(parents=True)
    (alerts / "mine.yaml").write_text(yaml.safe_dump(automation("gl-test alert")))
    legacy = "gemini-ledger run over its bound"  # as an earlier version created it: untagged
    by_hand = ["gl-test made by hand", "gemini-ledger my own alert"]
    everything = [ZOMBIE, "gl-test stale", "gl-test alert", legacy, *by_hand]
    try:
        assert [a.action for a in apply_automations(alerts)] == ["created"]
        first = {a.name: a for a in apply_automations(folder)}
        assert {n: a.action for n, a in first.items()} == {
            ZOMBIE: "created",
            "gl-test stale": "created",
        }
        with get_client(sync_client=True) as client:
            kept = {
                name: client.create_automation(AutomationCore.model_validate(automation(name)))
                for name in by_hand
            }
            client.create_automation(AutomationCore.model_validate(automation(legacy)))
        (folder / "stale.yaml").unlink()

        again = apply_automations(folder)
        assert sorted((a.action, a.name) for a in again if a.action != "unchanged") == [
            ("deleted", "gemini-ledger run over its bound"),
            ("deleted", "gl-test stale"),
        ]
        assert "deleted: gl-test stale" in [a.describe().split(" (")[0] for a in again]
        # The other folder's apply leaves this one's alone, and this one's left it alone.
        assert [a.action for a in apply_automations(alerts)] == ["unchanged"]
        with get_client(sync_client=True) as client:
            left = {
                name: [a.id for a in client.read_automations_by_name(name)] for name in everything
            }
            mine = client.read_automations_by_name("gl-test alert")
        assert [a.tags for a in mine] == [["managed-by:gemini-ledger/alerts"]]
        assert left == {
            ZOMBIE: [first[ZOMBIE].id],
            "gl-test stale": [],
            "gl-test alert": [mine[0].id],
            legacy: [],
            **{name: [kept[name]] for name in by_hand},
        }
    finally:
        with get_client(sync_client=True) as client:
            for name in everything:
                for found in client.read_automations_by_name(name):
                    client.delete_automation(found.id)


def test_a_block_that_does_not_exist_is_one_line(prefect_api: str) -> None:
    """--block naming no block on the server, or not TYPE/NAME, is refused in one line."""
    with pytest.raises(UsageError, match="no custom-webhook block named 'nowhere'"):
        apply_automations(block="custom-webhook/nowhere")
    with pytest.raises(UsageError, match="--block must be TYPE/NAME"):
        apply_automations(block="nowhere")


def test_a_halted_tick_notifies_that_it_halted_and_that_its_run_failed(
    applied: Path, webhook_sink: tuple[str, list[dict[str, Any]]]
) -> None:
    """A run tagged gemini-ledger that halts on a fault of the setup raises the halted event
    and ends Failed: both automations send their notification, naming the pipeline and run."""
    from prefect import flow, tags

    from flows.testing import halts

    _, received = webhook_sink
    apply_automations(applied, block=BLOCK)

    @flow(name="gl-halting-tick")
    @halts(flow=True)
    def halting(pipeline: str) -> None:
        raise SetupFault(SetupKind.KEY_REFUSED, "API key not valid")

    with tags("gemini-ledger"):
        state = halting(pipeline="tests.direct.pipelines:pipeline", return_state=True)
    assert state.is_failed()
    run_name = state.state_details.flow_run_id and _run_name(state.state_details.flow_run_id)

    halted = _arrives(received, lambda b: "halted" in b.get("subject", ""))
    assert halted["subject"] == "gemini-ledger: direct-test (direct) halted (key_refused)"
    assert "API key not valid" in halted["body"] and "Fix:" in halted["body"]
    failed = _arrives(received, lambda b: f"run {run_name} Failed" in b.get("subject", ""))
    assert "API key not valid" in failed["body"]


def test_a_run_running_past_its_bound_notifies(
    applied: Path, webhook_sink: tuple[str, list[dict[str, Any]]]
) -> None:
    """A gemini-ledger run still Running after the automation's bound (10 s here) sends a
    notification naming the run, while it runs."""
    from prefect import flow, tags
    from prefect.context import FlowRunContext

    _, received = webhook_sink
    apply_automations(applied, block=BLOCK)

    @flow(name="gl-long-run")
    def long_run() -> dict[str, Any]:
        ctx = FlowRunContext.get()
        assert ctx is not None and ctx.flow_run is not None
        run_id = str(ctx.flow_run.id)
        return _arrives(received, lambda b: run_id in b.get("body", ""), timeout=90)

    with tags("gemini-ledger"):
        notice = long_run()
    assert notice["subject"] == "gemini-ledger: a run is still Running after 0:00:10"


def test_parked_jobs_rising_notifies(
    direct_env: Any, applied: Path, webhook_sink: tuple[str, list[dict[str, Any]]]
) -> None:
    """A summary whose parked jobs rose past its threshold raises its event; the automation
    sends the change in a notification."""

    _, received = webhook_sink
    apply_automations(applied, block=BLOCK)
    ledger = run_ledger()
    d1, d2 = date(2026, 11, 10), date(2026, 11, 11)
    summary(day=d1, threshold=2)
    keys = [f"rise:{i}" for i in range(3)]
    ledger.enroll([NewJob(k, {"text": k}) for k in keys], pipeline="p", channel="batch", model="m")
    for k in keys:
        ledger.park(k, Failure(Verdict.PERMANENT, "400", "bad"), from_status=["pending"])

    # The server's trigger service may load a new automation a moment after it is created:
    # the day's summary is run again (it raises the event again, same baseline) until the
    # notification comes, within a deadline.
    deadline = time.monotonic() + 60
    ours: list[dict[str, Any]] = []
    while not ours and time.monotonic() < deadline:
        assert summary(day=d2, threshold=2)["event_emitted"] is True
        try:
            ours = [_arrives(received, lambda b: d2.isoformat() in b.get("body", ""), timeout=8)]
        except AssertionError:
            continue
    assert ours, "no notification within 60 s"
    assert "3 more parked jobs since 2026-11-10" in ours[0]["subject"]
    assert (d2 - timedelta(days=1)).isoformat() in ours[0]["body"]


def test_a_night_that_meets_its_budget_notifies(
    direct_env: Any, applied: Path, webhook_sink: tuple[str, list[dict[str, Any]]]
) -> None:
    """A real direct tick whose night has no room in its budget holds its rows and emits
    gemini-ledger.budget.reached; the automation sends the held rows in a notification."""
    from flows.tick import tick
    from tests.budget.pipelines import ITEMS, names, spec

    _, received = webhook_sink
    apply_automations(applied, block=BLOCK)
    # The trigger service may load a new automation a moment after it is created: a new
    # night (each emits once) is ticked until the notification comes, within a deadline.
    deadline = time.monotonic() + 60
    ours: list[dict[str, Any]] = []
    night = date(2026, 12, 1)
    while not ours and time.monotonic() < deadline:
        night += timedelta(days=1)
        ITEMS[night.isoformat()] = names(f"n{night.day:02d}", 2)
        report = tick(pipeline=spec(Channel.DIRECT), day=night, budget_usd=0.0)
        assert report.submit.held_by_budget >= 2 and report.submitted == 0
        try:
            day = night.isoformat()
            ours = [_arrives(received, lambda b, day=day: day in b.get("subject", ""), timeout=8)]
        except AssertionError:
            continue
    assert ours, "no notification within 60 s"
    assert ours[0]["subject"] == (
        f"gemini-ledger: budget-direct (direct) reached its budget for {night.isoformat()}"
    )
    assert "Held by the budget:" in ours[0]["body"] and "pending (not parked)" in ours[0]["body"]


def _run_name(run_id: Any) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.read_flow_run(run_id).name)
