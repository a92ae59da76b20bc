"""The shipped automation: it is a valid Prefect automation for the summary's event, and
installed on a real Prefect server it notifies when the summary raises the event."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.ops.summary import EVENT_NAME, RESOURCE_ID, summary
from ledger import Failure, NewJob, Verdict
from tests.ledgers import run_ledger

ROOT = Path(__file__).resolve().parents[2]
AUTOMATION = ROOT / "automations" / "parked-jobs-rising.yaml"


def _create_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "gl_automations_create", ROOT / "automations" / "create.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_automation_file_reacts_to_the_summary_event():
    """The YAML is a valid AutomationCore whose trigger is the event the summary emits."""
    from prefect.events.schemas.automations import AutomationCore, EventTrigger

    automation = AutomationCore.model_validate(yaml.safe_load(AUTOMATION.read_text()))
    assert isinstance(automation.trigger, EventTrigger)
    assert automation.trigger.expect == {EVENT_NAME}
    assert automation.trigger.match.root == {"prefect.resource.id": RESOURCE_ID}
    assert [a.type for a in automation.actions] == ["send-notification"]


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


def test_installed_automation_notifies_when_parked_jobs_rise(direct_env, webhook_sink):
    """create.py installs the automation on the server; a summary past its threshold notifies."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    url, received = webhook_sink
    CustomWebhookNotificationBlock(
        name="gl-test", url=url, json_data={"subject": "{{subject}}", "body": "{{body}}"}
    ).save("gl-test-ops", overwrite=True)
    create = _create_module()
    first = create.install(AUTOMATION, "custom-webhook/gl-test-ops")
    assert create.install(AUTOMATION, "custom-webhook/gl-test-ops") == first  # idempotent
    try:
        _rise_and_expect_notification(received)
    finally:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            client.delete_automation(first)  # the Prefect server is shared by the session


def _rise_and_expect_notification(received: list[dict[str, Any]]) -> None:

    ledger = run_ledger()
    d1, d2 = date(2026, 11, 10), date(2026, 11, 11)
    summary(day=d1, threshold=2)
    keys = [f"rise:{i}" for i in range(3)]
    ledger.enroll([NewJob(k, {"text": k}) for k in keys], pipeline="p", channel="batch", model="m")
    for k in keys:
        ledger.park(k, Failure(Verdict.PERMANENT, "400", "bad"), from_status=["pending"])

    # The automation may be loaded by the server's trigger service a moment after it is
    # created: re-run the day's summary (it re-emits, same baseline) until one notification
    # arrives, within a deadline.
    deadline = time.monotonic() + 60
    ours: list[dict[str, Any]] = []
    while not ours and time.monotonic() < deadline:
        assert summary(day=d2, threshold=2)["event_emitted"] is True
        wait_until = min(deadline, time.monotonic() + 8)
        while not ours and time.monotonic() < wait_until:
            time.sleep(0.2)
            ours = [r for r in received if d2.isoformat() in r.get("body", "")]
    assert ours, "no notification within 60 s"
    assert "3 more parked jobs since 2026-11-10" in ours[0]["subject"]
    assert (d2 - timedelta(days=1)).isoformat() in ours[0]["body"]
