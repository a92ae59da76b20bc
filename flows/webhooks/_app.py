"""The webhook receiver's ASGI app: verify, parse, record once, hand off, answer.

No Prefect here: what to do on a finished batch is the ``on_batch_complete`` callable that
``flows.webhooks.receiver`` wires in (a deployment run or an in-process reconcile).

Order of checks, and why: the body's size is bounded first (413), before any of it is held
in memory, so nobody can exhaust the receiver with one request; the signature is checked
before the body is parsed, so an unauthenticated caller only ever gets 401 and learns nothing
about what we accept; only an authenticated body that we cannot read is a 400 (the sender has
a bug, retrying won't help). A batch this ledger never made (a project's webhook fires for
every batch in it) is acknowledged and left alone.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio
import orjson
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ledger import Ledger, LedgerError

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "TOLERANCE_S",
    "BadRequest",
    "Event",
    "TooLarge",
    "Unauthorized",
    "build_app",
    "parse_event",
    "verify",
]

log = logging.getLogger("gemini_ledger.webhooks")

# Standard Webhooks' own tolerance; a delivery older or newer than this is refused, which
# bounds how long a captured request could be replayed.
TOLERANCE_S = 300.0

# Longest webhook-id the ledger column takes (WebhookDelivery.webhook_id).
MAX_WEBHOOK_ID = 256
# A completion event is a few hundred bytes; a mebibyte leaves room for any real payload.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# A delivery recorded this long ago and still unprocessed was lost by a dead receiver.
STALLED_AFTER_S = 60.0

_PRINTABLE = re.compile(r"[^\x21-\x7e]")
# What a webhook-id may be made of: visible ASCII (Standard Webhooks ids look like msg_...).
_WEBHOOK_ID = re.compile(r"[\x21-\x7e]+")


class Unauthorized(Exception):
    """The delivery is not provably from the sender (answer 401)."""


class BadRequest(Exception):
    """An authenticated body we cannot read (answer 400)."""


class TooLarge(Exception):
    """The body is over the receiver's limit (answer 413)."""


