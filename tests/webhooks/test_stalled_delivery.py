"""A delivery recorded by a receiver that died before handing it off is processed on retry."""

from __future__ import annotations

import json
import time

from standardwebhooks import Webhook
from starlette.testclient import TestClient

from flows.settings import Settings
from flows.webhooks.receiver import create_app
from ledger import Ledger

SECRET = "whsec_" + "c3RhbGxlZC1kZWxpdmVyeS10ZXN0LXNlY3JldC0wMDAw"


def _signed(body: bytes, webhook_id: str) -> dict[str, str]:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    signature = Webhook(SECRET).sign(webhook_id, now, body.decode())
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def test_a_stalled_delivery_is_processed_when_redelivered(sqlite_url):
    """Recorded but never processed over a minute ago: the retry starts reconcile."""
    body = json.dumps(
        {
            "type": "batch.succeeded",
            "data": {"name": "batches/abc", "state": "BATCH_STATE_SUCCEEDED"},
        }
    ).encode()
    ledger = Ledger(sqlite_url, clock=lambda: time.time() - 120)
    ledger.reserve(pipeline="hooks", limit=1, reservation="r-abc", batch_model="m")
    ledger.bind_batch("r-abc", name="batches/abc")
    ledger.record_delivery("msg_stalled", event_type="batch.succeeded", subject="batches/abc")
    ledger.dispose()
    started: list[str] = []
    app = create_app(
        Settings.given(database_url=sqlite_url), secret=SECRET, on_batch_complete=started.append
    )
    with TestClient(app) as client:
        first = client.post("/", content=body, headers=_signed(body, "msg_stalled"))
        again = client.post("/", content=body, headers=_signed(body, "msg_stalled"))
    assert first.status_code == 200 and first.json()["status"] == "accepted"
    assert again.json()["status"] == "duplicate"
    assert started == ["batches/abc"]
    assert Ledger(sqlite_url).delivery("msg_stalled")[1] is not None
