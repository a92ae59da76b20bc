"""One API call's failure, described without the SDK: what the classifier decides from.

The adapter at the edge (``flows.gemini._errors.describe``) is the only code that knows the
SDK's and the HTTP client's exception types; it turns one of them into an :class:`ApiFailure`
and :func:`ledger.classify` / :func:`ledger.setup_fault` decide from that description alone.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ApiFailure", "Transport"]


class Transport(enum.StrEnum):
    """How the exchange broke when no answer came back."""

    CONNECT = "connect"  # never connected (refused, DNS, no route): nothing sent, nothing billed
    TIMEOUT = "timeout"  # no answer in time: the request may have been billed
    DROPPED = "dropped"  # the connection broke mid-request: the request may have been billed


@dataclass(frozen=True, slots=True)
class ApiFailure:
    """An answered API error (``http_code``/``status``) or a broken exchange (``transport``).

    ``status`` is the google.rpc status name as the API sent it (``RESOURCE_EXHAUSTED``);
    ``reason`` the ``google.rpc.ErrorInfo`` reason (``API_KEY_INVALID``); ``retry_delay_s``
    the delay the server asked for (RetryInfo or ``Retry-After``); ``quota_ids`` the
    ``quotaId`` of each ``google.rpc.QuotaFailure`` violation (a 429 says which quota is
    spent: ``GenerateRequestsPerDayPerProjectPerModel`` does not clear tonight);
    ``message`` the server's or the transport's words, not yet redacted.
    """

    http_code: int | None = None
    status: str | None = None
    reason: str | None = None
    retry_delay_s: float | None = None
    message: str = ""
    transport: Transport | None = None
    quota_ids: tuple[str, ...] = ()

    @property
    def ambiguous(self) -> bool:
        """The request may have been carried out although the caller got an error: a 5xx
        (a gateway timeout can come after the work was done), a timeout, a connection that
        broke mid-request. A 4xx or a failed connect was certainly refused."""
        if self.transport is not None:
            return self.transport is not Transport.CONNECT
        return self.http_code is not None and self.http_code >= 500
