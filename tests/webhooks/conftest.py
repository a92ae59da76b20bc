"""Fixtures for the webhook receiver: the app served by uvicorn on a loopback port in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import text

from flows.settings import Settings
from flows.webhooks.receiver import create_app
from ledger import Ledger

from .signing import OTHER_SECRET, SECRET, signed, wait_until

__all__ = ["OTHER_SECRET", "SECRET", "Receiver", "signed", "wait_until"]


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

    def know(self, *names: str) -> None:
        """Record batch jobs ``names`` in the ledger, as a tick that made them would."""
        ledger = Ledger(self.ledger_url)
        try:
            for name in names:
                reservation = f"gl-test-{name.removeprefix('batches/')}"
                ledger.reserve(pipeline="hooks", limit=1, reservation=reservation, batch_model="m")
                ledger.bind_batch(reservation, name=name)
        finally:
            ledger.dispose()

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
        max_body: int | None = None,
    ) -> Receiver:
        receiver = Receiver(url="", ledger_url=ledger_url)
        limit = {} if max_body is None else {"webhook_max_body_bytes": max_body}
        app = create_app(
            Settings.given(database_url=ledger_url, **limit),
            secret=SECRET,
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
