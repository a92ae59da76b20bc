"""Media parts of a request, checked and counted as the API does.

Both wire shapes are read: a ``generateContent`` / batch line's ``contents[].parts`` (REST
camelCase ``inlineData {mimeType, data}``, ``fileData {mimeType, fileUri}``, google-genai
``models.py`` ``_Part_to_mldev``; the SDK's snake_case is accepted too) and an interaction's
``input`` content blocks (``{"type": "image"|"audio"|"video"|"document", "data"|"uri",
"mime_type"}``, google-genai ``_gaos/types/interactions/imagecontent.py`` and siblings).

What is refused, as the API refuses it:

- a request over 20 MB: 400 INVALID_ARGUMENT "Request payload size exceeds the limit:
  20971520 bytes." (https://ai.google.dev/gemini-api/docs/files: "Always use the Files API
  when the total request size ... is larger than 20 MB"; the message's form as the API
  sends it for its limit, google-gemini/deprecated-generative-ai-android #26);
- inline data that is not base64, or without a mime type: 400 INVALID_ARGUMENT;
- a file URI of the Files API whose file does not exist or has expired (48 h after
  upload, https://ai.google.dev/gemini-api/docs/files): 403 PERMISSION_DENIED "You do not
  have permission to access the File <id> or it may not exist." (the body the API is
  reported to answer with; its exact shape is not documented, so the client must not take
  a 403 on a request with a file for a fault of its key: ``flows.run._uploads`` checks
  its files before sending).

Tokens by modality (https://ai.google.dev/gemini-api/docs/tokens: an image is 258 tokens,
video 263 tokens a second, audio 32 tokens a second; a PDF page is read as an image): the
emulator cannot decode media, so it estimates seconds and pages from the size.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "REQUEST_LIMIT",
    "media_problem",
    "media_tokens",
    "parts_of",
]

REQUEST_LIMIT = 20 * 1024 * 1024
_FILE_URI = re.compile(r"/files/(?P<id>[A-Za-z0-9_-]+)$")

# Bytes per second of audio / video and per page of a document, for the estimates.
_AUDIO_BYTES_S = 16_000
_VIDEO_BYTES_S = 250_000
_DOC_BYTES_PAGE = 50_000


def _status(code: int, status: str, message: str) -> dict[str, Any]:
    return {"code": code, "status": status, "message": message}


def parts_of(value: Any) -> Iterator[dict[str, Any]]:
    """Every media part of a request, normalised to ``{"mime", "data", "uri"}``."""
    if isinstance(value, dict):
        inline = value.get("inlineData") or value.get("inline_data")
        file_data = value.get("fileData") or value.get("file_data")
        if isinstance(inline, dict):
            yield {
                "mime": inline.get("mimeType") or inline.get("mime_type"),
                "data": inline.get("data"),
                "uri": None,
            }
            return
        if isinstance(file_data, dict):
            yield {
                "mime": file_data.get("mimeType") or file_data.get("mime_type"),
                "data": None,
                "uri": file_data.get("fileUri") or file_data.get("file_uri"),
            }
            return
        if value.get("type") in ("image", "audio", "video", "document"):
            yield {
                "mime": value.get("mime_type"),
                "data": value.get("data"),
                "uri": value.get("uri"),
            }
            return
        for sub in value.values():
            yield from parts_of(sub)
    elif isinstance(value, list):
        for item in value:
            yield from parts_of(item)


def media_problem(
    request: dict[str, Any],
    *,
    size: int,
    file_alive: Callable[[str], bool],
) -> dict[str, Any] | None:
    """The error status the API answers a request with for its media, or None.

    ``size`` is the request's size in bytes; ``file_alive(id)`` says whether the Files API
    holds that file and it has not expired."""
    if size > REQUEST_LIMIT:
        return _status(
            400,
            "INVALID_ARGUMENT",
            f"Request payload size exceeds the limit: {REQUEST_LIMIT} bytes.",
        )
    for part in parts_of(request):
        if part["data"] is not None:
            if not part["mime"]:
                return _status(400, "INVALID_ARGUMENT", "Inline data needs a mime type.")
            try:
                decode_b64(str(part["data"]))
            except (binascii.Error, ValueError):
                return _status(
                    400, "INVALID_ARGUMENT", "Invalid value at 'inline_data.data': not base64."
                )
        elif part["uri"] is not None:
            found = _FILE_URI.search(str(part["uri"]))
            if found and "/files/" in str(part["uri"]) and not file_alive(found.group("id")):
                return _status(
                    403,
                    "PERMISSION_DENIED",
                    f"You do not have permission to access the File {found.group('id')} or"
                    " it may not exist.",
                )
    return None


def decode_b64(data: str) -> bytes:
    """Bytes of a JSON ``bytes`` field: standard or URL-safe base64, padded or not, as the
    proto3 JSON mapping accepts (https://protobuf.dev/programming-guides/json/; the SDK's
    ``_common.py`` encodes bytes with ``base64.urlsafe_b64encode``)."""
    if not re.fullmatch(r"[A-Za-z0-9+/_-]*={0,2}", data):
        raise ValueError("not base64")
    data = data.rstrip("=").replace("-", "+").replace("_", "/")
    return base64.b64decode(data + "=" * (-len(data) % 4), validate=True)


def modality_of(mime: Any) -> str:
    major = str(mime or "").partition("/")[0]
    return major if major in ("image", "audio", "video") else "document"


def media_tokens(request: Any, file_size: Callable[[str], int]) -> dict[str, int]:
    """Prompt tokens of the request's media by modality (``IMAGE``, ``AUDIO``, ``VIDEO``,
    ``DOCUMENT``, as ``promptTokensDetails`` names them)."""
    out: dict[str, int] = {}
    for part in parts_of(request):
        if part["data"] is not None:
            size = len(str(part["data"]).rstrip("=")) * 3 // 4
        else:
            found = _FILE_URI.search(str(part["uri"] or ""))
            size = file_size(found.group("id")) if found else 0
        kind = modality_of(part["mime"])
        if kind == "image":
            tokens = 258
        elif kind == "audio":
            tokens = 32 * max(1, size // _AUDIO_BYTES_S)
        elif kind == "video":
            tokens = 263 * max(1, size // _VIDEO_BYTES_S)
        else:
            tokens = 258 * max(1, size // _DOC_BYTES_PAGE)
        out[kind.upper()] = out.get(kind.upper(), 0) + tokens
    return out
