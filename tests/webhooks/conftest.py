"""Fixtures for the webhook receiver: the app served by uvicorn on a loopback port in a thread."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import text
from standardwebhooks import Webhook

from flows.webhooks import create_app
from ledger import Ledger

SECRET = "whsec_" + "c2VjcmV0LWZvci13ZWJob29rLXRlc3RzLTAxMjM0NTY3"  # base64 of 33 bytes
OTHER_SECRET = "whsec_" + "b3RoZXItc2VjcmV0LW5vdC10aGUtcmlnaHQtb25lLTk="


def wait_until(condition: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


def signed(
    payload: bytes | str,
    *,
    secret: str = SECRET,
    msg_id: str | None = None,
    at: float | None = None,
) -> dict[str, str]:
    """Standard Webhooks headers for ``payload``, signed with ``secret`` at ``at``."""
    body = payload.decode() if isinstance(payload, bytes) else payload
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    when = datetime.fromtimestamp(int(time.time() if at is None else at), tz=UTC)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, when, body),
    }


@dataclass
class Receiver:
    """A served receiver: its URL, the reconcile calls it made, and its ledger."""

    url: str
    ledger_url: str
    calls: list[str] = field(default_factory=list)
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10.0))

    def post(self, body: bytes | str, headers: dict[str, str]) -> httpx.Response:
        content = body.encode() if isinstance(body, str) else body
        return self.http.post(self.url, content=content, headers=headers)

    def deliveries(self) -> list[dict[str, Any]]:
        """Every row of the ledger's webhook_deliveries table."""
        ledger = Ledger(self.ledger_url, migrate=False)
        try:
            with ledger.engine.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT webhook_id, event_type, subject, received_at, processed_at"
                        " FROM webhook_deliveries ORDER BY received_at"
                    )
                ).mappings()
                return [dict(r) for r in rows]
        finally:
            ledger.dispose()


class Served:
    """uvicorn serving an ASGI app on a socket we bound ourselves (no port race)."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        wait_until(lambda: self.server.started, what="uvicorn to start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture
def serve_receiver(sqlite_url: str) -> Iterator[Callable[..., Receiver]]:
    """Factory: serve ``create_app`` (secret SECRET, calls recorded) and return its Receiver."""
    started: list[tuple[Served, Receiver]] = []

    def start(
        *,
        ledger_url: str = sqlite_url,
        clock: Callable[[], float] = time.time,
        on_batch_complete: Callable[[str], None] | None = None,
    ) -> Receiver:
        receiver = Receiver(url="", ledger_url=ledger_url)
        app = create_app(
            secret=SECRET,
            ledger_url=ledger_url,
            on_batch_complete=on_batch_complete or receiver.calls.append,
            clock=clock,
        )
        served = Served(app)
        receiver.url = f"http://127.0.0.1:{served.port}/webhook"
        started.append((served, receiver))
        return receiver

    yield start
    for served, receiver in started:
        served.stop()
        receiver.http.close()


@pytest.fixture
def receiver(serve_receiver: Callable[..., Receiver]) -> Receiver:
    """A receiver on a fresh SQLite ledger with the real clock."""
    return serve_receiver()
