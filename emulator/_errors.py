"""Google API error bodies, as the real Gemini API sends them."""

from __future__ import annotations

from typing import Any

RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_QUOTA_METRIC = "generativelanguage.googleapis.com/generate_content_requests"

#: step -> (HTTP code, status, message)
STEP_ERRORS: dict[str, tuple[int, str, str]] = {
    "429": (
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    "500": (
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    "failed": (500, "INTERNAL", "An internal error has occurred. Please retry."),
    "503": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    "400": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    "403": (403, "PERMISSION_DENIED", "The caller does not have permission"),
    "404": (404, "NOT_FOUND", "Requested entity was not found."),
    "unknown": (409, "ABORTED", "The operation was aborted."),
    "hang": (504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
    "cancelled": (499, "CANCELLED", "The operation was cancelled."),
    "budget_exceeded": (429, "RESOURCE_EXHAUSTED", "Budget exceeded for this project."),
}


def status_object(
    code: int, status: str, message: str, retry_delay_s: float | None = None
) -> dict[str, Any]:
    """A google.rpc.Status-like object (what goes under ``error``)."""
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if code == 429 and retry_delay_s is not None:
        delay = f"{retry_delay_s:g}s"
        err["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": _QUOTA_METRIC,
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
                    }
                ],
            },
            {"@type": RETRY_INFO, "retryDelay": delay},
        ]
    return err


def step_status(step: str, retry_delay_s: float) -> dict[str, Any]:
    """The status object of an error step."""
    code, status, message = STEP_ERRORS[step]
    return status_object(code, status, message, retry_delay_s if step == "429" else None)


def error_body(code: int, status: str, message: str, **extra: Any) -> dict[str, Any]:
    """A full error body ``{"error": {...}}``."""
    err = status_object(code, status, message)
    err.update(extra)
    return {"error": err}


def auth_error() -> dict[str, Any]:
    """What the real API answers to a request without an API key."""
    return error_body(
        403,
        "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API.",
    )


def not_found(path: str) -> dict[str, Any]:
    return error_body(404, "NOT_FOUND", f"Method not found: {path}")


def invalid_json(detail: str) -> dict[str, Any]:
    return error_body(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {detail}")


def key_invalid() -> dict[str, Any]:
    """A key the API does not know: 400 INVALID_ARGUMENT with an ErrorInfo reason
    API_KEY_INVALID, not 401/403 (the Gemini API troubleshooting page,
    ai.google.dev/gemini-api/docs/troubleshooting, and python-genai issue reports)."""
    message = "API key not valid. Please pass a valid API key."
    return error_body(
        400,
        "INVALID_ARGUMENT",
        message,
        details=[
            {
                "@type": ERROR_INFO,
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": message,
            },
        ],
    )


#: Project-level refusals (ai.google.dev/gemini-api/docs/troubleshooting, "Error codes").
PROJECT_FAULTS: dict[str, tuple[int, str, str]] = {
    "permission_denied": (
        403,
        "PERMISSION_DENIED",
        "Your API key doesn't have the required permissions.",
    ),
    "failed_precondition": (
        400,
        "FAILED_PRECONDITION",
        "Gemini API free tier is not available in your country. Please enable billing on your"
        " project in Google AI Studio.",
    ),
}


def project_fault(kind: str) -> dict[str, Any]:
    code, status, message = PROJECT_FAULTS[kind]
    return error_body(code, status, message)


def mime_refused(mime_type: str) -> dict[str, Any]:
    """The Files API refusing an upload's type (google-gemini/cookbook #1008, python-genai
    #1547: ``application/jsonl`` reported refused as an unsupported MIME type)."""
    return error_body(400, "INVALID_ARGUMENT", f"Unsupported MIME type: {mime_type}")


def storage_full(limit_bytes: int) -> dict[str, Any]:
    """An upload refused because the project's Files API storage is full: 429
    RESOURCE_EXHAUSTED, a QuotaFailure on ``file_storage_bytes`` / ``FileStorageBytesPerProject``
    and a Help link, no RetryInfo (the body reported verbatim in alphaXiv/feedback issue 16,
    October 2025, with the 20 GB quota value 21474836480; python-genai issue 2132 describes
    the same quota, "File storage quota per project", refusing batch input uploads)."""
    message = (
        "You exceeded your current quota, please check your plan and billing details. For more"
        " information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
        "\n* Quota exceeded for metric: generativelanguage.googleapis.com/file_storage_bytes,"
        f" limit: {limit_bytes}"
    )
    return error_body(
        429,
        "RESOURCE_EXHAUSTED",
        message,
        details=[
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/file_storage_bytes",
                        "quotaId": "FileStorageBytesPerProject",
                        "quotaValue": str(limit_bytes),
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [
                    {
                        "description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                    }
                ],
            },
        ],
    )