async def read_bounded(request: Request, limit: int) -> bytes:
    """The body, or TooLarge as soon as it is known to exceed ``limit`` bytes.

    A declared Content-Length over the limit is refused before a byte is read; a chunked
    body is counted as it streams and reading stops at the first chunk past the limit, so
    at most ``limit`` bytes plus one chunk are ever held.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest("unreadable Content-Length") from None
        if size > limit:
            raise TooLarge(f"Content-Length {size} over the limit of {limit} bytes")
    parts: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise TooLarge(f"body over the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


@dataclass(frozen=True)
class Event:
    """What the receiver needs from a delivery: its type and what it is about."""

    type: str
    subject: str

    @property
    def is_batch(self) -> bool:
        return self.type.startswith("batch.")


def verify(
    hook: Webhook, body: bytes, headers: Mapping[str, str], *, now: float
) -> tuple[str, str]:
    """Check timestamp and signature; return ``(webhook_id, body_text)`` or raise Unauthorized.

    ``Webhook.verify`` compares the timestamp with the real clock, which a test cannot move,
    so the timestamp is checked here against ``now`` (the app's injectable clock) and the
    signature is recomputed with the library's ``Webhook.sign`` for that very timestamp and
    compared in constant time: the same check ``verify`` does, minus its clock.
    """
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    signature = headers.get("webhook-signature", "")
    if not (msg_id and stamp and signature):
        raise Unauthorized("missing webhook headers")
    try:
        sent_at = float(stamp)
    except ValueError:
        raise Unauthorized("unreadable webhook-timestamp") from None
    if not abs(now - sent_at) <= TOLERANCE_S:  # also refuses NaN
        raise Unauthorized("timestamp outside tolerance")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Unauthorized("body is not UTF-8") from None
    expected = hook.sign(msg_id, datetime.fromtimestamp(int(sent_at), tz=UTC), text)
    expected_raw = base64.b64decode(expected.split(",", 1)[1])
    for candidate in signature.split(" "):
        version, _, value = candidate.partition(",")
        if version != "v1":
            continue
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(expected_raw, raw):
            return msg_id, text
    raise Unauthorized("no matching signature")


def _first_str(data: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = data.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def parse_event(text: str) -> Event:
    """The event's type and subject, from the emulator's shape or Gemini's; BadRequest if neither.

    Both are Standard Webhooks envelopes ``{"type", "timestamp", "data": {...}}``; the batch is
    named by ``data.name`` (emulator: ``batches/ID``) or ``data.id`` / ``data.batch``, an
    interaction by ``data.id``. Only the type and the subject are kept: the rest of the
    payload is never stored or logged.
    """
    try:
        event = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise BadRequest("body is not JSON") from None
    if not isinstance(event, dict):
        raise BadRequest("body is not a JSON object")
    kind = _first_str(event, "type", "event_type", "eventType")
    data = event.get("data")
    if kind is None or not isinstance(data, dict):
        raise BadRequest("event has no type or no data object")
    if kind.startswith("batch."):
        nested = data.get("batch")
        name = _first_str(data, "name", "id", "batch_name", "batchName")
        if name is None and isinstance(nested, dict):
            name = _first_str(nested, "name", "id")
        if name is None and isinstance(nested, str) and nested:
            name = nested
        if name is None:
            raise BadRequest("batch event names no batch job")
        # The SDK (and the ledger) call a batch job ``batches/ID``.
        subject = name if name.startswith("batches/") else f"batches/{name}"
    else:
        subject = _first_str(data, "id", "name", "interaction_id", "interactionId") or ""
        if kind.startswith("interaction.") and not subject:
            raise BadRequest("interaction event names no interaction")
    return Event(type=_clean(kind, 128), subject=_clean(subject, 256))


def _clean(value: str, limit: int) -> str:
    """Printable ASCII only, bounded: these strings reach logs and the ledger."""
    return _PRINTABLE.sub("?", value)[:limit]


def build_app(
    *,
    secret: str,
    ledger: Ledger,
    on_batch_complete: Callable[[str], None],
    clock: Callable[[], float],
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Starlette:
    """The Starlette app. POST a delivery to ``/`` or ``/webhook``; GET ``/healthz``."""
    hook = Webhook(secret)
    # One ledger call at a time: a burst of deliveries (thousands of interactions finishing
    # together) would otherwise put dozens of threads in SQLite's busy-wait for the write
    # lock, starving the tick that holds it and timing the senders out.
    one_at_a_time = anyio.CapacityLimiter(1)

    async def in_ledger(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await anyio.to_thread.run_sync(partial(call, *args, **kwargs), limiter=one_at_a_time)

    def hand_off(webhook_id: str, job_name: str) -> None:
        # Runs after the response is sent: a slow reconcile start never delays the answer.
        try:
            on_batch_complete(job_name)
        except Exception as exc:
            # The message may echo the payload or a URL with credentials: log the type only.
            # The delivery stays unprocessed; the next batch tick reconciles the job anyway.
            log.error(
                "webhook %s: starting reconcile of %s failed (%s)",
                webhook_id,
                job_name,
                type(exc).__name__,
            )
            return
        ledger.mark_delivery_processed(webhook_id)

    def _stalled(webhook_id: str) -> bool:
        # A delivery recorded long ago but never processed (the receiver died before it
        # handed the job off): the sender's retry is processed after all. A repeat that
        # arrives while the first is still being handed off is not.
        state = ledger.delivery(webhook_id)
        return (
            state is not None and state[1] is None and ledger.clock() - state[0] > STALLED_AFTER_S
        )

    def admit(webhook_id: str, event: Event) -> str:
        """Record the delivery; ``ours``, ``foreign`` (not recorded) or ``repeat``."""
        # A Google project's webhook fires for every batch in the project: one this ledger
        # never bound is somebody else's, and reconciling it could only fail.
        if event.is_batch and ledger.batch_named(event.subject) is None:
            return "foreign"
        # An interaction (or anything else) is only acknowledged: the background tick
        # reclaims finished interactions by polling, so nothing is lost by not acting here,
        # and the delivery is recorded as processed in the same write.
        first = ledger.record_delivery(
            webhook_id,
            event_type=event.type,
            subject=event.subject,
            processed=not event.is_batch,
        )
        return "ours" if first or _stalled(webhook_id) else "repeat"

    async def receive(request: Request) -> Response:
        try:
            body = await read_bounded(request, max_body_bytes)
        except TooLarge as exc:
            log.warning("webhook refused (413): %s", exc)
            return JSONResponse({"error": "body too large"}, status_code=413)
        except BadRequest as exc:
            log.warning("webhook refused (400): %s", exc)
            return JSONResponse({"error": str(exc)}, status_code=400)
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            # In a worker thread: HMAC over a large body (or a slow secret backend) must
            # never hold the event loop that answers /healthz and the other deliveries.
            webhook_id, text = await anyio.to_thread.run_sync(
                partial(verify, hook, body, headers, now=clock())
            )
        except Unauthorized as exc:
            log.warning("webhook refused (401): %s", exc)
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        shown_id = _clean(webhook_id, MAX_WEBHOOK_ID)
        try:
            if len(webhook_id) > MAX_WEBHOOK_ID:
                raise BadRequest("webhook-id too long")
            if not _WEBHOOK_ID.fullmatch(webhook_id):
                # It is our dedup key and reaches logs: control characters could forge log
                # lines or split a key that only looks equal to another one.
                raise BadRequest("webhook-id holds characters other than visible ASCII")
            event = parse_event(text)
        except BadRequest as exc:
            log.warning("webhook %s refused (400): %s", shown_id, exc)
            return JSONResponse({"error": str(exc)}, status_code=400)
        verdict = await in_ledger(admit, webhook_id, event)
        if verdict == "foreign":
            log.info(
                "webhook %s %s %s: not a batch of this ledger, ignored",
                shown_id,
                event.type,
                event.subject,
            )
            return JSONResponse({"status": "ignored"})
        if verdict == "repeat":
            log.info("webhook %s %s %s: repeat, ignored", shown_id, event.type, event.subject)
            return JSONResponse({"status": "duplicate"})
        log.info("webhook %s %s %s: accepted", shown_id, event.type, event.subject)
        if event.is_batch:
            task = BackgroundTask(hand_off, webhook_id, event.subject)
            return JSONResponse({"status": "accepted"}, background=task)
        return JSONResponse({"status": "acknowledged"})

    async def healthz(request: Request) -> Response:
        # Healthy means able to record a delivery: a receiver whose ledger is gone would
        # answer every sender 500 while its probe said ok.
        try:
            await in_ledger(ledger.ping)
        except LedgerError as exc:
            log.warning("healthz: %s", exc)
            return JSONResponse({"status": "unavailable", "reason": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/", receive, methods=["POST"]),
            Route("/webhook", receive, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
