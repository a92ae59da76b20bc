"""Google API error bodies, as the real Gemini API sends them."""

from __future__ import annotations

from typing import Any

RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
HELP = "type.googleapis.com/google.rpc.Help"
_QUOTA_METRIC = "generativelanguage.googleapis.com/generate_content_requests"
_FREE_TIER_METRIC = "generativelanguage.googleapis.com/generate_content_free_tier_requests"
_RATE_LIMITS_DOC = "https://ai.google.dev/gemini-api/docs/rate-limits"
_QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more"
    f" information on this error, head to: {_RATE_LIMITS_DOC}."
)
#: The quota a per-day 429 names (FACTS: QuotaFailure quotaIds of the real API).
DAILY_QUOTA_ID = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"

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


def _help() -> dict[str, Any]:
    return {
        "@type": HELP,
        "links": [{"description": "Learn more about Gemini API quotas", "url": _RATE_LIMITS_DOC}],
    }


def daily_quota(model: str) -> dict[str, Any]:
    """429 for a spent per-day quota: a QuotaFailure whose quotaId is per day, a Help link and
    no RetryInfo (the shape of google-gemini/gemini-cli-action #36, with the per-day quotaId
    the real API names; the issue's table, row 4). No retry tonight can succeed."""
    model = model.removeprefix("models/")
    return {
        "code": 429,
        "message": f"{_QUOTA_MESSAGE}\n* Quota exceeded for metric: {_FREE_TIER_METRIC},"
        f" limit: 250, model: {model}",
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {
                "@type": QUOTA_FAILURE,
                "violations": [
                    {
                        "quotaMetric": _FREE_TIER_METRIC,
                        "quotaId": DAILY_QUOTA_ID,
                        "quotaDimensions": {"location": "global", "model": model},
                        "quotaValue": "250",
                    }
                ],
            },
            _help(),
        ],
    }


def no_quota(model: str) -> dict[str, Any]:
    """429 for a model the project has no quota for: ``limit: 0`` in the message
    (continuedev/continue #12744, google-gemini/gemini-cli #22486: "Quota exceeded for
    metric: ..._free_tier_requests, limit: 0, model: gemini-3.1-pro ... Please retry in
    5.2s", details a Help link)."""
    model = model.removeprefix("models/")
    return {
        "code": 429,
        "message": f"{_QUOTA_MESSAGE}\n* Quota exceeded for metric: {_FREE_TIER_METRIC},"
        f" limit: 0, model: {model}\nPlease retry in 5.237548564s.",
        "status": "RESOURCE_EXHAUSTED",
        "details": [_help()],
    }


def help_only_429() -> dict[str, Any]:
    """429 with only a Help link: no QuotaFailure, no RetryInfo (python-genai #1427)."""
    return {
        "code": 429,
        "message": _QUOTA_MESSAGE,
        "status": "RESOURCE_EXHAUSTED",
        "details": [_help()],
    }


def model_not_found(
    model: str, version: str = "v1beta", method: str = "generateContent"
) -> dict[str, Any]:
    """404 for a retired or unknown model, on generateContent, batchGenerateContent and
    interactions.create alike (the message the real API sends, FACTS "A retired or unknown
    model"; the 2.0 Flash family was shut down in 2026)."""
    model = model.removeprefix("models/")
    return {
        "code": 404,
        "message": f"models/{model} is not found for API version {version}, or is not supported"
        f" for {method}. Call ListModels to see the list of available models and their"
        " supported methods.",
        "status": "NOT_FOUND",
    }


def step_status(step: str, retry_delay_s: float, model: str = "gemini-2.5-flash") -> dict[str, Any]:
    """The status object of an error step."""
    if step == "429_daily":
        return daily_quota(model)
    if step == "429_help":
        return help_only_429()
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
    "key_unrestricted": (
        403,
        "PERMISSION_DENIED",
        "Requests to this API generativelanguage.googleapis.com method"
        " google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent are blocked.",
    ),
}


def project_fault(kind: str) -> dict[str, Any]:
    code, status, message = PROJECT_FAULTS[kind]
    if kind == "key_unrestricted":
        # A key the API blocks: since 2026-06-19 the Gemini API refuses requests from
        # unrestricted standard keys (ai.google.dev/gemini-api/docs/api-key). The body is
        # the one reported for it the day before (continuedev/continue #12781): 403 with an
        # ErrorInfo reason API_KEY_SERVICE_BLOCKED.
        return error_body(
            code,
            status,
            message,
            details=[
                {
                    "@type": ERROR_INFO,
                    "reason": "API_KEY_SERVICE_BLOCKED",
                    "domain": "googleapis.com",
                    "metadata": {
                        "consumer": "projects/000000000000",
                        "service": "generativelanguage.googleapis.com",
                        "apiName": "generativelanguage.googleapis.com",
                        "methodName": "google.ai.generativelanguage.v1beta.GenerativeService"
                        ".GenerateContent",
                    },
                },
                {
                    "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                    "locale": "en-US",
                    "message": message,
                },
            ],
        )
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
