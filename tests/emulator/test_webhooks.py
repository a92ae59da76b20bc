"""Completion webhooks: signed per Standard Webhooks, at least once, duplicates possible."""

from __future__ import annotations

import json
import time
from typing import Any

from google.genai import types
from standardwebhooks import Webhook

from emulator.testing import RunningEmulator

from .conftest import WEBHOOK_SECRET, Receiver
from .helpers import MODEL, upload_and_create


def wait_sent(emu: RunningEmulator, n: int, timeout: float = 10) -> None:
    """Poll the stats until the emulator has counted ``n`` delivered webhooks."""
    deadline = time.monotonic() + timeout
    while emu.stats()["webhooks_sent"] < n:
        assert time.monotonic() < deadline, "webhooks_sent did not reach the count"
        time.sleep(0.02)
    assert emu.stats()["webhooks_sent"] == n


def verified(events: list[tuple[dict[str, str], bytes]]) -> list[dict[str, Any]]:
    """Verify every delivery's signature and return the payloads."""
    hook = Webhook(WEBHOOK_SECRET)
    return [
        hook.verify(body, {k: v for k, v in headers.items() if not k.startswith(":")})
        for headers, body in events
    ]


def test_batch_webhook_is_signed(emu: RunningEmulator, client: Any, receiver: Receiver) -> None:
    """A finished batch job POSTs a batch.succeeded event that standardwebhooks verifies."""
    job = upload_and_create(client, {"a": "x"}, "hooked")
    job = client.batches.get(name=job.name)
    events = receiver.wait_for(lambda ev: len(ev) >= 1)
    headers = events[0][0]
    assert headers["webhook-id"] and headers["webhook-timestamp"]
    assert headers["webhook-signature"].startswith("v1,")
    (payload,) = verified(events)
    assert payload["type"] == "batch.succeeded"
    assert payload["data"]["name"] == job.name
    assert payload["data"]["display_name"] == "hooked"
    assert payload["data"]["state"] == "BATCH_STATE_SUCCEEDED"
    assert payload["data"]["responses_file"] == job.dest.file_name
    wait_sent(emu, 1)


def test_tampered_webhook_fails_verification(client: Any, receiver: Receiver) -> None:
    """Changing one byte of the body makes the signature check fail."""
    upload_and_create(client, {"a": "x"}, "hooked")
    job = client.batches.list().page[0]
    client.batches.get(name=job.name)
    headers, body = receiver.wait_for(lambda ev: len(ev) >= 1)[0]
    tampered = body.replace(b"hooked", b"hacked")
    try:
        Webhook(WEBHOOK_SECRET).verify(tampered, headers)
    except Exception:
        pass
    else:
        raise AssertionError("tampered payload verified")


def test_interaction_webhooks(emu: RunningEmulator, client: Any, receiver: Receiver) -> None:
    """Background interactions send interaction.completed / interaction.failed events."""
    emu.set_scenario({"scripts": [{"match": "bad", "steps": ["failed"]}]})
    ok = client.interactions.create(
        model=MODEL, input="x", background=True, labels={"gemini_ledger_key": "good"}
    )
    bad = client.interactions.create(
        model=MODEL, input="x", background=True, labels={"gemini_ledger_key": "bad"}
    )
    client.interactions.get(ok.id)
    client.interactions.get(bad.id)
    payloads = verified(receiver.wait_for(lambda ev: len(ev) >= 2))
    by_id = {p["data"]["id"]: p for p in payloads}
    assert by_id[ok.id]["type"] == "interaction.completed"
    assert by_id[ok.id]["data"]["status"] == "completed"
    assert by_id[ok.id]["data"]["labels"] == {"gemini_ledger_key": "good"}
    assert by_id[bad.id]["type"] == "interaction.failed"
    assert by_id[bad.id]["data"]["status"] == "failed"


def test_duplicate_and_late_webhooks(emu: RunningEmulator, client: Any, receiver: Receiver) -> None:
    """webhook_duplicate_rate=1 delivers each event twice with the same webhook-id."""
    emu.set_scenario({"webhook_duplicate_rate": 1.0, "webhook_delay_ms": 100})
    job = upload_and_create(client, {"a": "x"}, "dup")
    client.batches.get(name=job.name)
    events = receiver.wait_for(lambda ev: len(ev) >= 2)
    assert events[0][0]["webhook-id"] == events[1][0]["webhook-id"]
    assert [p["data"]["name"] for p in verified(events)] == [job.name, job.name]
    wait_sent(emu, 2)


def test_batch_completes_by_time_without_polling(
    emu: RunningEmulator, client: Any, receiver: Receiver
) -> None:
    """With batch_seconds_to_complete the job finishes on its own and the webhook says so."""
    emu.set_scenario({"batch_seconds_to_complete": 0.3})
    job = upload_and_create(client, {"a": "x"}, "timed")
    (payload,) = verified(receiver.wait_for(lambda ev: len(ev) >= 1))
    assert payload["data"]["name"] == job.name
    job = client.batches.get(name=job.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    assert json.loads(client.files.download(file=job.dest.file_name))["key"] == "a"


def test_interaction_webhook_config_uris(client: Any, receiver: Receiver) -> None:
    """An interaction's webhook_config.uris receive its event, with user_metadata."""
    target = receiver.url.replace("/hook", "/per-interaction")
    created = client.interactions.create(
        model=MODEL,
        input="x",
        background=True,
        webhook_config={"uris": [target], "user_metadata": {"job": "j1"}},
    )
    client.interactions.get(created.id)
    events = receiver.wait_for(lambda ev: len(ev) >= 1)
    assert events[0][0][":path"] == "/per-interaction"
    (payload,) = verified(events)
    assert payload["data"]["id"] == created.id
    assert payload["data"]["user_metadata"] == {"job": "j1"}
