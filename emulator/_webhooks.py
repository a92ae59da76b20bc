"""Completion webhooks, signed per Standard Webhooks, delivered from background tasks."""

from __future__ import annotations

import asyncio
import random
import secrets
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from standardwebhooks import Webhook

from ._answers import uniform

# Deliveries in flight at once, as a real sender would bound them. Unbounded, a burst of
# thousands of completions opened as many requests at once: the sender's own event loop and
# the receiver were swamped, and deliveries failed waiting for a connection.
MAX_IN_FLIGHT = 16


class WebhookSender:
    """Delivers events to one URL at least once (retrying), maybe twice or late."""

    def __init__(self, core: Any, url: str | None, secret: str | None) -> None:
        self.core = core
        self.url = url
        self.signer = Webhook(secret) if secret else None
        self.tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self._gate = asyncio.Semaphore(MAX_IN_FLIGHT)

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def emit(
        self,
        event_type: str,
        data: dict[str, Any],
        subject: str,
        urls: list[str] | None = None,
    ) -> None:
        """Schedule delivery of one event (to ``urls`` or the configured URL); never raises."""
        targets = urls or ([self.url] if self.url else [])
        if not targets:
            return
        sc = self.core.scenario
        msg_id = f"msg_{secrets.token_hex(12)}"
        now = datetime.now(UTC)
        event = {
            "type": event_type,
            "timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "data": data,
        }
        body = orjson.dumps(event).decode()
        copies = 1
        if uniform(self.core.seed, subject, event_type, "duplicate") < sc.webhook_duplicate_rate:
            copies = 2
        for copy, url in ((c, u) for c in range(copies) for u in targets):
            delay = sc.webhook_delay_ms.mean + random.uniform(
                -sc.webhook_delay_ms.jitter, sc.webhook_delay_ms.jitter
            )
            delay = max(0.0, delay) / 1000.0 + copy * 0.05
            try:
                task = asyncio.get_running_loop().create_task(
                    self._deliver(url, msg_id, body, delay)
                )
            except RuntimeError:  # no running loop (should not happen under ASGI)
                self.core.webhooks_failed += 1
                continue
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _deliver(self, url: str, msg_id: str, body: str, delay: float) -> None:
        try:
            if delay > 0:
                await asyncio.sleep(delay)
            if self._client is None:
                self._client = httpx.AsyncClient(timeout=5.0)
            headers = {"content-type": "application/json", "webhook-id": msg_id}
            for attempt in range(4):
                try:
                    async with self._gate:  # signed once its turn comes: a fresh timestamp
                        ts = datetime.now(UTC)
                        headers["webhook-timestamp"] = str(int(ts.timestamp()))
                        if self.signer is not None:
                            headers["webhook-signature"] = self.signer.sign(msg_id, ts, body)
                        resp = await self._client.post(url, content=body.encode(), headers=headers)
                    if 200 <= resp.status_code < 300:
                        self.core.webhooks_sent += 1
                        return
                except httpx.HTTPError:
                    pass
                self.core.webhooks_failed += 1
                await asyncio.sleep(0.2 * 2**attempt)
        except asyncio.CancelledError:
            raise
        except Exception:  # never let a delivery crash the server
            self.core.webhooks_failed += 1

    async def aclose(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
