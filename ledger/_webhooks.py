"""Webhook deliveries seen by the receiver, recorded once by id."""

from __future__ import annotations

from sqlalchemy import text

from ledger._base import LedgerBase
from ledger._models import WebhookDelivery

__all__ = ["WebhookVerbs"]


class WebhookVerbs(LedgerBase):
    """Verbs over ``webhook_deliveries``."""

    def record_delivery(
        self, webhook_id: str, *, event_type: str, subject: str, processed: bool = False
    ) -> bool:
        """Record a webhook delivery by id; False when it was seen before (a repeat).

        ``processed``: nothing is left to do for it (one write instead of two).
        """
        stmt = self._insert_ignore(WebhookDelivery.__table__, "webhook_id")  # type: ignore[attr-defined]
        now = self.clock()
        row = {
            "webhook_id": webhook_id,
            "event_type": event_type[:128],
            "subject": subject[:256],
            "received_at": now,
            "processed_at": now if processed else None,
        }
        with self._write() as conn:
            return self._inserted(conn.execute(stmt, row)) == 1

    def delivery(self, webhook_id: str) -> tuple[float, float | None] | None:
        """(received_at, processed_at) of a recorded delivery, or None if never seen."""
        with self._read() as conn:
            row = conn.execute(
                text(
                    "SELECT received_at, processed_at FROM webhook_deliveries"
                    " WHERE webhook_id = :id"
                ),
                {"id": webhook_id},
            ).one_or_none()
        return None if row is None else (float(row[0]), row[1])

    def mark_delivery_processed(self, webhook_id: str) -> None:
        with self._write() as conn:
            conn.execute(
                text("UPDATE webhook_deliveries SET processed_at = :now WHERE webhook_id = :id"),
                {"now": self.clock(), "id": webhook_id},
            )
