"""The receiver under hostile or unlucky traffic: huge bodies, slow checks, odd ids, a lost
ledger, and batches some other system made."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from flows.settings import Settings, SettingsError, load_settings
from flows.testing import webhook_verify_wrapped
from flows.webhooks.receiver import create_app

from .conftest import SECRET, Receiver, signed, wait_until
from .test_receiver import batch_event

LIMIT = 4096


def padded(name: str, size: int) -> str:
    """A batch event for ``name`` padded with spaces to exactly ``size`` bytes."""
    body = batch_event(name)
    return body[:-1] + " " * (size - len(body)) + "}"


def test_declared_body_over_the_limit_is_refused(
    serve_receiver: Callable[..., Receiver],
) -> None:
    """A correctly signed body one byte over the limit gets 413 and nothing is recorded."""
    receiver = serve_receiver(max_body=LIMIT)
    receiver.know("batches/big")
    body = padded("batches/big", LIMIT + 1)
    resp = receiver.post(body, signed(body))
    assert resp.status_code == 413
    assert receiver.deliveries() == []
    assert receiver.calls == []
    at_limit = padded("batches/big", LIMIT)
    assert receiver.post(at_limit, signed(at_limit)).status_code == 200


def test_chunked_body_over_the_limit_is_refused(
    serve_receiver: Callable[..., Receiver],
) -> None:
    """A chunked body (no Content-Length) is counted as it streams: over the limit is 413."""
    receiver = serve_receiver(max_body=LIMIT)
    receiver.know("batches/chunked")
    body = padded("batches/chunked", 3 * LIMIT).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1024):
            yield body[start : start + 1024]

    headers = signed(body)
    resp = receiver.http.post(receiver.url, content=chunks(), headers=headers)
    assert "content-length" not in {k.lower() for k in resp.request.headers}
    assert resp.status_code == 413
    assert receiver.deliveries() == []


def test_streamed_body_stops_being_read_at_the_limit(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading stops at the first chunk past the 1 MiB default, however much the sender has."""
    monkeypatch.delenv("LEDGER_WEBHOOK_MAX_BODY_BYTES", raising=False)
    chunk = b"x" * 16_384
    total = 1000  # 16 MB on offer
    served: list[int] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        served.append(1)
        return {"type": "http.request", "body": chunk, "more_body": len(served) < total}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhook",
        "raw_path": b"/webhook",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    app = create_app(
        Settings.given(database_url=sqlite_url), secret=SECRET, on_batch_complete=print
    )
    anyio.run(app, scope, receive, send)
    assert sent[0]["status"] == 413
    assert len(served) == 1024 * 1024 // len(chunk) + 1


def test_body_limit_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """LEDGER_WEBHOOK_MAX_BODY_BYTES defaults to 1 MiB; a value that is not a size is refused
    when the receiver's settings load."""
    assert Settings.given().webhook_max_body_bytes == 1024 * 1024
    assert Settings.given(LEDGER_WEBHOOK_MAX_BODY_BYTES="2048").webhook_max_body_bytes == 2048
    for bad in ("lots", "0", "-5", "1.5"):
        monkeypatch.setenv("LEDGER_WEBHOOK_MAX_BODY_BYTES", bad)  # as `webhook serve` reads it
        with pytest.raises(SettingsError, match="LEDGER_WEBHOOK_MAX_BODY_BYTES"):
            load_settings()


def test_slow_signature_check_does_not_stall_healthz(
    serve_receiver: Callable[..., Receiver],
) -> None:
    """While one delivery's verification is stuck, /healthz still answers."""
    entered, release = threading.Event(), threading.Event()

    def stuck(real_verify: Callable[..., Any]) -> Callable[..., Any]:
        def stuck_verify(*args: Any, **kwargs: Any) -> tuple[str, str]:
            entered.set()
            release.wait(60)
            return real_verify(*args, **kwargs)

        return stuck_verify

    with webhook_verify_wrapped(stuck):
        receiver = serve_receiver()
        receiver.know("batches/slow")
        body = batch_event("batches/slow")
        answers: list[int] = []
        poster = threading.Thread(
            target=lambda: answers.append(receiver.post(body, signed(body)).status_code)
        )
        poster.start()
        try:
            wait_until(entered.is_set, what="verification to start")
            health = httpx.get(receiver.url.replace("/webhook", "/healthz"), timeout=5.0)
            assert health.status_code == 200
        finally:
            release.set()
            poster.join(timeout=30)
    assert answers == [200]


@pytest.mark.parametrize(
    "webhook_id",
    ["msg_tab\there", "msg_nel\x85x", "msg_" + "a" * 300],
    ids=["tab", "c1-control", "too-long"],
)
def test_webhook_id_with_control_characters_is_refused(receiver: Receiver, webhook_id: str) -> None:
    """A signed delivery whose webhook-id holds control characters or is too long gets 400."""
    receiver.know("batches/odd-id")
    body = batch_event("batches/odd-id")
    headers: dict[str, Any] = signed(body, msg_id=webhook_id)
    headers["webhook-id"] = webhook_id.encode("latin-1")  # as it travels on the wire
    resp = receiver.http.post(receiver.url, content=body.encode(), headers=headers)
    assert resp.status_code == 400
    assert receiver.deliveries() == []
    assert receiver.calls == []


def test_healthz_reports_an_unreachable_ledger(
    serve_receiver: Callable[..., Receiver], postgres_url: str
) -> None:
    """With its ledger gone, /healthz answers 503 with a short reason naming the ledger."""
    receiver = serve_receiver(ledger_url=postgres_url)
    health_url = receiver.url.replace("/webhook", "/healthz")
    assert httpx.get(health_url, timeout=10.0).status_code == 200
    url = make_url(postgres_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{url.database}" WITH (FORCE)'))
    finally:
        admin.dispose()
    resp = httpx.get(health_url, timeout=30.0)
    assert resp.status_code == 503
    assert resp.json()["status"] == "unavailable"
    reason = resp.json()["reason"]
    assert reason.startswith("ledger unreachable")
    assert str(url.database) not in reason and "127.0.0.1" not in reason


def test_batch_this_ledger_never_made_is_acknowledged_and_ignored(
    serve_receiver: Callable[..., Receiver], ledger_url: str
) -> None:
    """Another system's batch in the same project: 2xx, nothing recorded, no reconcile."""
    receiver = serve_receiver(ledger_url=ledger_url)
    receiver.know("batches/ours")
    foreign = batch_event("batches/theirs")
    resp = receiver.post(foreign, signed(foreign, msg_id="msg_theirs"))
    assert resp.status_code == 200
    assert resp.json() == {"status": "ignored"}
    gemini_shape = json.dumps({"type": "batch.failed", "data": {"id": "theirs-too"}})
    assert receiver.post(gemini_shape, signed(gemini_shape)).json() == {"status": "ignored"}
    ours = batch_event("batches/ours")
    assert receiver.post(ours, signed(ours, msg_id="msg_ours")).json() == {"status": "accepted"}
    wait_until(lambda: receiver.calls, what="our batch's reconcile")
    assert receiver.calls == ["batches/ours"]
    assert [r["webhook_id"] for r in receiver.deliveries()] == ["msg_ours"]
