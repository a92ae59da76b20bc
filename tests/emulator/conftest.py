"""Fixtures for the emulator tests: one emulator subprocess and one webhook receiver."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from emulator.testing import RunningEmulator

WEBHOOK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # base64 of 24 bytes


class Receiver:
    """A tiny HTTP server on loopback that records every POST it gets."""

    def __init__(self) -> None:
        self.events: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                with receiver.lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    headers[":path"] = self.path  # not a real header: where it was POSTed
                    receiver.events.append((headers, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def clear(self) -> None:
        with self.lock:
            self.events.clear()

    def wait_for(
        self, condition: Callable[[list[tuple[dict[str, str], bytes]]], bool], timeout: float = 10
    ) -> list[tuple[dict[str, str], bytes]]:
        """Poll until ``condition(events)`` holds, or fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                events = list(self.events)
            if condition(events):
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"webhook condition not met; got {len(events)} events")
            time.sleep(0.02)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


@pytest.fixture(scope="session")
def emu_session(receiver: Receiver) -> Iterator[RunningEmulator]:
    with RunningEmulator(
        scenario="clean", seed=0, webhook_url=receiver.url, webhook_secret=WEBHOOK_SECRET
    ) as running:
        yield running


@pytest.fixture
def emu(emu_session: RunningEmulator, receiver: Receiver) -> RunningEmulator:
    """The shared emulator, reset to the clean scenario with seed 0."""
    emu_session.set_scenario("clean", seed=0)
    emu_session.reset()
    receiver.clear()
    return emu_session


@pytest.fixture
def client(emu: RunningEmulator) -> Any:
    return emu.client()
