"""A TCP proxy in front of a real Prefect API that loses the server's answer to a flow run's
final state once, as a read timeout on a busy server or a dropped connection does.

The proposal (``POST .../flow_runs/{id}/set_state`` of a ``FAILED`` or ``CANCELLED`` state)
reaches the server, which stores it; the proxy then closes the client's connection instead of
passing the answer on. Prefect's client sends the same proposal again (it retries a
``RemoteProtocolError``), and the server's ``PreventDuplicateTransitions`` rule answers the
repeat with the state it stored, which carries no data. Everything else, websockets
included, passes through byte for byte.
"""

from __future__ import annotations

import asyncio
import re
import threading
from types import TracebackType
from urllib.parse import urlsplit

__all__ = ["LossyProxy"]

_PROPOSAL = re.compile(rb"POST \S*/flow_runs/\S+/set_state ")
_FINAL = re.compile(rb'"type":\s*"(FAILED|CANCELLED)"')


class LossyProxy:
    """``with LossyProxy(api_url) as proxy``: ``proxy.url`` is the API through the proxy;
    ``proxy.dropped`` counts the answers it lost (one at most)."""

    def __init__(self, api_url: str) -> None:
        parts = urlsplit(api_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._path = parts.path
        self.dropped = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="lossy-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def __enter__(self) -> LossyProxy:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the proxy did not start")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0)
        )
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}{self._path}"
        self._ready.set()
        self._loop.run_forever()

    async def _connection(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        server_r, server_w = await asyncio.open_connection(self._host, self._port)
        asked = bytearray()  # what the client sent since the server last answered
        lose = asyncio.Event()  # set when the request in flight is a final state to lose

        async def upstream() -> None:
            while chunk := await client_r.read(65536):
                asked.extend(chunk)
                if not self.dropped and _PROPOSAL.search(asked) and _FINAL.search(asked):
                    lose.set()
                server_w.write(chunk)
                await server_w.drain()
            server_w.close()

        async def downstream() -> None:
            while chunk := await server_r.read(65536):
                if lose.is_set() and not self.dropped:
                    self.dropped += 1  # the server stored it; the client never hears
                    break
                asked.clear()
                client_w.write(chunk)
                await client_w.drain()
            client_w.close()
            server_w.close()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for writer in (client_w, server_w):
            writer.close()
